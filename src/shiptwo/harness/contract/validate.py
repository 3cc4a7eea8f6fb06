"""Validate contract files: every finding of every file, never only the first.

`validate_paths` reads the YAML, checks it against the shipped JSON Schema, then runs the
checks a schema cannot express (ids against file stems, cross references across contracts,
`tests:` entries resolved with `ast`, host gates, measurement ranges).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiptwo.errors import UsageError
from shiptwo.harness.contract.findings import Finding, finding
from shiptwo.harness.contract.model import Contract
from shiptwo.harness.contract.schema import did_you_mean, schema_findings
from shiptwo.harness.contract.testrefs import TestFile, TestRef, find_project_root, scan_test_file, scan_tree
from shiptwo.harness.contract.yamlsafe import ParsedYaml, parse_yaml
from shiptwo.harness.evidence import cover_pattern_problem, match_covers

SCHEMA_ID = "shiptwo.contract/v1"
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
FALSIFIER_ID = re.compile(r"^FALSIFY-[A-Z0-9]+(?:-[A-Z0-9]+)*-\d{3}$")
_YAML_RULES = {
    "syntax": "yaml-syntax",
    "empty": "yaml-empty",
    "encoding": "yaml-encoding",
    "duplicate-key": "yaml-duplicate-key",
    "alias-bomb": "yaml-alias-bomb",
    "key-type": "yaml-key-type",
}


def known_gates() -> frozenset[str]:
    from shiptwo.harness.gates import GATES

    return frozenset(GATES)


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

    def bound(self, falsifier_id: str) -> bool:
        return bool(self.markers.get(falsifier_id))


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """The YAML files named by `paths` (directories are searched recursively), sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    # One file named twice (`contracts` and `/abs/.../contracts/x.yaml`) is validated once,
    # or it would collide with itself as a duplicate contract.
    unique: dict[str, Path] = {}
    for path in files:
        unique.setdefault(os.path.abspath(path), path)
    return sorted(unique.values())


def validate_paths(
    paths: Sequence[Path], *, root: Path | None = None, test_dirs: Sequence[Path] | None = None
) -> ValidationResult:
    """Validate every contract under `paths`.

    `root` resolves `tests:` entries (default: the project root above the first path);
    `test_dirs` are scanned for falsifier markers (default: `<root>/falsifiers`).
    """
    files = collect_files(paths)
    root = (root or find_project_root(paths[0] if paths else Path.cwd())).resolve()
    result = ValidationResult(root=root, files=files)
    scanned = [
        tf for d in (test_dirs if test_dirs is not None else [root / "falsifiers"]) for tf in scan_tree(d)
    ]
    documents: list[tuple[Path, str, ParsedYaml]] = []
    unread = False  # a file that may be a contract could not be read as one
    for path in files:
        rel = _display(path, root)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            result.findings.append(
                finding("file-unreadable", rel, 1, 1, f"cannot read: {exc.strerror or exc}")
            )
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

    test_files = _TestFiles(root)
    markers = _marker_index(scanned, documents, test_files)
    result.markers = {fid: sorted(nodes) for fid, nodes in markers.items()}
    first_falsifier: dict[str, str] = {}
    first_contract: dict[str, str] = {}
    for path, rel, parsed in documents:
        file_findings = list(
            _check_document(path, rel, parsed, test_files, markers, first_falsifier, first_contract)
        )
        result.findings.extend(file_findings)
        if not any(f.name in _STRUCTURAL for f in file_findings):
            result.contracts.append(Contract.from_data(parsed.data, path))
        else:
            result.invalid.append((path, parsed.data))
    if not unread:
        # With a contract unread, its markers would all look undeclared: report the file, not them.
        _check_markers_declared(scanned, documents, root, result)
    result.findings.sort()
    return result


# Findings after which the data cannot be turned into records safely.
_STRUCTURAL = frozenset({"unknown-key", "missing-key", "bad-value", "yaml-duplicate-key", "yaml-key-type"})


def _display(path: Path, root: Path) -> str:
    """`path` relative to `root` where it lies under it (also through symlinks), else as given."""
    # String work and no syscalls first: most paths lie plainly under the root.
    absolute, prefix = os.path.abspath(path), os.path.join(root, "")
    if absolute.startswith(prefix):
        return absolute[len(prefix) :]
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop; RuntimeError before Python 3.13
        return str(path)
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


class _TestFiles:
    """The test files that `tests:` entries name, each found, scanned and placed once per run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._found: dict[str, tuple[TestFile, str] | None] = {}

    def get(self, file: str) -> tuple[TestFile, str] | None:
        """(scan, path relative to the root) of the file an entry names; None if there is no such file."""
        if file not in self._found:
            target = self.root / file
            tf = scan_test_file(target) if target.is_file() else None
            self._found[file] = None if tf is None else (tf, _display(tf.path, self.root))
        return self._found[file]


def _marker_index(
    scanned: list[TestFile], documents: list[tuple[Path, str, ParsedYaml]], test_files: _TestFiles
) -> dict[str, set[str]]:
    """falsifier id -> node ids (`file::name`) whose markers claim it, from scanned dirs and `tests:` files."""
    files = {tf.path: tf for tf in scanned}
    for _, _, parsed in documents:
        for f in _list(parsed.data.get("falsifiers")):
            for entry in _list(f.get("tests") if isinstance(f, dict) else None):
                ref = TestRef.parse(entry) if isinstance(entry, str) else None
                found = test_files.get(ref.file) if ref else None
                if found is not None:
                    files.setdefault(found[0].path, found[0])
    index: dict[str, set[str]] = {}
    for tf in files.values():
        rel = _display(tf.path, test_files.root)
        for node, ids in tf.tests.items():
            for fid in ids:
                index.setdefault(fid, set()).add(f"{rel}::{node}")
    return index


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_document(
    path: Path,
    rel: str,
    parsed: ParsedYaml,
    test_files: _TestFiles,
    markers: dict[str, set[str]],
    first_falsifier: dict[str, str],
    first_contract: dict[str, str],
) -> Iterable[Finding]:
    data: dict[str, Any] = parsed.data

    def at(*keys: str | int) -> tuple[int, int]:
        return parsed.position(keys)

    yield from schema_findings(rel, parsed)

    cid = data.get("id")
    if isinstance(cid, str):
        if cid != path.stem:
            yield finding(
                "id-stem-mismatch",
                rel,
                *at("id"),
                f"id: {cid!r} differs from the file stem {path.stem!r}; rename one so they match",
            )
        if cid in first_contract:
            yield finding(
                "duplicate-contract-id",
                rel,
                *at("id"),
                f"id: {cid!r} is also declared by {first_contract[cid]}",
            )
        else:
            first_contract[cid] = rel
    version = data.get("version")
    if isinstance(version, str) and not SEMVER.match(version):
        yield finding(
            "version-not-semver",
            rel,
            *at("version"),
            f"version: {version!r} is not semver MAJOR.MINOR.PATCH (e.g. 1.0.0)",
        )
    elif version is not None and not isinstance(version, str):
        yield finding(
            "version-not-semver",
            rel,
            *at("version"),
            f"version: {version!r} is not a string; quote it, e.g. '1.0.0'",
        )
    changelog = [c for c in _list(data.get("changelog")) if isinstance(c, dict)]
    if changelog and isinstance(version, str) and version not in {str(c.get("version")) for c in changelog}:
        yield finding(
            "changelog-version",
            rel,
            *at("changelog"),
            f"changelog has no entry for version {version}; add one",
        )

    gates = known_gates()
    for i, gate in enumerate(_list(data.get("requires"))):
        if isinstance(gate, str) and gate not in gates:
            yield _unknown_gate(rel, at("requires", i), "requires", gate, gates)

    obligation_ids: dict[str, int] = {}
    for i, ob in enumerate(_list(data.get("obligations"))):
        oid = ob.get("id") if isinstance(ob, dict) else None
        if not isinstance(oid, str):
            continue
        if oid in obligation_ids:
            yield finding(
                "duplicate-obligation-id",
                rel,
                *at("obligations", i, "id"),
                f"obligations[{i}].id: {oid!r} repeats obligations[{obligation_ids[oid]}]; give each obligation its own id",
            )
        else:
            obligation_ids[oid] = i

    covered: set[str] = set()
    for i, f in enumerate(_list(data.get("falsifiers"))):
        if not isinstance(f, dict):
            continue
        where = f"falsifiers[{i}]"
        fid = f.get("id")
        if isinstance(fid, str):
            if not FALSIFIER_ID.match(fid):
                yield finding(
                    "falsifier-id-format",
                    rel,
                    *at("falsifiers", i, "id"),
                    f"{where}.id: {fid!r} is not FALSIFY-<AREA>-<NNN> (upper-case area, three digits), e.g. FALSIFY-BPE-FORMAT-MISMATCH-001",
                )
            if fid in first_falsifier:
                yield finding(
                    "duplicate-falsifier-id",
                    rel,
                    *at("falsifiers", i, "id"),
                    f"{where}.id: {fid!r} is already declared at {first_falsifier[fid]}; falsifier ids are unique across all contracts",
                )
            else:
                first_falsifier[fid] = f"{rel}:{at('falsifiers', i, 'id')[0]}"
        for j, oid in enumerate(_list(f.get("obligations"))):
            if not isinstance(oid, str):
                continue
            covered.add(oid)
            if oid not in obligation_ids:
                hint = did_you_mean(oid, obligation_ids)
                yield finding(
                    "unknown-obligation",
                    rel,
                    *at("falsifiers", i, "obligations", j),
                    f"{where}.obligations[{j}]: {oid!r} is not an obligation of this contract{hint}",
                )
        for j, gate in enumerate(_list(f.get("requires"))):
            if isinstance(gate, str) and gate not in gates:
                yield _unknown_gate(
                    rel, at("falsifiers", i, "requires", j), f"{where}.requires[{j}]", gate, gates
                )
        measurements = f.get("measurements")
        if isinstance(measurements, dict):
            for name, spec in measurements.items():
                if isinstance(spec, dict):
                    yield from _range_findings(rel, at, i, name, spec)
        if "tests" in f and isinstance(fid, str):
            yield from _test_findings(rel, at, i, f, fid, test_files, markers)
        yield from _control_findings(rel, at, i, f, fid)
        yield from _covers_findings(rel, at, i, f, test_files.root)

    for oid, i in obligation_ids.items():
        if oid not in covered:
            yield finding(
                "uncovered-obligation",
                rel,
                *at("obligations", i, "id"),
                f"obligations[{i}]: {oid!r} is covered by no falsifier; add a falsifier that could refute it",
            )


_At = Callable[..., tuple[int, int]]  # path parts -> (line, column)


def _unknown_gate(rel: str, pos: tuple[int, int], where: str, gate: str, gates: frozenset[str]) -> Finding:
    hint = did_you_mean(gate, gates)
    return finding(
        "unknown-host-gate",
        rel,
        *pos,
        f"{where}: {gate!r} is not a host gate ({', '.join(sorted(gates))}){hint}",
    )


def _range_findings(rel: str, at: _At, i: int, name: str, spec: dict[str, Any]) -> Iterable[Finding]:
    where = f"falsifiers[{i}].measurements.{name}"
    if "pass" not in spec and "plausible" not in spec:
        yield finding(
            "measurement-unjudged",
            rel,
            *at("falsifiers", i, "measurements", name),
            f"{where}: declares neither `pass` nor `plausible`; add the range the value must fall in",
        )
    ranges = {}
    for kind in ("pass", "plausible"):
        rng = spec.get(kind)
        if not isinstance(rng, dict):
            continue
        lo, hi = rng.get("min"), rng.get("max")
        numeric = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi) if v is not None
        )
        if not numeric:
            continue  # the schema reports non-numbers (PyYAML reads `1e-5` as a string)
        nan = [bound for bound, v in (("min", lo), ("max", hi)) if isinstance(v, float) and math.isnan(v)]
        if nan:
            # NaN passes the schema's `number` but compares false with everything: nothing would pass.
            yield finding(
                "bad-value",
                rel,
                *at("falsifiers", i, "measurements", name, kind, nan[0]),
                f"{where}.{kind}.{nan[0]}: .nan is not a bound; give a number or leave the side open",
            )
            continue
        if lo is None and hi is None:
            yield finding(
                "range-empty",
                rel,
                *at("falsifiers", i, "measurements", name, kind),
                f"{where}.{kind}: has neither min nor max; give at least one bound",
            )
        elif lo is not None and hi is not None and lo > hi:
            yield finding(
                "range-inverted",
                rel,
                *at("falsifiers", i, "measurements", name, kind),
                f"{where}.{kind}: min {lo} > max {hi}; swap them",
            )
        else:
            ranges[kind] = (lo, hi)
    if len(ranges) == 2:
        (plo, phi), (qlo, qhi) = ranges["pass"], ranges["plausible"]
        if (phi is not None and qlo is not None and qlo > phi) or (
            plo is not None and qhi is not None and qhi < plo
        ):
            yield finding(
                "plausible-outside-pass",
                rel,
                *at("falsifiers", i, "measurements", name, "plausible"),
                f"{where}: plausible range does not overlap the pass range; every pass would be suspect",
            )


def _control_findings(rel: str, at: _At, i: int, f: dict[str, Any], fid: Any) -> Iterable[Finding]:
    where = f"falsifiers[{i}]"
    controls = f.get("controls")
    if controls is None or controls == []:
        name = fid if isinstance(fid, str) else where
        pos = at("falsifiers", i, "controls") if "controls" in f else at("falsifiers", i, "id")
        yield finding(
            "no-controls",
            rel,
            *pos,
            f"{where}.controls: {name} declares none, so nothing shows it can fail on the defect it exists to catch; "
            "add controls: [{id: <slug>, defect: <the defect its if_fails describes>}] and plant each where "
            "the test's falsifier_control fixture names it",
        )
        return
    seen: dict[str, int] = {}
    for j, control in enumerate(_list(controls)):
        cid = control.get("id") if isinstance(control, dict) else None
        if not isinstance(cid, str):
            continue
        if cid in seen:
            yield finding(
                "duplicate-control-id",
                rel,
                *at("falsifiers", i, "controls", j, "id"),
                f"{where}.controls[{j}].id: {cid!r} repeats controls[{seen[cid]}]; give each control its own id",
            )
        else:
            seen[cid] = j


def _covers_findings(rel: str, at: _At, i: int, f: dict[str, Any], root: Path) -> Iterable[Finding]:
    for j, pattern in enumerate(_list(f.get("covers"))):
        if not isinstance(pattern, str) or not pattern:
            continue  # the schema reports it
        where = f"falsifiers[{i}].covers[{j}]"
        problem = cover_pattern_problem(pattern)
        if problem is not None:
            yield finding(
                "covers-outside-project",
                rel,
                *at("falsifiers", i, "covers", j),
                f"{where}: {pattern!r} {problem}; write a path or glob relative to the project root ({root})",
            )
        elif not match_covers(root, pattern):
            yield finding(
                "covers-no-match",
                rel,
                *at("falsifiers", i, "covers", j),
                f"{where}: {pattern!r} matches no file under {root}; fix the path or glob (renamed?), or remove it",
            )


def _test_findings(
    rel: str,
    at: _At,
    i: int,
    f: dict[str, Any],
    fid: str,
    test_files: _TestFiles,
    markers: dict[str, set[str]],
) -> Iterable[Finding]:
    listed: set[str] = set()
    for j, entry in enumerate(_list(f.get("tests"))):
        if not isinstance(entry, str):
            continue
        pos = at("falsifiers", i, "tests", j)
        where = f"falsifiers[{i}].tests[{j}]"
        ref = TestRef.parse(entry)
        if ref is None:
            yield finding(
                "test-ref-format",
                rel,
                *pos,
                f"{where}: {entry!r} is not 'path/test_x.py::test_name' or 'path/test_x.py::TestClass::test_name'",
            )
            continue
        found = test_files.get(ref.file)
        if found is None:
            yield finding(
                "test-file-missing",
                rel,
                *pos,
                f"{where}: {ref.file} does not exist (relative to {test_files.root})",
            )
            continue
        tf, test_rel = found
        if tf.error:
            yield finding(
                "test-file-unparseable", rel, *pos, f"{where}: {ref.file} is not valid Python: {tf.error}"
            )
            continue
        listed.add(f"{test_rel}::{ref.node}")  # `./x.py` and `x.py` name one file
        if ref.node not in tf.tests:
            head = ref.node.split("::")[0]
            if "::" in ref.node and head not in tf.classes:
                what = f"class {head!r}"
            else:
                what = f"test {ref.node!r}"
            hint = did_you_mean(ref.node, tf.tests)
            yield finding("test-missing", rel, *pos, f"{where}: {ref.file} defines no {what}{hint}")
        elif fid not in tf.tests[ref.node]:
            yield finding(
                "test-marker-mismatch",
                rel,
                *pos,
                f"{where}: {entry} carries no @pytest.mark.falsifier({fid!r}); add the marker or drop the entry",
            )
    for node in sorted(markers.get(fid, set()) - listed):
        yield finding(
            "test-marker-mismatch",
            rel,
            *at("falsifiers", i, "tests"),
            f"falsifiers[{i}].tests: {node} is marked falsifier({fid!r}) but not listed; add it to tests:",
        )


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
                        _display(tf.path, root),
                        tf.lines.get(node, 1),
                        1,
                        f"{node}: marker falsifier({fid!r}) names no falsifier of any contract{hint}",
                    )
                )


def _falsifier_ids(data: Any) -> set[str]:
    falsifiers = _list(data.get("falsifiers")) if isinstance(data, dict) else []
    return {f["id"] for f in falsifiers if isinstance(f, dict) and isinstance(f.get("id"), str)}


def _declared_elsewhere(root: Path, validated: list[Path]) -> set[str]:
    """Falsifier ids declared by the project's contracts (`<root>/contracts`) not being validated."""
    contracts_dir = root / "contracts"
    if not contracts_dir.is_dir():
        return set()
    seen = {p.resolve() for p in validated}
    ids: set[str] = set()
    for path in collect_files([contracts_dir]):
        if path.resolve() in seen:
            continue
        try:
            data = parse_yaml(path.read_bytes()).data
        except OSError:
            continue  # validating that file is what reports it
        if isinstance(data, dict) and data.get("schema") == SCHEMA_ID:
            ids |= _falsifier_ids(data)
    return ids
