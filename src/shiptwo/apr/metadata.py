"""What an import writes besides the tensors: APR metadata from a Hugging Face config, and the report.

`HF_TO_APR` is the one table of the architecture numbers' names in config.json and in APR metadata;
`shiptwo.qwen2.config` reads and writes both through it.

Shared by the safetensors import (`shiptwo.apr.convert`) and the GGUF import
(`shiptwo.apr.gguf_import`), which both start from a config.json dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# An architecture number's name in a Hugging Face config.json -> its name in APR metadata (aprender's),
# which is also the `shiptwo.qwen2.Qwen2Config` field that holds it. The one table of these names.
HF_TO_APR: dict[str, str] = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tied_embeddings",
}
APR_TO_HF: dict[str, str] = {apr: hf for hf, apr in HF_TO_APR.items()}
# APR metadata `rope_type`: 0 = adjacent pairs, 2 = NEOX halves (the only one Qwen2 uses).
ROPE_TYPE_NEOX = 2
# Model families whose Hugging Face weights use NEOX-style (split-halves) RoPE.
_NEOX_ROPE = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}
# transformers' config-class default rope_theta, used when config.json names none (checked for 5.x).
HF_DEFAULT_ROPE_THETA = {"qwen2": 10_000.0, "qwen2_moe": 10_000.0, "qwen3": 10_000.0, "qwen3_moe": 10_000.0}


def metadata_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """APR metadata fields (aprender's names and types) from a Hugging Face config.json."""
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config

    def number(name: str, default: Any = None) -> Any:
        """The value of APR field `name`, read under its Hugging Face name."""
        return text.get(APR_TO_HF[name], default)

    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    heads = number("num_heads")
    hidden = number("hidden_size")
    head_dim = number("head_dim") or (hidden // heads if hidden and heads else None)
    rope_theta = number("rope_theta", rope.get("rope_theta") if isinstance(rope, dict) else None)
    if rope_theta is None:
        # An HF dir that names no theta means transformers' default; APR has none, so write it out.
        rope_theta = HF_DEFAULT_ROPE_THETA.get(model_type)
    archs = config.get("architectures") or []
    meta: dict[str, Any] = {
        "model_type": model_type,
        "architecture": model_type or None,
        "hidden_size": hidden,
        "num_layers": number("num_layers"),
        "num_heads": heads,
        "num_kv_heads": number("num_kv_heads", heads),
        "vocab_size": number("vocab_size"),
        "intermediate_size": number("intermediate_size"),
        "max_position_embeddings": number("max_position_embeddings"),
        "rope_theta": float(rope_theta) if rope_theta is not None else None,
        "rope_type": ROPE_TYPE_NEOX if model_type in _NEOX_ROPE else None,
        "rms_norm_eps": number("rms_norm_eps"),
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
