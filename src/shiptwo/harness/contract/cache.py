"""The contracts a pytest session starts from, validated once and kept while nothing they rest on changes.

Every pytest session (and every xdist worker) needs the project's contracts before it collects a
test. Validating them means importing the YAML and JSON Schema machinery, parsing every contract,
reading every test file that a `tests:` entry names with `ast`, reading the conftest.py files for
gate names and globbing every `covers:` pattern: about 0.1 s in this repository, 3-7% of a
`pytest --collect-only`. An unchanged project gets the same answer every time, so the answer is
kept in pytest's cache directory (`.pytest_cache/d/shiptwo/`, emptied by `--cache-clear`).

A kept answer is used only while everything that could turn it into an error is unchanged:
  - the key: this cache format, the Python version, the project root and contracts directory,
    the code that validates (the files of shiptwo, PyYAML and jsonschema-rs, by stat), the gates
    installed packages register (entry points) and the names registered in this process so far
    (conftest.py files pytest loaded, plugins);
  - the YAML files under the contracts directory, by name, every directory listed;
  - the bytes (sha256) of every such file, of every test file a `tests:` entry names, of every
    conftest.py that may register gates, and of pyproject.toml ([tool.shiptwo] tests and gates),
    each read through symlinks exactly where validation would follow them;
  - per `covers:` pattern, one file it matched, reached without a symlink, still a regular file.
Only an answer without errors is kept, so a broken contract is validated in every session and a
fix is seen at once. Nor is one kept when an input was modified within FRESH_NS of the
validation starting: it may have changed between validation reading it and the cache hashing it.
`shiptwo pv validate` never reads this cache; it is the full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shiptwo
from shiptwo.harness.contract.model import Contract
from shiptwo.harness.safefile import FileRefused, read_file, yaml_files

if TYPE_CHECKING:
    from shiptwo.harness.contract.validate import ValidationResult

FORMAT = 2  # raise it when what an entry holds, or means, changes
FILE = "contracts.json"
ENTRY_LIMIT = 64 << 20  # a cache file larger than this is not ours: validate instead
# Timestamps lag the clock by up to a tick and are as coarse as 2 s (FAT): an input stamped this
# close to the start of validation may have been edited while validation ran.
FRESH_NS = 2_000_000_000
# The code whose rules decide the answer: a new version, or an edit in a checkout, is a new key.
VALIDATOR_PACKAGES = ("shiptwo", "yaml", "jsonschema_rs")


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
    root = root.resolve()
    key = _key(contracts_dir, root) if cache_dir is not None else {}
    if cache_dir is not None:
        contracts = _read(cache_dir / FILE, key, contracts_dir, root)
        if contracts is not None:
            return Loaded(contracts, [], cached=True)
    from shiptwo.harness.contract.validate import validate_paths

    started = time.time_ns()
    result = validate_paths([contracts_dir], root=root, test_dirs=[])
    problems = [
        f"{f.path}:{f.line}: {f.rule} {f.message}" for f in result.findings if f.severity.value == "error"
    ]
    if cache_dir is not None and not problems:
        _write(cache_dir / FILE, key, contracts_dir, root, result, started)
    return Loaded(result.contracts, problems, cached=False)


def _read(path: Path, key: dict[str, Any], contracts_dir: Path, root: Path) -> list[Contract] | None:
    """The contracts an entry holds, or None when there is none or anything it rests on changed."""
    try:
        entry = json.loads(read_file(path, within=None, limit=ENTRY_LIMIT))
    except (FileRefused, ValueError, RecursionError):
        return None  # none yet, or a torn, foreign or hostile file: validate, and write a fresh one
    try:
        if entry["key"] != key:
            return None
        refused: list[FileRefused] = []
        if entry["files"] != [str(p) for p in yaml_files([contracts_dir], refused)] or refused:
            return None
        for group, within in _read_rules(contracts_dir, root).items():
            if any(_digest(Path(p), within) != digest for p, digest in entry[group].items()):
                return None
        if not all(_plain_file(root, rel) for rel in entry["covered"]):
            return None
        return [Contract.from_data(data, Path(p)) for p, data in entry["contracts"]]
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        return None  # an entry of another shape: never trusted, written afresh


def _write(
    path: Path, key: dict[str, Any], contracts_dir: Path, root: Path, result: ValidationResult, started: int
) -> None:
    covered = _covered(root, result.contracts)
    if covered is None:
        return
    rules = _read_rules(contracts_dir, root)
    inputs = _inputs(root, result.files, result.contracts)
    entry: dict[str, Any] = {"key": key, "files": [str(p) for p in result.files]}
    for group, paths in inputs.items():
        digests: dict[str, str | None] = {}
        for p in paths:
            # A contract's bytes were hashed as validation read them; other files are read now.
            digests[str(p)] = result.digests.get(p) or _digest(p, rules[group])
            with contextlib.suppress(OSError):
                if os.stat(p).st_mtime_ns > started - FRESH_NS:
                    return  # possibly edited after validation read it: the next session keeps one
        entry[group] = digests
    entry["covered"] = covered
    entry["contracts"] = [[str(c.path), result.data[c.path]] for c in result.contracts]
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
    from shiptwo.harness.gates import installed_gates, registered_gates

    return {
        "format": FORMAT,
        "python": sys.version,
        "root": str(root),
        "contracts": str(contracts_dir),
        "validator": _code_signature(VALIDATOR_PACKAGES),
        "installed_gates": installed_gates(),
        "registered_gates": sorted(registered_gates()),
    }


def _code_signature(packages: Iterable[str]) -> str:
    """One digest of the (path, mtime, ctime, size) of every file of `packages`, found without
    importing them. The ctime is the kernel's own: a reinstall, `cp -p` or `rsync -t` that keeps
    mtimes still makes it new, and no tool can set it back."""
    h = hashlib.sha256(f"shiptwo {shiptwo.__version__}\n".encode())
    for name in packages:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            for top, dirs, names in os.walk(location):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for file in sorted(names):
                    st = os.stat(os.path.join(top, file))
                    line = f"{top}/{file}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_size}\n"
                    h.update(line.encode("utf-8", "surrogatepass"))
        h.update(f"{name}: {spec.origin if spec else None}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _read_rules(contracts_dir: Path, root: Path) -> dict[str, tuple[Path, ...] | None]:
    """Per group of inputs, where validation follows a symlink (None: anywhere), so that a link
    it would refuse is never hashed as if it were read."""
    return {
        "contract_files": (root, contracts_dir.resolve()),  # validate_paths' `within`
        "test_files": (root,),  # TestFiles: under the root only
        "project_files": None,  # load_config and the conftest gate scan follow links anywhere
    }


def _inputs(root: Path, files: list[Path], contracts: list[Contract]) -> dict[str, list[Path]]:
    """Every file whose bytes the validation of `contracts` read, by how validation read it."""
    from shiptwo.harness.config import load_config
    from shiptwo.harness.contract.testrefs import TestRef, outside_project
    from shiptwo.harness.gates import conftest_files

    tests: dict[Path, None] = {}
    for contract in contracts:
        for falsifier in contract.falsifiers:
            for entry in falsifier.tests or ():
                ref = TestRef.parse(entry)
                if ref is not None and outside_project(ref.file) is None:
                    tests[root / ref.file] = None
    project = [root / "pyproject.toml", *conftest_files(root, load_config(root).tests)]
    return {"contract_files": list(files), "test_files": list(tests), "project_files": project}


def _covered(root: Path, contracts: list[Contract]) -> list[str] | None:
    """Per `covers:` pattern, one file it matches reached without a symlink (glob's `**` does not
    follow one); None when a pattern has none such: then the answer is not kept."""
    from shiptwo.harness.covers import match_covers

    witnesses: dict[str, None] = {}
    for pattern in sorted({p for c in contracts for f in c.falsifiers for p in f.covers}):
        witness = next((rel for rel in match_covers(root, pattern) if _plain_file(root, rel)), None)
        if witness is None:
            return None  # nothing now, or only through a link: validated in every session
        witnesses[witness] = None
    return list(witnesses)


def _plain_file(root: Path, rel: str) -> bool:
    """Whether `root/rel` is a regular file reached through directories, no symlink on the way."""
    path = root
    parts = rel.split("/")
    try:
        for i, part in enumerate(parts):
            path = path / part
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
                return False
    except OSError:
        return False
    return True


def _digest(path: Path, within: tuple[Path, ...] | None) -> str | None:
    """sha256 of the file's bytes; None where there is no file, or one validation would not read
    (a FIFO, a symlink out of `within`)."""
    try:
        return hashlib.sha256(read_file(path, within=within, limit=None)).hexdigest()
    except FileRefused:
        return None
