"""A qwen2 GGUF as a Hugging Face Qwen2ForCausalLM: the name table, the config, the tensors.

llama.cpp's converter renames Qwen2's tensors and moves its config into `qwen2.*` metadata; it
does not reorder any weight. Unlike llama, whose Q/K rows llama.cpp permutes for its RoPE
kernel, qwen2 is written unpermuted (transformers' GGUF loader has a reverse-permute processor
for llama and none for qwen2), so every tensor maps by name alone. Shapes are row-major, as
`GgufTensor.shape` gives them, which is torch's [out_features, in_features].
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from shiptwo.errors import FormatError
from shiptwo.ggml.reader import GgufFile, GgufTensor

ARCHITECTURE = "qwen2"
EMBED = "token_embd.weight"
OUTPUT = "output.weight"

# GGUF tensor name -> Hugging Face name; `{n}` is the block index. The reverse is derived below.
GGUF_TO_HF: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "blk.{n}.attn_norm.weight": "model.layers.{n}.input_layernorm.weight",
    "blk.{n}.attn_q.weight": "model.layers.{n}.self_attn.q_proj.weight",
    "blk.{n}.attn_q.bias": "model.layers.{n}.self_attn.q_proj.bias",
    "blk.{n}.attn_k.weight": "model.layers.{n}.self_attn.k_proj.weight",
    "blk.{n}.attn_k.bias": "model.layers.{n}.self_attn.k_proj.bias",
    "blk.{n}.attn_v.weight": "model.layers.{n}.self_attn.v_proj.weight",
    "blk.{n}.attn_v.bias": "model.layers.{n}.self_attn.v_proj.bias",
    "blk.{n}.attn_output.weight": "model.layers.{n}.self_attn.o_proj.weight",
    "blk.{n}.ffn_norm.weight": "model.layers.{n}.post_attention_layernorm.weight",
    "blk.{n}.ffn_gate.weight": "model.layers.{n}.mlp.gate_proj.weight",
    "blk.{n}.ffn_up.weight": "model.layers.{n}.mlp.up_proj.weight",
    "blk.{n}.ffn_down.weight": "model.layers.{n}.mlp.down_proj.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
HF_TO_GGUF: dict[str, str] = {hf: gguf for gguf, hf in GGUF_TO_HF.items()}
OPTIONAL = frozenset({OUTPUT})  # absent: the head is tied to the embedding

_BLOCK = re.compile(r"blk\.(0|[1-9][0-9]*)\.(.+)")
_LAYER = re.compile(r"model\.layers\.(0|[1-9][0-9]*)\.(.+)")


def hf_name(gguf_name: str) -> str:
    """The Hugging Face name of a qwen2 GGUF tensor; FormatError for a name not in the table."""
    m = _BLOCK.fullmatch(gguf_name)
    key = f"blk.{{n}}.{m.group(2)}" if m else gguf_name
    hf = GGUF_TO_HF.get(key)
    if hf is None:
        known = ", ".join(GGUF_TO_HF)
        raise FormatError(f"GGUF tensor {gguf_name!r} is not part of a qwen2 model (known: {known})")
    return hf.format(n=m.group(1)) if m else hf


def gguf_name(hf: str) -> str:
    """The GGUF name of a Hugging Face Qwen2 tensor (the reverse of `hf_name`)."""
    m = _LAYER.fullmatch(hf)
    key = f"model.layers.{{n}}.{m.group(2)}" if m else hf
    name = HF_TO_GGUF.get(key)
    if name is None:
        raise FormatError(f"{hf!r} is not a Qwen2ForCausalLM tensor name")
    return name.format(n=m.group(1)) if m else name


def _source(metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("general.name") or "GGUF")


def check_architecture(metadata: Mapping[str, Any], *, source: str | None = None) -> None:
    """Refuse a GGUF whose general.architecture is not qwen2."""
    arch = metadata.get("general.architecture")
    if arch != ARCHITECTURE:
        raise FormatError(
            f"{source or _source(metadata)}: general.architecture is {arch!r}; shiptwo maps only "
            f"{ARCHITECTURE!r} GGUFs to Qwen2ForCausalLM"
        )


def _int(metadata: Mapping[str, Any], key: str, source: str, default: int | None = None) -> int:
    value = metadata.get(key, default)
    if value is None:
        raise FormatError(f"{source}: metadata {key!r} is missing; a qwen2 GGUF needs it")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FormatError(f"{source}: metadata {key!r} is {value!r}, expected a positive integer")
    return value


def _f32(metadata: Mapping[str, Any], key: str, source: str, default: float) -> float:
    """A FLOAT32 value as the shortest decimal that rounds to the same float32 (1e-06, not 9.99e-07)."""
    value = metadata.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"{source}: metadata {key!r} is {value!r}, expected a number")
    return float(str(np.float32(value)))


def hf_config_from_gguf(gguf: GgufFile | Mapping[str, Any]) -> dict[str, Any]:
    """A transformers Qwen2 config.json dict from a qwen2 GGUF.

    Pass the GgufFile: `tie_word_embeddings` (no output.weight) and the embedding rows come from
    its tensors. From bare metadata the vocab size comes from the token list and
    `tie_word_embeddings` is left out, because only the tensor list can say.
    """
    metadata = gguf.metadata if isinstance(gguf, GgufFile) else gguf
    source = str(gguf.path) if isinstance(gguf, GgufFile) else _source(metadata)
    check_architecture(metadata, source=source)
    p = f"{ARCHITECTURE}."
    hidden = _int(metadata, p + "embedding_length", source)
    heads = _int(metadata, p + "attention.head_count", source)
    kv_heads = _int(metadata, p + "attention.head_count_kv", source, default=heads)
    if hidden % heads or heads % kv_heads:
        raise FormatError(
            f"{source}: embedding_length {hidden}, head_count {heads}, head_count_kv {kv_heads}: "
            "heads must divide the width and kv heads must divide the heads"
        )
    for key in ("attention.key_length", "attention.value_length"):
        if metadata.get(p + key, hidden // heads) != hidden // heads:
            raise FormatError(
                f"{source}: metadata {p + key!r} is {metadata[p + key]}, not embedding_length/head_count "
                f"= {hidden // heads}; Qwen2ForCausalLM cannot hold that head size"
            )
    config: dict[str, Any] = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": _int(metadata, p + "feed_forward_length", source),
        "num_hidden_layers": _int(metadata, p + "block_count", source),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": _f32(metadata, p + "attention.layer_norm_rms_epsilon", source, 1e-6),
        "rope_theta": _f32(metadata, p + "rope.freq_base", source, 10_000.0),
        "max_position_embeddings": _int(metadata, p + "context_length", source, default=32_768),
        "vocab_size": _vocab_size(gguf, metadata, source),
        "use_sliding_window": False,
        "torch_dtype": "float32",  # what `GgufFile.dequantize` gives
    }
    scaling = metadata.get(p + "rope.scaling.type")
    if scaling not in (None, "none"):
        config["rope_scaling"] = {
            "rope_type": scaling,
            "factor": _f32(metadata, p + "rope.scaling.factor", source, 1.0),
            "original_max_position_embeddings": _int(
                metadata,
                p + "rope.scaling.original_context_length",
                source,
                default=config["max_position_embeddings"],
            ),
        }
    for hf_key, gguf_key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "padding_token_id"),
    ):
        token_id = metadata.get(f"tokenizer.ggml.{gguf_key}")
        if token_id is not None:
            if not isinstance(token_id, int) or not 0 <= token_id < config["vocab_size"]:
                raise FormatError(
                    f"{source}: metadata 'tokenizer.ggml.{gguf_key}' is {token_id!r}, outside the vocab of "
                    f"{config['vocab_size']}"
                )
            config[hf_key] = token_id
    if isinstance(gguf, GgufFile):
        config["tie_word_embeddings"] = OUTPUT not in gguf.tensors
    return config


def _vocab_size(gguf: GgufFile | Mapping[str, Any], metadata: Mapping[str, Any], source: str) -> int:
    tokens = metadata.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens) if isinstance(tokens, list) else None
    declared = metadata.get(f"{ARCHITECTURE}.vocab_size")
    rows = None
    if isinstance(gguf, GgufFile) and EMBED in gguf.tensors:
        shape = gguf.tensors[EMBED].shape
        rows = shape[0] if len(shape) == 2 else None
    found = {f"{EMBED} rows": rows, "tokenizer.ggml.tokens": n_tokens, f"{ARCHITECTURE}.vocab_size": declared}
    known = {k: v for k, v in found.items() if v is not None}
    if not known:
        raise FormatError(f"{source}: no vocab size: neither {EMBED} nor tokenizer.ggml.tokens is present")
    if len(set(known.values())) > 1:
        said = ", ".join(f"{k} {v}" for k, v in known.items())
        raise FormatError(f"{source}: the vocab sizes disagree ({said}); the file is inconsistent")
    size = next(iter(known.values()))
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise FormatError(f"{source}: vocab size {size!r} is not a positive integer")
    return size


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every Qwen2ForCausalLM tensor's shape for a config (lm_head included)."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    per_layer = {
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.q_proj.bias": (hidden,),
        "self_attn.k_proj.weight": (kv, hidden),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, hidden),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
    }
    shapes = {
        "model.embed_tokens.weight": (config["vocab_size"], hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (config["vocab_size"], hidden),
    }
    for n in range(config["num_hidden_layers"]):
        shapes.update({f"model.layers.{n}.{k}": v for k, v in per_layer.items()})
    return shapes


def iter_hf_tensors(gguf: GgufFile) -> Iterator[tuple[str, GgufTensor]]:
    """(Hugging Face name, tensor) for every tensor of a qwen2 GGUF, in file order.

    Checked before the first item: the architecture, that every name is in the table, that every
    Qwen2 tensor is present (output.weight may be absent: tied) and that each shape fits the
    config. Dequantize with `gguf.dequantize(tensor.name)`, or copy `gguf.raw(tensor.name)`.
    """
    config = hf_config_from_gguf(gguf)
    blocks = config["num_hidden_layers"]
    if blocks > len(gguf.tensors):  # each block holds 12 tensors: bound the table before building it
        raise FormatError(
            f"{gguf.path}: metadata '{ARCHITECTURE}.block_count' is {blocks}, but the file holds "
            f"{len(gguf.tensors)} tensors; tensors missing for a complete qwen2 model"
        )
    expected = expected_shapes(config)
    try:
        pairs = [(hf_name(name), t) for name, t in gguf.tensors.items()]
    except FormatError as exc:  # hf_name knows no file: say which one
        raise FormatError(f"{gguf.path}: {exc}") from None
    for hf, t in pairs:
        want = expected.get(hf)
        if want is None:
            blocks = config["num_hidden_layers"]
            raise FormatError(f"{gguf.path}: tensor {t.name!r} is beyond the {blocks} blocks of the config")
        if t.shape != want:
            raise FormatError(
                f"{gguf.path}: tensor {t.name!r} has shape {list(t.shape)}, the config implies {list(want)}"
            )
    missing = sorted(set(expected) - {hf for hf, _ in pairs} - {GGUF_TO_HF[o] for o in OPTIONAL})
    if missing:
        shown = ", ".join(gguf_name(m) for m in missing[:5])
        if len(missing) > 5:
            shown += f" and {len(missing) - 5} more"
        raise FormatError(f"{gguf.path}: tensors missing for a complete qwen2 model: {shown}")
    yield from pairs
