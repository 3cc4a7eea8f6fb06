"""Pre-tokenized corpus shards (pretokenize-bin-v1, docs/pretokenize-bin-v1.md): read and write.

Public API: `load_manifest(dir)` (the manifest, every problem found at once), `ShardReader(dir,
seq_len=T)` (windows of T + 1 ids over a set) and `ArrayWindows` (the same over one array).
`format` holds the format's facts, `reader` and `writer` sit side by side; `shiptwo tokenize
encode-corpus` drives the writer. Importing this package is cheap: numpy loads with the reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shiptwo.shards.reader import ArrayWindows, ShardReader, load_manifest

_READER_NAMES = ("ArrayWindows", "ShardReader", "load_manifest")


def __getattr__(name: str) -> object:
    if name not in _READER_NAMES:
        raise AttributeError(f"module 'shiptwo.shards' has no attribute {name!r}")
    from shiptwo.shards import reader

    return getattr(reader, name)


__all__ = ["ArrayWindows", "ShardReader", "load_manifest"]
