"""What a parse of an APR v2 file learns, decoding no tensor data: the header, the index, the file.

Frozen records, filled in by `shiptwo.apr.reader.parse` and read by everything after it (decoding,
`inspect`, `diff`, the model loader).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shiptwo.apr.constants import COMPRESSION_FLAGS, EMBED, LM_HEAD, DType, flag_names


@dataclass(frozen=True)
class Header:
    """The 64-byte header, as stored."""

    magic: bytes
    version: tuple[int, int]
    flags: int
    tensor_count: int
    metadata_offset: int
    metadata_size: int
    tensor_index_offset: int
    data_offset: int
    checksum: int
    reserved: bytes

    @property
    def flag_names(self) -> list[str]:
        return flag_names(self.flags)


@dataclass(frozen=True)
class TensorInfo:
    """One index entry; `start` is the absolute file offset of its bytes."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    offset: int
    size: int
    start: int

    def __init__(self, name: str, dtype: DType, shape: tuple[int, ...], offset: int, size: int, start: int):
        # One per tensor on every open: the generated frozen __init__ sets each field through
        # object.__setattr__ (about 2 us a record, most of an index entry's parse); one dict
        # update is a third of that. Still frozen: assignment raises, `dataclasses.replace` works.
        self.__dict__.update(name=name, dtype=dtype, shape=shape, offset=offset, size=size, start=start)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_placeholder(self) -> bool:
        """True for aprender's 0-byte stand-in of a tensor that has elements (a tied lm_head)."""
        return self.size == 0 and self.numel > 0


# One index entry as the parser leaves it: name, dtype, shape, offset, size, start (TensorInfo's fields).
IndexRow = tuple[str, DType, tuple[int, ...], int, int, int]


@dataclass(frozen=True)
class AprInfo:
    """Everything a parse learns about a file without decoding tensor data.

    The parser checks every index entry but keeps each as a plain row: an open that only lists
    names (or reads a few tensors) never builds a record per tensor, which cost more than the
    parse itself. `tensors` builds them all on first use.
    """

    path: str
    file_size: int
    header: Header
    header_checksum_computed: int
    metadata: dict[str, Any]
    index: tuple[IndexRow, ...] = field(repr=False)
    footer_checksum: int
    footer_checksum_computed: int | None = None  # None: not verified (lazy open)

    @cached_property
    def tensors(self) -> tuple[TensorInfo, ...]:
        """Every index entry, in index (sorted) order."""
        return tuple(TensorInfo(*row) for row in self.index)

    @cached_property
    def _rows_by_name(self) -> dict[str, IndexRow]:
        return {row[0]: row for row in self.index}

    def tensor(self, name: str) -> TensorInfo:
        """The index entry called `name`; KeyError names the file when there is none."""
        try:
            row = self._rows_by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None
        return TensorInfo(*row)

    @property
    def names(self) -> list[str]:
        return [row[0] for row in self.index]

    @property
    def placeholders(self) -> list[str]:
        """Tensors stored as 0-byte placeholders (left out by `load_file`)."""
        return [t.name for t in self.tensors if t.is_placeholder]

    @property
    def lm_head_tied(self) -> bool:
        """True when lm_head.weight is absent or a 0-byte placeholder but an embedding exists.

        The format has no tie pointer; the model loader fills lm_head from the embedding.
        """
        if EMBED not in self._rows_by_name:
            return False
        head = self._rows_by_name.get(LM_HEAD)
        return head is None or TensorInfo(*head).is_placeholder

    @property
    def notes(self) -> list[str]:
        """Facts worth telling a reader of `inspect` that are not errors (aprender quirks)."""
        return [
            f"{name} flag set but payload uncompressed (aprender writer quirk)"
            for name in flag_names(self.header.flags & COMPRESSION_FLAGS)
        ]
