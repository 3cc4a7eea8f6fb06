"""The code a falsifier covers: `covers:` paths and globs, the files they name, and their hashes.

A run record keeps, per falsifier, the sha256 of every covered file as the session found it;
`pv validate` hashes them again and calls the evidence STALE where any changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath

from shiptwo.fileio import sha256_file
from shiptwo.harness.safefile import FileRefused, check_file

UNREADABLE = "unreadable"  # the hash of a covered file that could not be read


@lru_cache(maxsize=4096)  # a pure function of the text, asked once per contract per pattern
def cover_pattern_problem(pattern: str) -> str | None:
    """Why a `covers:` entry cannot name files under the project root, or None if it can."""
    if pattern.startswith(("/", "\\", "~")) or PureWindowsPath(pattern).drive:
        return "is an absolute path"
    if ".." in PurePosixPath(pattern.replace("\\", "/")).parts:
        return "climbs out of the project root with '..'"
    return None


def match_covers(root: Path, pattern: str) -> list[str]:
    """The files (paths relative to `root`, `/`-separated) a `covers:` path or glob names.

    A directory stands for every file below it; `__pycache__` is never source.
    """
    if not pattern or cover_pattern_problem(pattern) is not None:
        return []
    try:
        hits = sorted(root.glob(pattern))
    except (ValueError, NotImplementedError, OSError):
        return []
    files: set[str] = set()
    for hit in hits:
        candidates = (
            sorted(p for p in hit.rglob("*") if p.is_file())
            if hit.is_dir()
            else [hit]
            if hit.is_file()
            else []
        )
        for path in candidates:
            rel = path.relative_to(root).as_posix()
            if "__pycache__" not in rel.split("/"):
                files.add(rel)
    return sorted(files)


def covered_files(root: Path, patterns: Iterable[str]) -> dict[str, str]:
    """file -> sha256 for every file the patterns name under `root` (UNREADABLE where it cannot be read).

    A covered file that is a symlink out of `root` (resolved) is UNREADABLE too, never hashed.
    """
    out: dict[str, str] = {}
    within: tuple[Path, ...] | None = None
    for pattern in patterns:
        for rel in match_covers(root, pattern):
            if rel not in out:
                try:
                    within = within or (root.resolve(),)
                    check_file(root / rel, within=within, limit=None)
                    out[rel] = sha256_file(root / rel)
                except (OSError, FileRefused):
                    out[rel] = UNREADABLE
    return dict(sorted(out.items()))


def covers_digest(files: dict[str, str]) -> str:
    """One sha256 over the covered files' names and hashes: equal digests, equal code."""
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(f"{rel}\0{digest}\n".encode("utf-8", "surrogatepass"))  # a record may hold "\ud800"
    return h.hexdigest()


def changed_files(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """The covered files that differ between a record and the tree now, each with how: `x.py (edited)`."""
    out = []
    for rel in sorted(recorded.keys() | now.keys()):
        if rel not in now:
            out.append(f"{rel} (deleted)")
        elif rel not in recorded:
            out.append(f"{rel} (new)")
        elif recorded[rel] != now[rel]:
            out.append(f"{rel} (edited)")
    return out
