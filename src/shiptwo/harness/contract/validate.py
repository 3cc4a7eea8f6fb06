"""Validate contract files: every finding of every file, never only the first.

`validate_paths` reads the YAML, then runs on each contract the shipped JSON Schema and the
checks a schema cannot express (`checks.py`: ids against file stems, cross references across
contracts, `tests:` entries resolved with `ast`, host gates, measurement ranges), and finally
checks every falsifier marker in the scanned test directories against the contracts.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiptwo.fileio import display_path
from shiptwo.harness.config import find_root
from shiptwo.harness.contract.checks import as_list, clear_run_caches, document_findings
from shiptwo.harness.contract.findings import Finding, did_you_mean, finding
from shiptwo.harness.contract.model import Contract
from shiptwo.harness.contract.testrefs import TestFile, TestFiles, TestRef, scan_tree
from shiptwo.harness.contract.yamlsafe import ParsedYaml, parse_yaml
from shiptwo.harness.safefile import CONTRACT_LIMIT, FileRefused, read_file, yaml_files

SCHEMA_ID = "shiptwo.contract/v1"
_YAML_RULES = {
    "syntax": "yaml-syntax",
    "empty": "yaml-empty",
    "encoding": "yaml-encoding",
    "duplicate-key": "yaml-duplicate-key",
    "alias-bomb": "yaml-alias-bomb",
    "key-type": "yaml-key-type",
}


@dataclass
class ValidationResult:
    """What validating a set of paths found."""

    root: Path
    contracts: list[Contract] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Files that are (or may be) contracts but could not be read as records: (path, raw data).
    invalid: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # YAML that is not a contract
    markers: dict[str, list[str]] = field(default_factory=dict)  # falsifier id -> marked test node ids
    # sha256 of the bytes each contract was validated from: `--write` replaces a file only while
    # it still holds them, so an edit made since is never overwritten.
    digests: dict[Path, str] = field(default_factory=dict)
    # The data each accepted contract was built from (`Contract.from_data`), for the plugin's cache.
    data: dict[Path, dict[str, Any]] = field(default_factory=dict)


def validate_paths(
    paths: Sequence[Path], *, root: Path | None = None, test_dirs: Sequence[Path] | None = None
) -> ValidationResult:
    """Validate every contract under `paths`.

    `root` resolves `tests:` entries (default: the project root above the first path);
    `test_dirs` are scanned for falsifier markers (default: `<root>/falsifiers`).
    """
    with gc_paused():
        return _validate(paths, root, test_dirs)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off for the duration, then restore its state.

    Validation allocates millions of small objects (values, positions, nodes) that all stay
    alive until the result is built, and frees none in cycles: the collector's passes over that
    growing heap find nothing, yet were 35% of validating 1,000 contracts and 41% of 10,000
    (quadratic in the heap). Reference counting still frees everything that can be freed.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validate(paths: Sequence[Path], root: Path | None, test_dirs: Sequence[Path] | None) -> ValidationResult:
    clear_run_caches()  # the tree may have changed since the last run in this process
    refused: list[FileRefused] = []
    files = yaml_files(paths, refused)
    root = (root or find_root(paths[0] if paths else Path.cwd())).resolve()
    result = ValidationResult(root=root, files=files)
    # A symlinked contract may lead anywhere under the project root or a directory named; a file
    # named on the command line is the user's own choice, wherever it links.
    within = [root, *(p.resolve() for p in paths if p.is_dir())]
    named = {os.path.abspath(p) for p in paths if not p.is_dir()}
    unread = bool(refused)  # a file that may be a contract could not be read as one
    scanned = [
        tf
        for d in (test_dirs if test_dirs is not None else [root / "falsifiers"])
        for tf in scan_tree(d, root=root, refused=refused)
    ]
    documents: list[tuple[Path, str, ParsedYaml]] = []
    for path in files:
        rel = display_path(path, root)
        try:
            raw = read_file(
                path, within=None if os.path.abspath(path) in named else within, limit=CONTRACT_LIMIT
            )
        except FileRefused as exc:
            result.findings.append(finding(exc.rule, rel, 1, 1, exc.reason))
            unread = True
            continue
        parsed = parse_yaml(raw)
        for problem in parsed.problems:
            result.findings.append(
                finding(_YAML_RULES[problem.kind], rel, problem.line, problem.column, problem.message)
            )
        data = parsed.data
        if parsed.problems and data is None:
            unread = True
            result.invalid.append((path, {}))
            continue
        if not isinstance(data, dict) or "schema" not in data:
            result.skipped.append(path)
            continue
        if data["schema"] != SCHEMA_ID:
            line, col = parsed.position(("schema",))
            result.findings.append(
                finding(
                    "bad-value",
                    rel,
                    line,
                    col,
                    f"schema: {data['schema']!r} is not supported; this shiptwo reads {SCHEMA_ID!r}",
                )
            )
            unread = True
            result.invalid.append((path, data))
            continue
        documents.append((path, rel, parsed))
        result.digests[path] = hashlib.sha256(raw).hexdigest()

    test_files = TestFiles(root)
    markers = _marker_index(scanned, documents, test_files)
    result.markers = {fid: sorted(nodes) for fid, nodes in markers.items()}
    first_falsifier: dict[str, str] = {}
    first_contract: dict[str, str] = {}
    for path, rel, parsed in documents:
        file_findings = list(
            document_findings(path, rel, parsed, test_files, markers, first_falsifier, first_contract)
        )
        result.findings.extend(file_findings)
        if not any(f.name in _STRUCTURAL for f in file_findings):
            result.contracts.append(Contract.from_data(parsed.data, path))
            result.data[path] = parsed.data
        else:
            result.invalid.append((path, parsed.data))
    for refusal in refused:
        # Directories that cannot be listed and test files that are not read: never skipped quietly.
        result.findings.append(finding(refusal.rule, display_path(refusal.path, root), 1, 1, refusal.reason))
    if not unread:
        # With a contract unread, its markers would all look undeclared: report the file, not them.
        _check_markers_declared(scanned, documents, root, result)
    result.findings.sort()
    return result


# Findings after which the data cannot be turned into records safely.
_STRUCTURAL = frozenset({"unknown-key", "missing-key", "bad-value", "yaml-duplicate-key", "yaml-key-type"})


def _marker_index(
    scanned: list[TestFile], documents: list[tuple[Path, str, ParsedYaml]], test_files: TestFiles
) -> dict[str, set[str]]:
    """falsifier id -> node ids (`file::name`) whose markers claim it.

    From the scanned test dirs and the files that `tests:` entries name.
    """
    files = {tf.path: tf for tf in scanned}
    for _, _, parsed in documents:
        for f in as_list(parsed.data.get("falsifiers")):
            for entry in as_list(f.get("tests") if isinstance(f, dict) else None):
                ref = TestRef.parse(entry) if isinstance(entry, str) else None
                found = test_files.get(ref.file) if ref else None
                if found is not None:
                    files.setdefault(found[0].path, found[0])
    index: dict[str, set[str]] = {}
    for tf in files.values():
        rel = display_path(tf.path, test_files.root)
        for node, ids in tf.tests.items():
            for fid in ids:
                index.setdefault(fid, set()).add(f"{rel}::{node}")
    return index


def _check_markers_declared(
    scanned: list[TestFile],
    documents: list[tuple[Path, str, ParsedYaml]],
    root: Path,
    result: ValidationResult,
) -> None:
    declared = {fid for _, _, parsed in documents for fid in _falsifier_ids(parsed.data)}
    if any(ids - declared for tf in scanned for ids in tf.tests.values()):
        # Validating a few files must not flag the markers that bind the other contracts' falsifiers.
        declared |= _declared_elsewhere(root, result.files)
    for tf in scanned:
        for node, ids in tf.tests.items():
            for fid in sorted(ids - declared):
                hint = did_you_mean(fid, declared)
                result.findings.append(
                    finding(
                        "test-marker-mismatch",
                        display_path(tf.path, root),
                        tf.lines.get(node, 1),
                        1,
                        f"{node}: marker falsifier({fid!r}) names no falsifier of any contract{hint}",
                    )
                )


def _falsifier_ids(data: Any) -> set[str]:
    falsifiers = as_list(data.get("falsifiers")) if isinstance(data, dict) else []
    return {f["id"] for f in falsifiers if isinstance(f, dict) and isinstance(f.get("id"), str)}


def _declared_elsewhere(root: Path, validated: list[Path]) -> set[str]:
    """Falsifier ids declared by the project's contracts directory not being validated."""
    from shiptwo.harness.config import load_config

    contracts_dir = load_config(root).contracts
    if not contracts_dir.is_dir():
        return set()
    seen = {p.resolve() for p in validated}
    ids: set[str] = set()
    for path in yaml_files([contracts_dir], []):
        if path.resolve() in seen:
            continue
        try:
            data = parse_yaml(read_file(path, within=[root], limit=CONTRACT_LIMIT)).data
        except FileRefused:
            continue  # validating that file is what reports it
        if isinstance(data, dict) and data.get("schema") == SCHEMA_ID:
            ids |= _falsifier_ids(data)
    return ids
