"""The contracts a pytest session starts from, validated once and kept while nothing they rest on changes.

Every pytest session (and every xdist worker) needs the project's contracts before it collects a
test. Validating them means importing the YAML and JSON Schema machinery, parsing every contract,
reading every test file that a `tests:` entry names with `ast`, reading the conftest.py files for
gate names and globbing every `covers:` pattern: about 0.1 s in this repository, 3-7% of a
`pytest --collect-only`. An unchanged project gets the same answer every time, so the answer is
kept in pytest's cache directory (`.pytest_cache/d/shiptwo/`, emptied by `--cache-clear`).

A kept answer is used only while everything that could turn it into an error is unchanged:
  - the key: this cache format, shiptwo's version and the stat of every file of its source (the
    validator's own rules), the Python version, the project root, the contracts directory, and
    the gates that installed packages register (entry points);
  - the set of YAML files under the contracts directory (a new file may be a broken contract);
  - the bytes (sha256) of every contract, of every test file a `tests:` entry names, of every
    conftest.py that registers gates, and of pyproject.toml ([tool.shiptwo] tests and gates);
  - one file per `covers:` pattern, which must still exist (the pattern still matches something).
Only an answer without errors is kept: a broken contract is validated again in every session,
so its errors are always those of the files as they are now, and a fix is seen at once.
`shiptwo pv validate` never reads this cache; it is the full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shiptwo
from shiptwo.harness.contract.model import Contract
from shiptwo.harness.safefile import FileRefused, read_file, yaml_files

FORMAT = 1  # raise it when what an entry holds, or means, changes
FILE = "contracts.json"
_PACKAGE = Path(shiptwo.__file__).parent


@dataclass(frozen=True)
class Loaded:
    """The contracts of a session, the errors that fail it, and whether they came from the cache."""

    contracts: list[Contract]
    problems: list[str]  # "path:line: rule message", one per error finding
    cached: bool


def load_contracts(contracts_dir: Path, root: Path, cache_dir: Path | None) -> Loaded:
    """The validated contracts under `contracts_dir`: from `cache_dir` while still true, else validated.

    Without a `cache_dir` (pytest's cacheprovider disabled) every call validates.
    """
    if cache_dir is not None:
        contracts = _read(cache_dir / FILE, contracts_dir, root)
        if contracts is not None:
            return Loaded(contracts, [], cached=True)
    from shiptwo.harness.contract.validate import validate_paths

    result = validate_paths([contracts_dir], root=root, test_dirs=[])
    problems = [
        f"{f.path}:{f.line}: {f.rule} {f.message}" for f in result.findings if f.severity.value == "error"
    ]
    if cache_dir is not None and not problems:
        _write(cache_dir / FILE, contracts_dir, root, result.files, result.contracts, result.data)
    return Loaded(result.contracts, problems, cached=False)


def _read(path: Path, contracts_dir: Path, root: Path) -> list[Contract] | None:
    """The contracts an entry holds, or None when there is none or anything it rests on changed."""
    try:
        entry = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # none yet, or a torn or foreign file: validate, and write a fresh one
    try:
        if entry["key"] != _key(contracts_dir, root):
            return None
        if entry["files"] != [str(p) for p in yaml_files([contracts_dir], [])]:
            return None
        within = _within(contracts_dir, root)
        if any(_digest(Path(p), within) != digest for p, digest in entry["inputs"].items()):
            return None
        if not all(os.path.isfile(p) for p in entry["covered"]):
            return None
        return [Contract.from_data(data, Path(p)) for p, data in entry["contracts"]]
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        return None  # an entry of another shape: never trusted, written afresh


def _write(
    path: Path,
    contracts_dir: Path,
    root: Path,
    files: list[Path],
    contracts: list[Contract],
    data: dict[Path, dict[str, Any]],
) -> None:
    inputs = _inputs(root, files, contracts)
    entry = {
        "key": _key(contracts_dir, root),
        "files": [str(p) for p in files],
        "inputs": {str(p): _digest(p, _within(contracts_dir, root)) for p in inputs},
        "covered": [str(p) for p in _covered(root, contracts)],
        "contracts": [[str(c.path), data[c.path]] for c in contracts],
    }
    try:
        blob = json.dumps(entry, allow_nan=False, ensure_ascii=False)
        if json.loads(blob) != entry:
            return  # data JSON cannot hold exactly (a non-text key): validate every session instead
    except (TypeError, ValueError):
        return
    from shiptwo.fileio import atomic_write_bytes

    # A read-only checkout: the cache only saves time, and validation has already answered.
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, blob.encode("utf-8", "surrogatepass"))


def _key(contracts_dir: Path, root: Path) -> dict[str, Any]:
    from shiptwo.harness.gates import installed_gates

    return {
        "format": FORMAT,
        "shiptwo": shiptwo.__version__,
        "source": _source_signature(),
        "python": sys.version,
        "root": str(root),
        "contracts": str(contracts_dir),
        "gates": installed_gates(),
    }


def _source_signature() -> str:
    """One digest of the (path, mtime, size) of every source file of shiptwo: a rule edited in a
    checkout (or a new version installed) must be seen, and a stat per file is all that costs."""
    h = hashlib.sha256()
    for top, dirs, names in os.walk(_PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".py", ".json")):
                st = os.stat(os.path.join(top, name))
                h.update(f"{top}/{name}\0{st.st_mtime_ns}\0{st.st_size}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _inputs(root: Path, files: list[Path], contracts: list[Contract]) -> list[Path]:
    """Every file whose bytes the validation of `contracts` read: an edit to any may add an error."""
    from shiptwo.harness.config import load_config
    from shiptwo.harness.contract.testrefs import TestRef, outside_project
    from shiptwo.harness.gates import conftest_files

    paths: dict[Path, None] = dict.fromkeys([*files, root / "pyproject.toml"])
    for contract in contracts:
        for falsifier in contract.falsifiers:
            for entry in falsifier.tests or ():
                ref = TestRef.parse(entry)
                if ref is not None and outside_project(ref.file) is None:
                    paths[root / ref.file] = None
    paths.update(dict.fromkeys(conftest_files(root, load_config(root).tests)))
    return list(paths)


def _covered(root: Path, contracts: list[Contract]) -> list[Path]:
    """One file each `covers:` pattern matches; while it exists the pattern matches something."""
    from shiptwo.harness.covers import match_covers

    witnesses: dict[Path, None] = {}
    for pattern in sorted({p for c in contracts for f in c.falsifiers for p in f.covers}):
        matched = match_covers(root, pattern)
        if matched:
            witnesses[root / matched[0]] = None
    return list(witnesses)


def _within(contracts_dir: Path, root: Path) -> tuple[Path, ...]:
    """Where a symlinked input may lead and still be read, as validation allows."""
    return (root.resolve(), contracts_dir.resolve())


def _digest(path: Path, within: tuple[Path, ...]) -> str | None:
    """sha256 of the file's bytes; None where there is no file, or one validation would not read
    (a FIFO, a symlink out of the project): a cached answer is never about a file it refused."""
    try:
        return hashlib.sha256(read_file(path, within=within, limit=None)).hexdigest()
    except FileRefused:
        return None
