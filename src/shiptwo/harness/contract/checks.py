"""Every check of one contract document: the shipped schema, then what a schema cannot express.

Ids against the file stem and across contracts, semver, obligations covered and referenced,
host gates, measurement ranges, controls, `covers:` paths, and `tests:` entries resolved against
the test files (read with `ast`, never run). `validate.validate_paths` runs them on every
contract document it has read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from shiptwo.harness.contract.findings import Finding, did_you_mean, finding
from shiptwo.harness.contract.schema import schema_findings
from shiptwo.harness.contract.testrefs import TestFiles, TestRef, outside_project
from shiptwo.harness.contract.yamlsafe import ParsedYaml
from shiptwo.harness.covers import cover_pattern_problem, match_covers

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
FALSIFIER_ID = re.compile(r"^FALSIFY-[A-Z0-9]+(?:-[A-Z0-9]+)*-\d{3}$")


def clear_run_caches() -> None:
    """Forget what one validation run learnt about the project (its gates, its covered files)."""
    known_gates.cache_clear()
    _covers_something.cache_clear()


@lru_cache(maxsize=16)  # one answer per root for a validation run: validate_paths clears it
def known_gates(root: Path | None = None) -> frozenset[str]:
    """The installed gates, plus the project's own when `root` is given ([tool.shiptwo.gates] and
    the names its conftest.py files register, read statically: validation runs no project code)."""
    from shiptwo.harness.gates import GATES

    if root is None:
        return frozenset(GATES)
    from shiptwo.harness.config import load_config
    from shiptwo.harness.gates import conftest_gate_names

    project = load_config(root)
    return frozenset(GATES) | frozenset(project.gates) | conftest_gate_names(root, project.tests)


def as_list(value: Any) -> list[Any]:
    """`value` if it is a list, else [] (the schema reports what it should have been)."""
    return value if isinstance(value, list) else []


def document_findings(
    path: Path,
    rel: str,
    parsed: ParsedYaml,
    test_files: TestFiles,
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
    changelog = [c for c in as_list(data.get("changelog")) if isinstance(c, dict)]
    if changelog and isinstance(version, str) and version not in {str(c.get("version")) for c in changelog}:
        yield finding(
            "changelog-version",
            rel,
            *at("changelog"),
            f"changelog has no entry for version {version}; add one",
        )

    gates = known_gates(test_files.root)
    for i, gate in enumerate(as_list(data.get("requires"))):
        if isinstance(gate, str) and gate not in gates:
            yield _unknown_gate(rel, at("requires", i), "requires", gate, gates)

    obligation_ids: dict[str, int] = {}
    for i, ob in enumerate(as_list(data.get("obligations"))):
        oid = ob.get("id") if isinstance(ob, dict) else None
        if not isinstance(oid, str):
            continue
        if oid in obligation_ids:
            yield finding(
                "duplicate-obligation-id",
                rel,
                *at("obligations", i, "id"),
                f"obligations[{i}].id: {oid!r} repeats obligations[{obligation_ids[oid]}]; give each "
                "obligation its own id",
            )
        else:
            obligation_ids[oid] = i

    covered: set[str] = set()
    for i, f in enumerate(as_list(data.get("falsifiers"))):
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
                    f"{where}.id: {fid!r} is not FALSIFY-<AREA>-<NNN> (upper-case area, three digits), e.g. "
                    "FALSIFY-BPE-FORMAT-MISMATCH-001",
                )
            if fid in first_falsifier:
                yield finding(
                    "duplicate-falsifier-id",
                    rel,
                    *at("falsifiers", i, "id"),
                    f"{where}.id: {fid!r} is already declared at {first_falsifier[fid]}; falsifier ids are "
                    "unique across all contracts",
                )
            else:
                first_falsifier[fid] = f"{rel}:{at('falsifiers', i, 'id')[0]}"
        for j, oid in enumerate(as_list(f.get("obligations"))):
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
        for j, gate in enumerate(as_list(f.get("requires"))):
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
            f"{where}.controls: {name} declares none, so nothing shows it can fail on the defect it exists "
            "to catch; "
            "add controls: [{id: <slug>, defect: <the defect its if_fails describes>}] and plant each where "
            "the test's falsifier_control fixture names it",
        )
        return
    seen: dict[str, int] = {}
    for j, control in enumerate(as_list(controls)):
        cid = control.get("id") if isinstance(control, dict) else None
        if not isinstance(cid, str):
            continue
        if cid in seen:
            yield finding(
                "duplicate-control-id",
                rel,
                *at("falsifiers", i, "controls", j, "id"),
                f"{where}.controls[{j}].id: {cid!r} repeats controls[{seen[cid]}]; give each control its own "
                "id",
            )
        else:
            seen[cid] = j


@lru_cache(maxsize=4096)  # contracts share patterns; validate_paths clears it per run
def _covers_something(root: Path, pattern: str) -> bool:
    return bool(match_covers(root, pattern))


def _covers_findings(rel: str, at: _At, i: int, f: dict[str, Any], root: Path) -> Iterable[Finding]:
    for j, pattern in enumerate(as_list(f.get("covers"))):
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
        elif not _covers_something(root, pattern):
            yield finding(
                "covers-no-match",
                rel,
                *at("falsifiers", i, "covers", j),
                f"{where}: {pattern!r} matches no file under {root}; fix the path or glob (renamed?), or "
                "remove it",
            )


def _test_findings(
    rel: str,
    at: _At,
    i: int,
    f: dict[str, Any],
    fid: str,
    test_files: TestFiles,
    markers: dict[str, set[str]],
) -> Iterable[Finding]:
    listed: set[str] = set()
    for j, entry in enumerate(as_list(f.get("tests"))):
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
                f"{where}: {entry!r} is not 'path/test_x.py::test_name' or "
                "'path/test_x.py::TestClass::test_name'",
            )
            continue
        outside = outside_project(ref.file)
        if outside is not None:  # never read: a contract must not make the validator open /etc/...
            yield finding(
                "test-ref-outside-project",
                rel,
                *pos,
                f"{where}: {ref.file!r} {outside}; name the test file relative to the project root "
                f"({test_files.root})",
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
        if tf.refused is not None:
            yield finding(tf.refused.rule, rel, *pos, f"{where}: {ref.file} {tf.refused.reason}")
            continue
        if tf.error:
            yield finding(
                "test-file-unparseable", rel, *pos, f"{where}: {ref.file} is not valid Python: {tf.error}"
            )
            continue
        listed.add(f"{test_rel}::{ref.node}")  # `./x.py` and `x.py` name one file
        if ref.node not in tf.tests:
            head = ref.node.split("::")[0]
            what = f"class {head!r}" if "::" in ref.node and head not in tf.classes else f"test {ref.node!r}"
            hint = did_you_mean(ref.node, tf.tests)
            yield finding("test-missing", rel, *pos, f"{where}: {ref.file} defines no {what}{hint}")
        elif fid not in tf.tests[ref.node]:
            yield finding(
                "test-marker-mismatch",
                rel,
                *pos,
                f"{where}: {entry} carries no @pytest.mark.falsifier({fid!r}); add the marker or drop the "
                "entry",
            )
    for node in sorted(markers.get(fid, set()) - listed):
        yield finding(
            "test-marker-mismatch",
            rel,
            *at("falsifiers", i, "tests"),
            f"falsifiers[{i}].tests: {node} is marked falsifier({fid!r}) but not listed; add it to tests:",
        )
