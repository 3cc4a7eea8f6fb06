"""The qwen2 GGUF -> Hugging Face mapping, checked against transformers' own GGUF loader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shiptwo.errors import FormatError
from shiptwo.ggml import GgufFile, open_gguf
from shiptwo.ggml.qwen2 import GGUF_TO_HF, gguf_name, hf_config_from_gguf, hf_name, iter_hf_tensors

gguf = pytest.importorskip("gguf")

TINY = {"hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 96, "blocks": 2, "vocab": 320}


def write_tiny_qwen2(
    path: Path,
    *,
    arch: str = "qwen2",
    drop: tuple[str, ...] = (),
    tied: bool = False,
    extra: dict[str, tuple[int, ...]] | None = None,
    tokens: int | None = None,
) -> Path:
    """A complete tiny qwen2 GGUF (F32 and Q8_0 tensors, random values) written by gguf-py."""
    rng = np.random.default_rng(0)
    h, kv = TINY["hidden"], TINY["hidden"] // TINY["heads"] * TINY["kv_heads"]
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (TINY["vocab"], h), "output_norm.weight": (h,)}
    if not tied:
        shapes["output.weight"] = (TINY["vocab"], h)
    for n in range(TINY["blocks"]):
        shapes.update(
            {
                f"blk.{n}.attn_norm.weight": (h,),
                f"blk.{n}.ffn_norm.weight": (h,),
                f"blk.{n}.attn_q.weight": (h, h),
                f"blk.{n}.attn_q.bias": (h,),
                f"blk.{n}.attn_k.weight": (kv, h),
                f"blk.{n}.attn_k.bias": (kv,),
                f"blk.{n}.attn_v.weight": (kv, h),
                f"blk.{n}.attn_v.bias": (kv,),
                f"blk.{n}.attn_output.weight": (h, h),
                f"blk.{n}.ffn_gate.weight": (TINY["ffn"], h),
                f"blk.{n}.ffn_up.weight": (TINY["ffn"], h),
                f"blk.{n}.ffn_down.weight": (h, TINY["ffn"]),
            }
        )
    shapes.update(extra or {})
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(TINY["blocks"])
    w.add_context_length(256)
    w.add_embedding_length(h)
    w.add_feed_forward_length(TINY["ffn"])
    w.add_head_count(TINY["heads"])
    w.add_head_count_kv(TINY["kv_heads"])
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(tokens or TINY["vocab"])])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for name, shape in shapes.items():
        if name in drop:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 2 and "token_embd" not in name:  # a quantized matrix, as in real files
            w.add_tensor(
                name,
                gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Callable[..., Path]:
    return lambda **kw: write_tiny_qwen2(tmp_path / "tiny.gguf", **kw)


def test_name_table() -> None:
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("blk.17.attn_q.bias") == "model.layers.17.self_attn.q_proj.bias"
    assert hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    for pattern in GGUF_TO_HF:
        name = pattern.format(n=3)
        assert gguf_name(hf_name(name)) == name
    for bad in ("blk.0.attn_qkv.weight", "blk.01.attn_q.weight", "rope_freqs.weight", "blk.x.attn_q.bias"):
        with pytest.raises(
            FormatError, match=rf"^GGUF tensor '{bad}' is not part of a qwen2 model \(known: "
        ):
            hf_name(bad)


@pytest.mark.slow
def test_names_agree_with_transformers_loader(qwen_gguf: GgufFile) -> None:
    """transformers' GGUF->HF name map for a Qwen2 built on the meta device equals our table."""
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**hf_config_from_gguf(qwen_gguf)))
    theirs = get_gguf_hf_weights_map(model, TensorProcessor())
    ours = dict(iter_hf_tensors(qwen_gguf))
    assert {t.name: hf for hf, t in ours.items()} == theirs
    # transformers reverse-permutes Q/K only for llama: qwen2 tensors are stored unpermuted.
    assert "qwen2" not in TENSOR_PROCESSORS and "llama" in TENSOR_PROCESSORS


@pytest.mark.slow
def test_config_agrees_with_transformers(qwen_gguf_path: Path, qwen_gguf: GgufFile) -> None:
    import transformers

    theirs = transformers.AutoConfig.from_pretrained(
        str(qwen_gguf_path.parent), gguf_file=qwen_gguf_path.name
    )
    ours = hf_config_from_gguf(qwen_gguf)
    for key in (
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "vocab_size",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "tie_word_embeddings",
        "hidden_act",
        "use_sliding_window",
    ):
        assert ours[key] == getattr(theirs, key), key
    # transformers keeps the float32 bits as a double (9.99999997e-07); we write the shortest
    # decimal of the same float32 (1e-06, what the upstream config.json says).
    assert ours["rms_norm_eps"] == 1e-06 and np.float32(ours["rms_norm_eps"]) == np.float32(
        theirs.rms_norm_eps
    )
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"] == 1_000_000.0
    assert ours["architectures"] == ["Qwen2ForCausalLM"]
    assert ours["tie_word_embeddings"] is False  # this file stores output.weight (Q8_0) beside token_embd


def test_real_file_maps_completely(qwen_gguf: GgufFile) -> None:
    pairs = list(iter_hf_tensors(qwen_gguf))
    assert [t.name for _, t in pairs] == list(qwen_gguf.tensors)
    hf = dict(pairs)
    assert len(hf) == 291 == 3 + 24 * 12
    assert hf["lm_head.weight"].shape == hf["model.embed_tokens.weight"].shape == (151_936, 896)
    assert hf["model.layers.0.self_attn.k_proj.weight"].shape == (128, 896)
    assert hf["model.layers.23.mlp.down_proj.weight"].shape == (896, 4864)


def test_tiny_model_equals_transformers_load(tiny: Callable[..., Path]) -> None:
    """transformers' GGUF checkpoint loader (names, dequantization, any Q/K un-permuting) gives
    every tensor of a tiny qwen2 file equal to ours, bit for bit."""
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = tiny()
    with open_gguf(path) as g, torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**hf_config_from_gguf(g)))
    state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    with open_gguf(path) as g:
        ours = {hf: g.dequantize(t.name) for hf, t in iter_hf_tensors(g)}
        assert hf_config_from_gguf(g)["tie_word_embeddings"] is False
    assert set(ours) == set(state)
    for name, tensor in ours.items():
        assert torch.equal(tensor, state[name]), name


def test_tied_when_output_weight_is_absent(tiny: Callable[..., Path]) -> None:
    with open_gguf(tiny(tied=True)) as g:
        config = hf_config_from_gguf(g)
        names = [hf for hf, _ in iter_hf_tensors(g)]
        assert config["tie_word_embeddings"] is True and "lm_head.weight" not in names
        # From bare metadata only the tensors could say: the key is left out, the rest agrees.
        bare = hf_config_from_gguf(g.metadata)
    assert "tie_word_embeddings" not in bare
    assert bare == {k: v for k, v in config.items() if k != "tie_word_embeddings"}


def test_refusals(tiny: Callable[..., Path]) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"arch": "llama"},
            "general.architecture is 'llama'; shiptwo maps only 'qwen2' GGUFs to Qwen2ForCausalLM",
        ),
        (
            {"drop": ("blk.1.attn_k.bias", "output_norm.weight")},
            "tensors missing for a complete qwen2 model: blk.1.attn_k.bias, output_norm.weight",
        ),
        (
            {"extra": {"blk.2.attn_norm.weight": (64,)}},
            "tensor 'blk.2.attn_norm.weight' is beyond the 2 blocks of the config",
        ),
        (
            {"extra": {"blk.0.attn_k.bias": (64,)}},
            "tensor 'blk.0.attn_k.bias' has shape [64], the config implies [32]",
        ),
        (
            {"extra": {"blk.0.attn_qkv.weight": (64, 64)}},
            "GGUF tensor 'blk.0.attn_qkv.weight' is not part of a qwen2 model",
        ),
        ({"tokens": 300}, "the vocab sizes disagree (token_embd.weight rows 320, tokenizer.ggml.tokens 300)"),
    ]
    for kwargs, message in cases:
        path = tiny(**kwargs)
        with open_gguf(path) as g, pytest.raises(FormatError) as exc:
            list(iter_hf_tensors(g))
        assert message in str(exc.value), (kwargs, str(exc.value))
        assert "\n" not in str(exc.value)
        path.unlink()


def test_bad_config_values() -> None:
    base = {
        "general.architecture": "qwen2",
        "qwen2.embedding_length": 64,
        "qwen2.attention.head_count": 4,
        "qwen2.feed_forward_length": 96,
        "qwen2.block_count": 2,
        "tokenizer.ggml.tokens": ["a"] * 10,
        "general.name": "m",
    }
    assert hf_config_from_gguf(base)["num_key_value_heads"] == 4
    cases = [
        ({"qwen2.block_count": None}, "m: metadata 'qwen2.block_count' is missing; a qwen2 GGUF needs it"),
        ({"qwen2.block_count": 0}, "m: metadata 'qwen2.block_count' is 0, expected a positive integer"),
        (
            {"qwen2.attention.head_count_kv": 3},
            "m: embedding_length 64, head_count 4, head_count_kv 3: "
            "heads must divide the width and kv heads must",
        ),
        (
            {"qwen2.attention.key_length": 32},
            "m: metadata 'qwen2.attention.key_length' is 32, not embedding_length/head_count = 16",
        ),
        (
            {"tokenizer.ggml.eos_token_id": 10},
            "m: metadata 'tokenizer.ggml.eos_token_id' is 10, outside the vocab of 10",
        ),
        (
            {"tokenizer.ggml.tokens": None},
            "m: no vocab size: neither token_embd.weight nor tokenizer.ggml.tokens",
        ),
    ]
    for change, message in cases:
        metadata = {k: v for k, v in {**base, **change}.items() if v is not None}
        with pytest.raises(FormatError) as exc:
            hf_config_from_gguf(metadata)
        assert str(exc.value).startswith(message), str(exc.value)
