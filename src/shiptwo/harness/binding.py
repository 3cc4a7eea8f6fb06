"""Tests bound to falsifiers: markers against contracts, host gates, measurements.

The plugin calls these from its hooks and fixtures once a contract declares a falsifier or a
test claims one, so a project without either never imports the contract machinery.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from shiptwo.fileio import display_path
from shiptwo.harness.contract.findings import did_you_mean
from shiptwo.harness.contract.testrefs import TestRef, unparametrized
from shiptwo.harness.controls import active_control, declared_controls, labels, real_nodeid
from shiptwo.harness.gates import check_gate
from shiptwo.harness.session import (
    CONTROL,
    FIXTURE,
    PROP,
    REQUIRE_ENV,
    MeasurementError,
    State,
    falsifier_ids,
)


def check_bindings(state: State, items: list[pytest.Item]) -> None:
    """Tag each bound item, and refuse a session whose falsifier markers and contracts disagree.

    Every problem is reported at once, with its fix: a marker naming no falsifier, a test with
    controls to plant that does not take the fixture, a `tests:` entry whose test carries no
    marker, a marked test its contract does not list.
    """
    problems: list[str] = []
    marked: dict[str, set[str]] = {}
    collected_files: set[str] = set()
    for item in items:
        collected_files.add(item.nodeid.split("::", 1)[0])
        ids = falsifier_ids(item)
        for fid in ids:
            if fid not in state.falsifiers:
                hint = did_you_mean(fid, state.falsifiers)
                where = display_path(state.contracts_dir, state.root)
                problems.append(
                    f"{item.nodeid}: falsifier {fid!r} is declared by no contract in {where}/{hint}"
                )
            else:
                marked.setdefault(fid, set()).add(unparametrized(item.nodeid))
        if ids:
            item.user_properties.append((f"{PROP}.falsifiers", ids))
        declared = declared_controls(state, ids)
        if declared and FIXTURE not in getattr(item, "fixturenames", ()):
            for fid in ids:
                names = [c.id for c in declared if c.falsifier == fid]
                if names:
                    problems.append(
                        f"{item.nodeid}: {fid} declares controls ({', '.join(names)}) but the test does "
                        f"not take the {FIXTURE} fixture; add a {FIXTURE} argument and plant each "
                        f"control's defect when it is set (if {FIXTURE} == {names[0]!r}: ...)"
                    )
        control = active_control(item)
        if control is not None:
            label = labels(declared).get((control.falsifier, control.id), control.id)
            item.stash[CONTROL] = control
            item.user_properties.append(
                (f"{PROP}.control", [control.falsifier, control.id, real_nodeid(item.nodeid, label)])
            )
    for fid, f in state.falsifiers.items():
        if f.tests is None:
            continue
        listed = {f"{ref.file}::{ref.node}" for ref in map(TestRef.parse, f.tests) if ref is not None}
        for node in sorted(listed - marked.get(fid, set())):
            if node.split("::", 1)[0] in collected_files and any(
                unparametrized(i.nodeid) == node for i in items
            ):
                problems.append(
                    f"{node}: listed in tests: of {fid} but carries no @pytest.mark.falsifier({fid!r})"
                )
        for node in sorted(marked.get(fid, set()) - listed):
            problems.append(f"{node}: marked falsifier({fid!r}) but not listed in its contract's tests:")
    if problems:
        # A contract that failed validation declares nothing, so its falsifiers look undeclared:
        # say so first, or the real error (a misspelt key) hides behind "declared by no contract".
        cause = ""
        if state.contract_problems:
            cause = (
                "shiptwo: contract errors (their falsifiers are not loaded):\n  "
                + "\n  ".join(state.contract_problems)
                + "\n"
            )
        raise pytest.UsageError(
            cause + "shiptwo: falsifier markers and contracts disagree:\n  " + "\n  ".join(problems)
        )


def check_gates(state: State, item: pytest.Item) -> None:
    """Skip `item` where a host gate its falsifiers require is closed.

    Where this host claims the gate (`--shiptwo-require`, $SHIPTWO_REQUIRE) the test fails instead.
    """
    for fid in falsifier_ids(item):
        falsifier = state.falsifiers.get(fid)
        for gate in falsifier.requires if falsifier else ():
            result = check_gate(gate)
            if result.ok:
                continue
            message = f"host gate '{gate}' closed: {result.reason}"
            if gate in state.require:
                item.user_properties.append(
                    (f"{PROP}.harness_error", f"{message} (required by {REQUIRE_ENV})")
                )
                pytest.fail(
                    f"{message}; this host claims it through {REQUIRE_ENV}/--shiptwo-require", pytrace=False
                )
            item.user_properties.append((f"{PROP}.gate", gate))
            # Reported at the test's own location, like a skip marker, not at this line.
            raise pytest.skip.Exception(message, _use_item_location=True)


def measurement_recorder(state: State, item: pytest.Item) -> Callable[[str, float], None]:
    """The `record_measurement` function of one test: records a number and judges it against `pass`."""
    falsifiers = [state.falsifiers[fid] for fid in falsifier_ids(item) if fid in state.falsifiers]

    def record(name: str, value: float) -> None:
        declaring = [f for f in falsifiers if name in f.measurements]
        if not declaring:
            declared = sorted({m for f in falsifiers for m in f.measurements})
            hint = did_you_mean(name, declared)
            by = ", ".join(f.id for f in falsifiers) or "any falsifier of this test"
            message = (
                f"measurement {name!r} is not declared by {by} "
                f"(declared: {', '.join(declared) or 'none'}){hint}"
            )
            item.user_properties.append((f"{PROP}.harness_error", message))
            raise MeasurementError(message)
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            message = f"measurement {name!r}: {value!r} is not a number"
            item.user_properties.append((f"{PROP}.harness_error", message))
            raise MeasurementError(message) from exc
        if not math.isfinite(number):
            # NaN or infinity is never a measurement of a working system, whatever the range says.
            item.user_properties.append((f"{PROP}.measurement", (name, number)))
            pytest.fail(
                f"{', '.join(f.id for f in declaring)}: {name} = {number} is not a finite number",
                pytrace=False,
            )
        item.user_properties.append((f"{PROP}.measurement", (name, number)))
        for f in declaring:
            spec = f.measurements[name]
            if spec.passing is not None and not spec.passing.contains(number):
                where = f"{display_path(state.contracts_dir, state.root)}/{f.contract_id}.yaml"
                pytest.fail(
                    f"{f.id}: {name} = {number:g} {spec.unit} is outside the pass range {spec.passing} "
                    f"(from {where}: measurements.{name}.pass)",
                    pytrace=False,
                )

    return record


def check_recorded(state: State, item: pytest.Item, report: pytest.TestReport) -> None:
    """Fail a passing real run that did not record every measurement its falsifiers declare."""
    properties: list[tuple[str, Any]] = list(item.user_properties)
    recorded = {value[0] for key, value in properties if key == f"{PROP}.measurement"}
    missing = [
        f"{fid}: {name}"
        for fid in falsifier_ids(item)
        if fid in state.falsifiers
        for name in state.falsifiers[fid].measurements
        if name not in recorded
    ]
    if missing:
        message = "declared measurement(s) never recorded by this passing test: " + ", ".join(missing)
        report.outcome = "failed"
        report.longrepr = f"shiptwo: {message}; call record_measurement(name, value) for each"
        report.user_properties.append((f"{PROP}.harness_error", message))
