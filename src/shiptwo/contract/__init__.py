"""Contracts: parsing, validation, rules and status write-back. No torch, no tokenizers."""

from shiptwo.contract.findings import Finding
from shiptwo.contract.model import Contract, Control, Falsifier, Measurement, Obligation, Range
from shiptwo.contract.validate import ValidationResult, validate_paths

__all__ = [
    "Contract",
    "Control",
    "Falsifier",
    "Finding",
    "Measurement",
    "Obligation",
    "Range",
    "ValidationResult",
    "validate_paths",
]
