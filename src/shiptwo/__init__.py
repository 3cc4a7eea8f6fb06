"""shiptwo: falsifier-first contract verification for shipping ML models.

The harness core (contracts, status, evidence) imports neither torch nor tokenizers;
the subjects under test (`shiptwo.tokenize`, `shiptwo.apr`, `shiptwo.model`) import them
where they are used.
"""

from __future__ import annotations

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

__all__ = [
    "ContractError",
    "EvidenceError",
    "FormatError",
    "GateError",
    "ModelError",
    "ShiptwoError",
    "UsageError",
    "__version__",
]
