"""Contracts in: parsing, the schema, rules and validation. No torch, no tokenizers.

The names below resolve on first use: importing `contract.model` or `contract.testrefs` must not
pay for the YAML and JSON Schema machinery (the plugin's parts use them, the summary of a pytest
session reads statuses), which only validating contracts needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Finding": "shiptwo.harness.contract.findings",
    "Contract": "shiptwo.harness.contract.model",
    "Control": "shiptwo.harness.contract.model",
    "Falsifier": "shiptwo.harness.contract.model",
    "Measurement": "shiptwo.harness.contract.model",
    "Obligation": "shiptwo.harness.contract.model",
    "Range": "shiptwo.harness.contract.model",
    "ValidationResult": "shiptwo.harness.contract.validate",
    "validate_paths": "shiptwo.harness.contract.validate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shiptwo.harness.contract' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
