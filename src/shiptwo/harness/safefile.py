"""Read the files the harness did not write: contracts, test files, run records, covered files.

Any of them may arrive in a pull request, and git stores symlinks: a `contracts/x.yaml` linking
to /dev/zero, a FIFO in `evidence/runs/`, a link out of the project. So every such file is
`lstat`ed first: a device, FIFO or socket is refused by name without being opened (opening a
FIFO blocks until a writer comes), a symlink is followed only where it stays under the
directories the caller allows, and a size limit bounds what one file may cost.

The regular file, the common case, costs one `lstat` more than a plain read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from shiptwo.errors import ShiptwoError, UsageError

MiB = 1 << 20
# Formats without a natural bound get one (docs/contract-format.md, "Limits"): a contract is a few
# KiB, a run record of ten thousand tests a few MiB.
CONTRACT_LIMIT = 16 * MiB
TEST_FILE_LIMIT = 16 * MiB
RUN_RECORD_LIMIT = 64 * MiB

# The rule names (contract/rules.py) of the ways a file is refused.
UNREADABLE = "file-unreadable"
NOT_REGULAR = "file-not-regular"
OUTSIDE = "file-outside-project"
TOO_LARGE = "file-too-large"


class FileRefused(ShiptwoError):
    """A file the harness will not read; `rule` names the finding, `reason` says why (no path)."""

    def __init__(self, path: Path, rule: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.rule = rule
        self.reason = reason


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n and n % MiB == 0 else f"{n:,} bytes"


def check_file(path: Path, *, within: Sequence[Path] | None, limit: int | None) -> os.stat_result:
    """The stat of the regular file `path` stands for, or FileRefused saying why it is not read.

    `within`: resolved directories a symlink may lead into (None: anywhere). Nothing is opened.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise FileRefused(path, UNREADABLE, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:
            raise FileRefused(
                path, NOT_REGULAR, f"dangling symlink to {os.readlink(path)}; fix or remove the link"
            ) from None
        except OSError as exc:  # ELOOP: a symlink loop
            why = exc.strerror or exc
            raise FileRefused(
                path, NOT_REGULAR, f"symlink cannot be resolved: {why}; fix or remove the link"
            ) from None
        if within is not None and not any(target.is_relative_to(base) for base in within):
            where = " or ".join(str(base) for base in within)
            raise FileRefused(
                path,
                OUTSIDE,
                f"symlink to {target} leads outside {where}; not followed (copy the file in instead)",
            )
        try:
            st = os.stat(target)
        except OSError as exc:
            raise FileRefused(path, UNREADABLE, f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(path, NOT_REGULAR, f"is {_kind(st.st_mode)}, not a regular file; not read")
    if limit is not None and st.st_size > limit:
        raise FileRefused(
            path,
            TOO_LARGE,
            f"is {st.st_size:,} bytes, over the {_size(limit)} limit for this kind of file; not read",
        )
    return st


def read_file(path: Path, *, within: Sequence[Path] | None, limit: int | None) -> bytes:
    """The bytes of `path` after `check_file`; FileRefused for every reason it cannot be read."""
    check_file(path, within=within, limit=limit)
    try:
        # O_NONBLOCK: a FIFO swapped in after the check opens without blocking, and fstat refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise FileRefused(path, UNREADABLE, f"cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileRefused(path, NOT_REGULAR, f"is {_kind(st.st_mode)}, not a regular file; not read")
            data: bytes = fh.read(st.st_size + 1)
            while len(data) > st.st_size and (limit is None or len(data) <= limit):
                more = fh.read(MiB)  # it grew since fstat: read on, within the limit
                if not more:
                    break
                data += more
        except OSError as exc:
            raise FileRefused(path, UNREADABLE, f"cannot read: {exc.strerror or exc}") from None
    if limit is not None and len(data) > limit:
        raise FileRefused(path, TOO_LARGE, f"grew past the {_size(limit)} limit while being read; not read")
    return data


def walk_files(directory: Path, refused: list[FileRefused]) -> Iterator[Path]:
    """Every non-directory entry under `directory` (symlinked directories are not entered).

    A subdirectory that cannot be listed is appended to `refused`, never silently skipped.
    """

    def failed(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else directory
        refused.append(FileRefused(where, UNREADABLE, f"cannot list directory: {exc.strerror or exc}"))

    for top, _dirs, names in os.walk(directory, onerror=failed):
        for name in names:
            yield Path(top, name)


def yaml_files(paths: Sequence[Path], refused: list[FileRefused]) -> list[Path]:
    """The `*.yaml` / `*.yml` files named by `paths` (directories searched recursively), sorted and
    each once; every directory that cannot be listed is appended to `refused`.

    Every such entry is listed whatever it is (a FIFO, a dangling symlink): reading it is what
    refuses it, by name. A path that does not exist raises UsageError.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in walk_files(path, refused) if p.suffix in (".yaml", ".yml"))
        elif os.path.lexists(path):
            files.append(path)  # named by the user: a FIFO or a dangling link is refused when read
        else:
            raise UsageError(f"{path}: no such file or directory")
    # One file named twice (`contracts` and `/abs/.../contracts/x.yaml`) is validated once,
    # or it would collide with itself as a duplicate contract.
    unique: dict[str, Path] = {}
    for path in files:
        unique.setdefault(os.path.abspath(path), path)
    return sorted(unique.values())
