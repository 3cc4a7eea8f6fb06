"""What an import writes besides the tensors: APR metadata from a Hugging Face config, and the report.

Shared by the safetensors import (`shiptwo.apr.convert`) and the GGUF import
(`shiptwo.apr.gguf_import`), which both start from a config.json dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Model families whose Hugging Face weights use NEOX-style (split-halves) RoPE, aprender's rope_type 2.
_NEOX_ROPE = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}
# transformers' config-class default rope_theta, used when config.json names none (checked for 5.x).
_HF_DEFAULT_ROPE_THETA = {"qwen2": 10_000.0, "qwen2_moe": 10_000.0, "qwen3": 10_000.0, "qwen3_moe": 10_000.0}


def metadata_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """APR metadata fields (aprender's names and types) from a Hugging Face config.json."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    heads = text.get("num_attention_heads")
    hidden = text.get("hidden_size")
    head_dim = text.get("head_dim") or (hidden // heads if hidden and heads else None)
    rope_theta = text.get("rope_theta", rope.get("rope_theta") if isinstance(rope, dict) else None)
    if rope_theta is None:
        # An HF dir that names no theta means transformers' default; APR has none, so write it out.
        rope_theta = _HF_DEFAULT_ROPE_THETA.get(model_type)
    archs = config.get("architectures") or []
    meta: dict[str, Any] = {
        "model_type": model_type,
        "architecture": model_type or None,
        "hidden_size": hidden,
        "num_layers": text.get("num_hidden_layers"),
        "num_heads": heads,
        "num_kv_heads": text.get("num_key_value_heads", heads),
        "vocab_size": text.get("vocab_size"),
        "intermediate_size": text.get("intermediate_size"),
        "max_position_embeddings": text.get("max_position_embeddings"),
        "rope_theta": float(rope_theta) if rope_theta is not None else None,
        "rope_type": 2 if model_type in _NEOX_ROPE else None,
        "rms_norm_eps": text.get("rms_norm_eps"),
        "head_dim": head_dim,
        "hf_architecture": archs[0] if archs else None,
        "hf_model_type": config.get("model_type"),
    }
    return {k: v for k, v in meta.items() if v is not None}


@dataclass(frozen=True)
class ImportReport:
    """What `import_model` wrote."""

    out: str
    tensors: int
    bytes: int
    tied_embeddings: bool
    dtypes: dict[str, int]


def numel(shape: tuple[int, ...]) -> int:
    """The number of elements of a shape."""
    n = 1
    for d in shape:
        n *= d
    return n
