"""Tiny GGUF files for tests, written by the `gguf` package: an independent writer, so a reader
bug and a writer bug cannot agree. `gguf` is a test dependency (the `test` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, FFN, HEADS, KV_HEADS = 32, 64, 4, 2


def _byte_tokens() -> list[str]:
    from shiptwo.tokenize import bytes_to_unicode

    return [bytes_to_unicode()[b] for b in range(256)]


def tiny_qwen2_gguf(path: Path, *, architecture: str = "qwen2") -> None:
    """A 1-layer qwen2 GGUF with a byte-level vocab, F32/F16 tensors and one Q8_0 tensor."""
    import gguf

    rng = np.random.default_rng(0)
    tokens = [*_byte_tokens(), "Ġt", "<|endoftext|>"]
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 257 + [3])
    w.add_token_merges(["Ġ t"])
    w.add_eos_token_id(257)
    w.add_bos_token_id(257)
    head_dim = HIDDEN // HEADS
    shapes = {
        "token_embd.weight": (len(tokens), HIDDEN),
        "blk.0.attn_norm.weight": (HIDDEN,),
        "blk.0.attn_q.weight": (HIDDEN, HIDDEN),
        "blk.0.attn_q.bias": (HIDDEN,),
        "blk.0.attn_k.weight": (KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_k.bias": (KV_HEADS * head_dim,),
        "blk.0.attn_v.weight": (KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_v.bias": (KV_HEADS * head_dim,),
        "blk.0.attn_output.weight": (HIDDEN, HIDDEN),
        "blk.0.ffn_norm.weight": (HIDDEN,),
        "blk.0.ffn_gate.weight": (FFN, HIDDEN),
        "blk.0.ffn_up.weight": (FFN, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, FFN),
        "output_norm.weight": (HIDDEN,),
    }
    for name, shape in shapes.items():
        values = (
            1.0 + 0.1 * rng.standard_normal(shape) if "norm" in name else 0.2 * rng.standard_normal(shape)
        )
        values = values.astype(np.float32)
        if name == "blk.0.ffn_up.weight":  # a GGML block type: exercises our dequantizer
            q = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif name == "blk.0.attn_output.weight":
            w.add_tensor(name, values.astype(np.float16))
        else:
            w.add_tensor(name, values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
