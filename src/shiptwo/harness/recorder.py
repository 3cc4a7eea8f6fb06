"""The plugin's controller side: every bound test's outcome folded into its entry, one run record written.

Registered on the xdist controller (or the only process) when contracts declare falsifiers.
Reports from workers arrive here with the plugin's user properties; control runs fold into
their real run's entry; tests whose process died, and a session cut short, are settled as
crashed or interrupted, never as passed. The record itself is shaped by `evidence.run_record`.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from shiptwo.errors import EvidenceError
from shiptwo.fileio import sha256_file
from shiptwo.harness.contract.testrefs import scan_test_file, unparametrized
from shiptwo.harness.controls import declared_controls, labels, real_nodeid
from shiptwo.harness.covers import covered_files
from shiptwo.harness.evidence import (
    CONTROL_RUN_PREFIX,
    new_run_id,
    next_sequence,
    redact_record,
    run_record,
    utc_now,
    write_run_record,
)
from shiptwo.harness.gates import check_gate
from shiptwo.harness.host import Redaction, git_state, host_facts
from shiptwo.harness.session import PROP, State, prop
from shiptwo.harness.summary import write_summary


class Recorder:
    """Collects test outcomes on the controller (or the only process) and writes the run record.

    A plugin object bound to its config rather than module state, so nested sessions
    (pytester) and xdist controllers each keep their own results.
    """

    def __init__(self, config: pytest.Config, state: State) -> None:
        self.config = config
        self.state = state
        state.run_id = new_run_id()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.state.started = utc_now()
        if session.config.option.collectonly:
            return  # no test runs, so no record is written: no git, no digests of covered code
        # The code that runs is the code at session start; edits during the run do not count.
        self.state.git = git_state(self.state.root)
        self.state.covers = {
            fid: covered_files(self.state.root, f.covers)
            for fid, f in self.state.falsifiers.items()
            if f.covers
        }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        _record_report(self.state, report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # xdist reports the test a worker was running when Ctrl-C took it down as a crash.
        if error == "keyboard-interrupt":
            self.state.interrupted_workers.add(_worker_id(node))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        _finish(state, interrupted=int(exitstatus) == pytest.ExitCode.INTERRUPTED)
        if not state.results or not state.record:
            return
        try:
            state.record_path = write_run_record(state.evidence_dir, build_record(state, exitstatus))
        except EvidenceError as exc:
            state.record_error = str(exc)
            if session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        write_summary(self.state, terminalreporter)


def build_record(state: State, exitstatus: int) -> dict[str, Any]:
    """The run record of this session: its test entries and the facts of the host they ran on.

    Without `record_host` the record names no host, user or absolute path (`redact_record`):
    records are committed and shared, and a status needs none of them.
    """
    tests = []
    for entry in state.results.values():
        entry = dict(entry)
        entry["fingerprints"] = {
            fid: state.falsifiers[fid].fingerprint for fid in entry["falsifiers"] if fid in state.falsifiers
        }
        tests.append(entry)
    ran = {fid for entry in tests for fid in entry["falsifiers"]}
    gates = {}
    for name in _required_gates(state):
        result = check_gate(name)
        gates[name] = {"ok": result.ok, "reason": result.reason}
    record = run_record(
        run_id=state.run_id,
        sequence=next_sequence(state.evidence_dir),
        started_at=state.started,
        finished_at=utc_now(),
        exit_status=exitstatus,
        git=state.git if state.git is not None else git_state(state.root),
        host=host_facts(identify=state.record_host),
        gates=gates,
        artifacts=_fingerprints(state),
        covers={fid: files for fid, files in state.covers.items() if fid in ran},
        tests=tests,
    )
    return record if state.record_host else redact_record(record, Redaction.of(state.root))


def _required_gates(state: State) -> list[str]:
    return sorted({g for f in state.falsifiers.values() for g in f.requires})


def _fingerprints(state: State) -> dict[str, str]:
    """path -> sha256 of every artifact an open gate found (a model snapshot, say)."""
    out = {}
    for name in _required_gates(state):
        result = check_gate(name)
        if result.ok:
            for path in result.artifacts:
                if path.is_file():
                    out[str(path)] = sha256_file(path)
    return out


def _worker_id(node: Any) -> str:
    return str(getattr(getattr(node, "gateway", None), "id", ""))


def _entry(state: State, nodeid: str, falsifiers: list[str]) -> dict[str, Any]:
    entry = state.results.get(nodeid)
    if entry is None:
        entry = state.results[nodeid] = {
            "nodeid": nodeid,
            "falsifiers": list(falsifiers),
            "outcome": "passed",
            "duration": 0.0,
        }
    return entry


def _record_report(state: State, report: pytest.TestReport) -> None:
    if report.when not in ("setup", "call", "teardown"):
        _record_crash(state, report)  # xdist's report for a worker that died mid-test (when="???")
        return
    control = prop(report, "control")
    if control is not None:
        _record_control(state, report, control)
        return
    falsifiers = prop(report, "falsifiers")
    if falsifiers is None:
        return
    entry = _entry(state, report.nodeid, falsifiers)
    state.phases.setdefault(report.nodeid, set()).add(report.when)
    entry["duration"] = round(entry["duration"] + report.duration, 6)
    measurements: dict[str, list[float | None]] = entry.setdefault("measurements", {})
    harness_errors = []
    properties: list[tuple[str, Any]] = list(report.user_properties)
    for key, value in properties:
        if key == f"{PROP}.measurement" and report.when == "call":
            measurements.setdefault(value[0], []).append(_json_number(value[1]))
        elif key == f"{PROP}.harness_error":
            harness_errors.append(value)
        elif key == f"{PROP}.gate":
            entry["gate"] = value
    if not measurements:
        del entry["measurements"]
    xfail = hasattr(report, "wasxfail")
    if report.skipped and not xfail:
        if report.when in ("setup", "call"):
            entry["outcome"] = "skipped"
            entry["skip_reason"] = _skip_reason(report)
    elif report.failed or (report.skipped and xfail):
        if harness_errors or report.when != "call":
            entry["outcome"] = "error"
        elif entry["outcome"] != "error":
            entry["outcome"] = "failed"
        entry.setdefault("failure", (harness_errors[0] if harness_errors else _failure_text(report))[:500])


def _record_control(state: State, report: pytest.TestReport, control: list[str]) -> None:
    """Fold one report of a control run into its real run's entry: controls.<falsifier>.<control>."""
    fid, cid, real = control
    state.control_of[report.nodeid] = (fid, cid, real)
    state.phases.setdefault(report.nodeid, set()).add(report.when)
    entry = _entry(state, real, prop(report, "falsifiers") or [fid])
    run = (
        entry.setdefault("controls", {})
        .setdefault(fid, {})
        .setdefault(cid, {"outcome": "not-run", "nodeid": report.nodeid})
    )
    verdict = prop(report, "control_outcome")
    if report.when == "call":
        measured: dict[str, list[float | None]] = {}
        properties: list[tuple[str, Any]] = list(report.user_properties)
        for key, value in properties:
            if key == f"{PROP}.measurement":
                measured.setdefault(value[0], []).append(_json_number(value[1]))
        if measured:
            run["measurements"] = measured
        run["duration"] = round(report.duration, 6)
        harness_error = prop(report, "harness_error")
        if verdict is not None:
            run.update(outcome=verdict[0], detail=str(verdict[1])[:500])
        elif report.failed:
            run.update(outcome="error", detail=(harness_error or _failure_text(report))[:500])
        elif report.skipped:
            run.update(outcome="not-run", detail=_skip_reason(report)[:500])
        else:
            run.update(outcome="error", detail="the control run ended without a verdict from shiptwo")
    elif report.failed:
        run.update(
            outcome="error",
            detail=f"{report.when}: {prop(report, 'harness_error') or _failure_text(report)}"[:500],
        )
    elif report.skipped and report.when == "setup":
        run.update(outcome="not-run", detail=_skip_reason(report)[:500])


def _record_crash(state: State, report: pytest.TestReport) -> None:
    """A test whose process died under it: crashed, or interrupted where Ctrl-C took the worker down."""
    interrupted = _worker_id(getattr(report, "node", None)) in state.interrupted_workers
    why = str(report.longrepr or "the test's process died")[:500]
    nodeid = report.nodeid
    control = state.control_of.get(nodeid) or _control_from_nodeid(state, nodeid)
    if control is not None:
        fid, cid, real = control
        state.phases.setdefault(nodeid, set()).add("crashed")
        entry = _entry(state, real, [fid])
        run = entry.setdefault("controls", {}).setdefault(fid, {}).setdefault(cid, {"nodeid": nodeid})
        run.update(outcome="not-run" if interrupted else "error", detail=why)
        return
    if nodeid not in state.results:
        falsifiers = _static_falsifiers(state, nodeid)
        if not falsifiers:
            return
        _entry(state, nodeid, falsifiers)
    state.phases.setdefault(nodeid, set()).add("crashed")
    entry = state.results[nodeid]
    if entry["outcome"] == "passed":  # a refutation seen before the crash still stands
        entry["outcome"] = "interrupted" if interrupted else "crashed"
        entry["failure"] = why


def _static_falsifiers(state: State, nodeid: str) -> list[str]:
    """The falsifier ids the markers of `nodeid`'s function claim, read from its source without running it."""
    file, _, node = nodeid.partition("::")
    if not node:
        return []
    scanned = scan_test_file(state.root / file)
    ids = scanned.tests.get(unparametrized(node), frozenset())
    return sorted(fid for fid in ids if fid in state.falsifiers)


def _control_from_nodeid(state: State, nodeid: str) -> tuple[str, str, str] | None:
    """(falsifier, control, real run) of a control run known only by its node id, or None."""
    if f"{CONTROL_RUN_PREFIX}" not in nodeid or not nodeid.endswith("]"):
        return None
    label = nodeid.rpartition(CONTROL_RUN_PREFIX)[2][:-1]
    declared = declared_controls(state, _static_falsifiers(state, nodeid))
    for (fid, cid), text in labels(declared).items():
        if text == label:
            return fid, cid, real_nodeid(nodeid, label)
    return None


def _finish(state: State, *, interrupted: bool) -> None:
    """Settle the outcome of every test and control run that never reached its end."""
    unfinished = {"teardown", "crashed"}
    for nodeid, entry in state.results.items():
        phases = state.phases.get(nodeid, set())
        if not phases:
            # Only control runs of it were selected (`-k control=...`): the real run decides nothing here.
            entry.update(
                outcome="skipped", skip_reason="its real run was not selected; only its control runs ran"
            )
        elif not phases & unfinished and entry["outcome"] == "passed":
            if interrupted:
                entry.update(
                    outcome="interrupted", failure="the session was interrupted before the test finished"
                )
            else:
                entry.update(
                    outcome="crashed",
                    failure="the test never reached its end (no teardown): its process crashed or "
                    "pytest hit an internal error",
                )
        for runs in entry.get("controls", {}).values():
            for run in runs.values():
                if state.phases.get(run["nodeid"], set()) & unfinished or run["outcome"] in (
                    "survived",
                    "error",
                ):
                    continue
                if interrupted:
                    run.update(
                        outcome="not-run",
                        detail="the session was interrupted before this control run finished",
                    )
                else:
                    run.update(
                        outcome="error", detail="the control run never reached its end: its process crashed"
                    )


def _json_number(value: float) -> float | None:
    # JSON has no NaN or infinity; such a value already failed its pass range in the test.
    return value if math.isfinite(value) else None


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr)


def _failure_text(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0] if crash.message else "failed"
    text = str(report.longrepr or "failed").strip().splitlines()
    return text[-1] if text else "failed"
