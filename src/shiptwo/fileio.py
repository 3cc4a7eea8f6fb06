"""Files written so that a reader never sees half of one, hashed without loading them whole,
output directories checked before a long run writes into them, paths shown to a person, and
where shiptwo keeps its cache.

Shared by the run records, the contract write-back and the tokenizer's outputs; the APR writer
streams its own temp file but follows the same rule (fsync, then rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from shiptwo.errors import UsageError

CACHE_ENV = "SHIPTWO_CACHE_DIR"


def cache_dir() -> Path:
    """Where downloaded and derived files live (the Qwen2 tokenizer, the pinned models).

    `$SHIPTWO_CACHE_DIR` when set; else `$XDG_CACHE_HOME/shiptwo` (the XDG base directory spec,
    which says a relative value is invalid and to be ignored); else `~/.cache/shiptwo`, which is
    also the XDG default, so a cache made before this honoured XDG_CACHE_HOME is still found.
    """
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "shiptwo"
    return Path.home() / ".cache" / "shiptwo"


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_output_dir(option: str, path: Path) -> Path:
    """`path` if a run may write into it: an existing directory, or one mkdir can create.

    A file in its place (or in place of a parent) is a UsageError naming `option`, instead of the
    FileExistsError / NotADirectoryError a later mkdir would raise mid-run.
    """
    for at in (path, *path.parents):
        if at.exists():
            if not at.is_dir():
                where = "" if at == path else f" (its parent {at} is a file)"
                raise UsageError(
                    f"{option} {path}: exists and is not a directory{where}; give a directory "
                    "path (it is created when missing)"
                )
            break
    return path


def display_path(path: Path, root: Path) -> str:
    """`path` relative to `root` where it lies under it (also through symlinks), else as given.

    How findings, headers and summaries name a file: `contracts/x.yaml`, not an absolute path.
    """
    # String work and no syscalls first: most paths lie plainly under the root.
    absolute, prefix = os.path.abspath(path), os.path.join(root, "")
    if absolute.startswith(prefix):
        return absolute[len(prefix) :]
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop; RuntimeError before Python 3.13
        return str(path)
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)
