"""shiptwo: falsifier-first contract verification for shipping ML models.

The harness core (contracts, status, evidence) imports neither torch nor tokenizers;
the subjects under test (`shiptwo.tokenize`, `shiptwo.apr`, `shiptwo.qwen2.model`) import them
where they are used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from shiptwo.errors import (
    ContractError,
    EvidenceError,
    FormatError,
    GateError,
    ModelError,
    ShiptwoError,
    UsageError,
)

# The subjects under test import torch; they load on first use so that the harness core
# (`shiptwo pv validate`, the pytest plugin) stays light.
_LAZY = {
    "Qwen2": "shiptwo.qwen2.model",
    "Qwen2Config": "shiptwo.qwen2.config",
    "from_pretrained": "shiptwo.qwen2.checkpoint",
    "detect_format": "shiptwo.tokenize",
    "load_tokenizer": "shiptwo.tokenize",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shiptwo' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ContractError",
    "EvidenceError",
    "FormatError",
    "GateError",
    "ModelError",
    "Qwen2",
    "Qwen2Config",
    "ShiptwoError",
    "UsageError",
    "__version__",
    "detect_format",
    "from_pretrained",
    "load_tokenizer",
]
