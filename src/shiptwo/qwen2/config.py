"""The architecture numbers of a Qwen2 decoder, read from HF `config.json` or APR metadata.

Torch-free, so that reading a checkpoint's config never pays for torch. Every field is type
checked on the way in; a bad one is refused naming the file, the field and the value. The
fields carry their APR metadata names; `shiptwo.apr.metadata.HF_TO_APR` gives their config.json ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shiptwo import jsonsafe
from shiptwo.apr.metadata import APR_TO_HF, HF_DEFAULT_ROPE_THETA, ROPE_TYPE_NEOX
from shiptwo.errors import ModelError

# No architecture number (vocab, widths, layers, positions) reaches 2**31; tensors are sized by them.
MAX_FIELD_INT = 2**31 - 1
# Fields a config must name; the APR metadata must name rope_theta too (APR defines no default).
_REQUIRED = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")


@dataclass(frozen=True)
class Qwen2Config:
    """The architecture numbers of a Qwen2 decoder (defaults: Qwen2.5-0.5B)."""

    vocab_size: int = 151_936
    hidden_size: int = 896
    num_layers: int = 24
    num_heads: int = 14
    num_kv_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 4_864
    max_position_embeddings: int = 32_768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tied_embeddings: bool = True

    def __post_init__(self) -> None:
        problems = [
            f"{k}={v}"
            for k, v in asdict(self).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v <= 0
        ]
        if problems:
            raise ModelError(f"Qwen2 config: {', '.join(problems)} must be positive")
        if self.num_heads % self.num_kv_heads:
            raise ModelError(
                f"Qwen2 config: num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}; fix the config"
            )
        if self.head_dim % 2:
            raise ModelError(f"Qwen2 config: head_dim={self.head_dim} must be even for RoPE")

    @classmethod
    def from_hf(cls, cfg: Any, *, source: str = "config.json") -> Qwen2Config:
        """Build from a Hugging Face `config.json` dict (transformers 4.x or 5.x spelling).

        Absent optional fields take transformers' Qwen2Config defaults (rope_theta 10000.0,
        max_position_embeddings 32768, rms_norm_eps 1e-6); a field of the wrong type is a
        ModelError naming the file, the field and the value.
        """
        if not isinstance(cfg, Mapping):
            raise ModelError(
                f"{source}: a JSON {_json_type(cfg)}, expected an object of config fields; "
                "fix or re-export config.json"
            )
        missing = [APR_TO_HF[k] for k in _REQUIRED if cfg.get(APR_TO_HF[k]) is None]
        if missing:
            raise ModelError(
                f"{source}: field(s) {', '.join(missing)} missing; a Qwen2 config.json needs them"
            )
        if cfg.get("hidden_act", "silu") != "silu":
            raise ModelError(f"{source}: hidden_act={cfg['hidden_act']!r}; only 'silu' (SwiGLU) is Qwen2")
        if cfg.get("use_sliding_window"):
            raise ModelError(f"{source}: use_sliding_window=true is not supported; set it to false")
        rope_key = "rope_parameters" if cfg.get("rope_parameters") is not None else "rope_scaling"
        rope = cfg.get(rope_key) or {}
        if not isinstance(rope, Mapping):
            raise ModelError(f"{source}: field {rope_key}={rope!r}: expected an object or null")
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ModelError(f"{source}: rope scaling {rope!r} is not supported (only default RoPE)")
        f = _Fields(cfg, source=source, what="field", names=APR_TO_HF)
        # transformers' Qwen2Config default when config.json names no theta (5.x keeps it in rope_parameters).
        theta = (
            f.number("rope_theta")
            if cfg.get("rope_theta") is not None
            else (
                _Fields(rope, source=source, what=f"field {rope_key}.").number("rope_theta")
                if rope.get("rope_theta") is not None
                else HF_DEFAULT_ROPE_THETA["qwen2"]
            )
        )
        return cls._from_fields(f, source=source, rope_theta=theta)

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face `config.json` dict for this architecture."""
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_act": "silu",
            **{APR_TO_HF[name]: value for name, value in asdict(self).items()},
            "use_sliding_window": False,
            "attention_dropout": 0.0,
        }

    @classmethod
    def from_apr_metadata(cls, md: Mapping[str, Any], *, source: str = "model.apr") -> Qwen2Config:
        """Build from APR metadata; `tied_embeddings` may be None when the caller infers it.

        `rope_theta` is required: APR defines no default, and guessing one is how a Qwen2
        (theta 1e6) would silently run with 10,000. A field of the wrong type is a ModelError
        naming the file, the field and the value.
        """
        missing = [k for k in (*_REQUIRED, "rope_theta") if md.get(k) is None]
        if missing:
            raise ModelError(
                f"{source}: metadata lacks {', '.join(missing)} (absent or null); re-export the "
                "model with its architecture fields (APR defines no default for them)"
            )
        rope_type = md.get("rope_type")
        if rope_type is not None and (isinstance(rope_type, bool) or rope_type != ROPE_TYPE_NEOX):
            raise ModelError(
                f"{source}: metadata rope_type={rope_type!r}; Qwen2 needs {ROPE_TYPE_NEOX} "
                "(the integer code of NEOX halves); fix the metadata"
            )
        return cls._from_fields(_Fields(md, source=source, what="metadata"), source=source)

    @classmethod
    def _from_fields(cls, f: _Fields, *, source: str, rope_theta: float | None = None) -> Qwen2Config:
        """The config from typed reads of `f`, field by field (`rope_theta` when already read).

        Absent optional fields take transformers' Qwen2Config defaults, in both sources.
        """
        heads, hidden = f.positive_integer("num_heads"), f.positive_integer("hidden_size")
        return _named(
            source,
            lambda: cls(
                vocab_size=f.integer("vocab_size"),
                hidden_size=hidden,
                num_layers=f.integer("num_layers"),
                num_heads=heads,
                num_kv_heads=f.integer("num_kv_heads", default=heads),
                head_dim=f.integer("head_dim", default=hidden // heads),
                intermediate_size=f.integer("intermediate_size"),
                max_position_embeddings=f.integer("max_position_embeddings", default=32_768),
                rope_theta=f.number("rope_theta") if rope_theta is None else rope_theta,
                rms_norm_eps=f.number("rms_norm_eps", default=1e-6),
                tied_embeddings=f.flag("tied_embeddings", default=False),
            ),
        )

    def to_apr_metadata(self) -> dict[str, Any]:
        """The APR metadata keys aprender reads for a Qwen2 model."""
        return {
            "architecture": "qwen2",
            "hf_architecture": "Qwen2ForCausalLM",
            "hf_model_type": "qwen2",
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "vocab_size": self.vocab_size,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_type": ROPE_TYPE_NEOX,
            "rms_norm_eps": self.rms_norm_eps,
            "head_dim": self.head_dim,
            "tied_embeddings": self.tied_embeddings,
        }


def read_hf_config(path: Path) -> Qwen2Config:
    """The config of a Hugging Face `config.json`, read as untrusted input (`shiptwo.jsonsafe`:
    bounded nesting and integers, UTF-8, unique keys); FormatError or ModelError naming the file."""
    raw = jsonsafe.read_file(path, what="config.json", fix="fix or re-export the config")
    return Qwen2Config.from_hf(raw, source=str(path))


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else type(value).__name__)


class _Fields:
    """Typed reads of a config mapping; a wrong type names the file, the field and the value.

    Fields are asked for by their Qwen2Config names; `names` maps them to the mapping's own keys
    (the identity when absent). A missing or null field takes `default`; without one it is an
    error (callers check presence first).
    """

    def __init__(
        self, data: Mapping[str, Any], *, source: str, what: str, names: Mapping[str, str] | None = None
    ) -> None:
        self.data, self.source, self.what, self.names = data, source, what, names or {}

    def _bad(self, key: str, value: Any, expected: str) -> ModelError:
        sep = "" if self.what.endswith(".") else " "
        return ModelError(
            f"{self.source}: {self.what}{sep}{self.names.get(key, key)}={value!r}: expected {expected}; "
            f"fix the {'metadata' if self.what == 'metadata' else 'config'}"
        )

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(self.names.get(key, key))
        if value is None:
            if default is None:
                raise self._bad(key, value, "a value (it is required)")
            return default
        return value

    def integer(self, key: str, *, default: int | None = None) -> int:
        value = self._get(key, default)
        # JSON writers may spell an integer 896.0; a bool, a string or 896.5 is not one.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise self._bad(key, value, "an integer")
        if abs(value) > MAX_FIELD_INT:  # before anything is sized by it (10**12 ids: terabytes)
            raise self._bad(key, value, f"an integer of at most {MAX_FIELD_INT:,}")
        return int(value)

    def positive_integer(self, key: str) -> int:
        value = self.integer(key)
        if value <= 0:
            raise self._bad(key, value, "a positive integer")
        return value

    def number(self, key: str, *, default: float | None = None) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._bad(key, value, "a finite number")
        return float(value)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.data.get(self.names.get(key, key))
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value


def _named(source: str, build: Callable[[], Qwen2Config]) -> Qwen2Config:
    """Build a config, prefixing any error with the file it came from."""
    try:
        return build()
    except ModelError as exc:
        if str(exc).startswith(f"{source}: "):  # a typed field read already named the file
            raise
        raise ModelError(f"{source}: {exc}") from exc
