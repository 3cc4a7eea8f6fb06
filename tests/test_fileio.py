"""Atomic writes: whole file or old file, sane permissions, no temp left behind."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from shiptwo.fileio import atomic_write_bytes, sha256_file


def test_new_file_is_world_readable_and_existing_mode_is_kept(tmp_path: Path) -> None:
    new = tmp_path / "sub" / "new.json"
    atomic_write_bytes(new, b"{}")
    assert new.read_bytes() == b"{}" and stat.S_IMODE(new.stat().st_mode) == 0o644
    old = tmp_path / "old.txt"
    old.write_bytes(b"x")
    old.chmod(0o600)
    atomic_write_bytes(old, b"y")
    assert old.read_bytes() == b"y" and stat.S_IMODE(old.stat().st_mode) == 0o600


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert sha256_file(path, chunk=1 << 16) == hashlib.sha256(data).hexdigest()
