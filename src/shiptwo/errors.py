"""The exception hierarchy: one root, a few subclasses a caller may want to tell apart."""

from __future__ import annotations


class ShiptwoError(Exception):
    """Root of every error shiptwo raises on purpose; its message is meant for a person."""


class UsageError(ShiptwoError):
    """The command line or an option was wrong (exit code 2)."""


class ContractError(ShiptwoError):
    """A contract file could not be read or understood."""


class EvidenceError(ShiptwoError):
    """A run record could not be read or written."""


class FormatError(ShiptwoError):
    """A file on disk (vocab, shard, APR model) does not match its declared format."""


class ModelError(ShiptwoError):
    """A model could not be built or loaded from a checkpoint."""


class GateError(ShiptwoError):
    """A training gate fired: the run is aborted because a number left its allowed range."""
