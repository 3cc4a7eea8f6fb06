"""The facts of pretokenize-bin-v1 (docs/pretokenize-bin-v1.md), written once for reader and writer.

File names, the id dtype, the schema names, the fields a reader needs, the options a set
records, and the record of a bad input line. Standard library only: the CLI reads its defaults
and choices from here without loading numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

SCHEMA = "pretokenize-bin-v1"
PROGRESS_SCHEMA = f"{SCHEMA}/progress"
MANIFEST = "manifest.json"  # written last: its presence means the set is complete
PROGRESS = "progress.json"  # only while a run is unfinished
SHARD_GLOB = "shard-*.bin"
# A shard is a flat array of little-endian unsigned 32-bit ids: no header, no footer, no padding.
DTYPE = "<u4"
ID_BYTES = 4
# The writer's temp names: `.<name>.<random>.tmp` (`shiptwo.fileio.atomic_write_bytes`), and
# `.<shard>.tmp`, the name shards were written under before. Nothing else in an output dir is deleted.
OWN_TEMP = re.compile(
    r"\.shard-\d{5,}\.bin(?:\.[A-Za-z0-9_]+)?\.tmp"
    r"|\.(?:manifest|progress)\.json\.[A-Za-z0-9_]+\.tmp"
)

# encode-corpus's options, as the set records them, and their defaults.
DEFAULT_SHARD_TOKENS = 10_000_000
DEFAULT_MAX_UNK_RATIO = 0.01
MAX_BAD_LINES_LISTED = 100
# The longest JSONL line read (bytes: the document with its JSON quoting and other fields). A
# longer line is a bad line, read past without being held in memory: without a limit, one line of
# a few hundred MB (or a file with no newline at all) takes gigabytes before a tokenizer sees it.
DEFAULT_MAX_DOCUMENT_BYTES = 64 << 20

# What a reader needs of a manifest (aprender's manifests have these and little else).
REQUIRED_FIELDS: dict[str, type] = {
    "schema": str,
    "vocab_size": int,
    "eos_policy": str,
    "shard_count": int,
    "total_tokens": int,
    "total_documents": int,
    "content_field": str,
}


class EosPolicy(StrEnum):
    """Where the EOS id goes: before every document but the corpus's first, after each, nowhere."""

    BETWEEN = "between"
    AFTER = "after"
    NONE = "none"


class OnBadLine(StrEnum):
    """What a bad input line does: stops the run, or is counted and skipped."""

    ERROR = "error"
    SKIP = "skip"


# Where reading resumes: (file index, byte offset, line number) just past a document or bad line.
Position = tuple[int, int, int]


def shard_name(index: int) -> str:
    """`shard-` plus the five-digit, zero-based index and `.bin`."""
    return f"shard-{index:05d}.bin"


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that gave no document: where it is and why.

    The manifest lists it as `file:line: reason`, progress.json as `[file, line, reason]`.
    """

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"
