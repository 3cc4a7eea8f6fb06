"""Reader of pretokenize-bin-v1 shard sets: the manifest, checked, and windows of seq_len + 1 ids.

Windows follow aprender: per shard, consecutive non-overlapping windows of seq_len + 1 tokens,
the tail of each shard dropped; a trainer uses window[:-1] as input and window[1:] as target.
Shards are memory-mapped, so opening a 1.2 B-token set costs nothing until windows are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiptwo import jsonsafe
from shiptwo.errors import FormatError, UsageError
from shiptwo.shards.format import DTYPE, ID_BYTES, MANIFEST, REQUIRED_FIELDS, SCHEMA, shard_name


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check a shard dir's `manifest.json`: schema, required fields, shard files and sizes."""
    directory = Path(directory)
    path = directory / MANIFEST
    not_a_dir = (
        f"{directory}: not a directory; pass the shard dir holding {MANIFEST} "
        "(written by `shiptwo tokenize encode-corpus`), not a corpus or shard file"
    )
    try:
        doc = jsonsafe.parse(jsonsafe.decode_utf8(path.read_bytes()))
    except FileNotFoundError as exc:
        if directory.exists() and not directory.is_dir():
            raise FormatError(not_a_dir) from exc
        raise FormatError(
            f"{path}: not found; a shard dir without a manifest is unfinished or was refused by its audit"
        ) from exc
    except NotADirectoryError as exc:
        raise FormatError(not_a_dir) from exc
    except OSError as exc:
        raise FormatError(
            f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions"
        ) from exc
    except jsonsafe.JsonProblem as exc:
        raise FormatError(
            f"{path}: not valid JSON: {exc}; re-run `shiptwo tokenize encode-corpus` into an empty dir"
        ) from exc
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: not a JSON object")
    findings = manifest_findings(directory, doc)
    if findings:
        # Every problem at once, on one line: a shard set is usually broken in more than one way.
        raise FormatError(f"{path}: " + "; ".join(findings))
    return doc


def manifest_findings(directory: Path, doc: dict[str, Any]) -> list[str]:
    """Every way a parsed manifest disagrees with pretokenize-bin-v1 or its shard files (empty: fine).

    Fills in `shards` for aprender's manifests, which name only a count.
    """
    findings: list[str] = []
    for name, kind in REQUIRED_FIELDS.items():
        if name not in doc:
            findings.append(f"field '{name}' is missing")
        elif not isinstance(doc[name], kind) or isinstance(doc[name], bool):
            findings.append(f"field '{name}' is {doc[name]!r}, expected {kind.__name__}")
    if findings:
        return findings
    if doc["schema"] != SCHEMA:
        findings.append(f"schema is {doc['schema']!r}, expected {SCHEMA!r}")
    if doc["vocab_size"] <= 0:
        findings.append(f"vocab_size {doc['vocab_size']} must be positive")
    shards = doc.get("shards")
    if shards is None:
        # aprender's manifests list no shards: they are shard-00000.bin .. by count.
        shards = [{"file": shard_name(i)} for i in range(doc["shard_count"])]
        doc["shards"] = shards
    if not isinstance(shards, list) or not all(
        isinstance(x, dict) and isinstance(x.get("file"), str) for x in shards
    ):
        return [*findings, "field 'shards' is not a list of {\"file\": name, ...} objects"]
    if len(shards) != doc["shard_count"]:
        findings.append(f"shard_count {doc['shard_count']} but {len(shards)} shards listed")
    total = 0
    unsized = False  # a shard not counted in `total`: comparing it with total_tokens says nothing
    for i, shard in enumerate(shards):
        name = shard["file"]
        if not _plain_file_name(name):
            # A manifest is data from outside: it must not make a reader open files beyond its dir.
            findings.append(
                f"shards[{i}].file {name!r} is not a plain file name inside the shard dir (no "
                f"directories, '..' or absolute paths); name the shard file itself, e.g. {shard_name(0)!r}"
            )
            unsized = True
            continue
        file = directory / name
        if not file.is_file():
            findings.append(f"shards[{i}] {shard['file']} does not exist")
            unsized = True
            continue
        size = file.stat().st_size
        if size % ID_BYTES:
            findings.append(
                f"{shard['file']}: {size} bytes is not a multiple of {ID_BYTES}; not a u32 shard (truncated?)"
            )
        elif "tokens" in shard and shard["tokens"] * ID_BYTES != size:
            findings.append(
                f"{shard['file']}: {size // ID_BYTES} tokens on disk, manifest says {shard['tokens']}"
            )
        total += size // ID_BYTES
    if total != doc["total_tokens"] and not unsized:
        findings.append(f"total_tokens {doc['total_tokens']} but the shards hold {total}")
    return findings


def _plain_file_name(name: str) -> bool:
    """True for a bare file name: no separator of either OS, not '.', '..' or empty, no drive."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\:\0")


@dataclass(frozen=True)
class _ShardWindows:
    path: Path
    first: int  # global index of this shard's first window
    count: int


class ShardReader:
    """Windows of seq_len + 1 u32 ids over a shard set, in shard order.

    `len(reader)` is the number of windows; `reader.window(i)` and iteration give numpy uint32
    arrays of shape (seq_len + 1,). An id >= vocab_size in a window raises FormatError naming
    the shard and offset; `check()` scans every shard up front.
    """

    def __init__(self, directory: str | Path, *, seq_len: int):
        if seq_len < 1:
            raise UsageError(f"seq_len must be >= 1, got {seq_len}")
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory)
        self.seq_len = seq_len
        self.vocab_size: int = self.manifest["vocab_size"]
        self._shards: list[_ShardWindows] = []
        self._maps: dict[int, np.ndarray] = {}
        first = 0
        for shard in self.manifest["shards"]:
            path = self.directory / shard["file"]
            count = (path.stat().st_size // ID_BYTES) // (seq_len + 1)
            self._shards.append(_ShardWindows(path, first, count))
            first += count
        self._len = first

    def __len__(self) -> int:
        return self._len

    def _ids(self, k: int) -> np.ndarray:
        if k not in self._maps:
            path = self._shards[k].path
            self._maps[k] = (
                np.memmap(path, dtype=DTYPE, mode="r") if path.stat().st_size else np.zeros(0, dtype=DTYPE)
            )
        return self._maps[k]

    def window(self, i: int) -> np.ndarray:
        """The i-th window (0 <= i < len): seq_len + 1 ids as a fresh uint32 array."""
        if not 0 <= i < self._len:
            raise IndexError(f"window {i} out of range for {self._len} windows")
        lo, hi = 0, len(self._shards)
        while hi - lo > 1:  # last shard whose first window <= i
            mid = (lo + hi) // 2
            if self._shards[mid].first <= i:
                lo = mid
            else:
                hi = mid
        while self._shards[lo].count == 0 or i >= self._shards[lo].first + self._shards[lo].count:
            lo += 1
        return self._slice(lo, i - self._shards[lo].first)

    def _slice(self, k: int, j: int) -> np.ndarray:
        n = self.seq_len + 1
        out = np.array(self._ids(k)[j * n : (j + 1) * n], dtype=np.uint32)
        if out.size and int(out.max()) >= self.vocab_size:
            bad = int(np.argmax(out >= self.vocab_size))
            raise FormatError(
                f"{self._shards[k].path}: token {j * n + bad} is id {int(out[bad])} >= vocab_size "
                f"{self.vocab_size}; the shard does not belong to this tokenizer"
            )
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for k, shard in enumerate(self._shards):
            for j in range(shard.count):
                yield self._slice(k, j)

    def check(self) -> None:
        """Scan every shard for ids >= vocab_size (reads all data once)."""
        for k, shard in enumerate(self._shards):
            ids = self._ids(k)
            if ids.size and int(ids.max()) >= self.vocab_size:
                pos = int(np.argmax(ids >= self.vocab_size))
                raise FormatError(
                    f"{shard.path}: token {pos} is id {int(ids[pos])} >= vocab_size {self.vocab_size}"
                )


class ArrayWindows:
    """The ShardReader interface over one in-memory token array (tests, small experiments).

    Consecutive non-overlapping windows of seq_len + 1 tokens, the tail dropped, exactly as a
    single shard holding `tokens` would be read.
    """

    def __init__(self, tokens: np.ndarray, *, seq_len: int) -> None:
        if seq_len < 1:
            raise UsageError(f"seq_len={seq_len}: must be at least 1")
        n = len(tokens) // (seq_len + 1)
        self.seq_len = seq_len
        self.rows = np.asarray(tokens)[: n * (seq_len + 1)].reshape(n, seq_len + 1)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.rows)

    def window(self, i: int) -> np.ndarray:
        """The i-th window: a row of `rows`, seq_len + 1 ids."""
        row: np.ndarray = self.rows[i]
        return row
