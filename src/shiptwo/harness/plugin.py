"""The shiptwo pytest plugin: falsifier markers, measurements, host gates and run records.

Registered through the `pytest11` entry point. A test claims a falsifier with
`@pytest.mark.falsifier("FALSIFY-...")`; the plugin skips it when a host gate the contract
requires is closed, judges what it records with `record_measurement` against the contract's
`pass` and `plausible` ranges, and writes one run record per session (on the xdist controller
only) under `evidence/runs/`, from which `shiptwo pv validate` computes statuses.

A test bound to a falsifier that declares `controls` runs once for real (`test_x[real]`) and once
per control (`test_x[control=<id>]`), the `falsifier_control` fixture telling it which defect to
plant. A control run that fails through the prediction (an assertion, `pytest.fail`, a
measurement outside `pass`) passes: the control is refuted. One that passes fails: the control
survived, the falsifier cannot see its own defect.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shiptwo.errors import EvidenceError
from shiptwo.fileio import sha256_file
from shiptwo.harness.contract.model import Contract, Control, Falsifier
from shiptwo.harness.contract.testrefs import TestRef, scan_test_file
from shiptwo.harness.evidence import (
    CONTROL_RUN_PREFIX,
    REAL_RUN_ID,
    RUN_SCHEMA,
    RUN_SCHEMA_VERSION,
    ControlRun,
    TestResult,
    covered_files,
    covers_digest,
    git_state,
    host_facts,
    new_run_id,
    next_sequence,
    utc_now,
    write_run_record,
)
from shiptwo.harness.gates import GATES, check_gate
from shiptwo.harness.status import Status, falsifier_status

REQUIRE_ENV = "SHIPTWO_REQUIRE"
# One help text per setting, shared by the command-line option and the ini key.
HELP = {
    "contracts": "directory of shiptwo contracts, relative to the rootdir (default: contracts)",
    "evidence": "directory for run records, relative to the rootdir (default: evidence/runs)",
    "require": f"comma-separated host gates this machine claims to have; a closed one errors instead of skipping (also ${REQUIRE_ENV})",
    "record": "write a run record for sessions that ran falsifier tests (default: true)",
}
_PROP = "shiptwo"  # user_properties key prefix; user_properties travel from xdist workers to the controller


@dataclass
class _State:
    root: Path
    contracts_dir: Path
    evidence_dir: Path
    require: frozenset[str]
    record: bool
    falsifiers: dict[str, Falsifier] = field(default_factory=dict)
    contract_problems: list[str] = field(default_factory=list)
    started: str = field(default_factory=utc_now)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeid -> test entry
    run_id: str = field(default_factory=new_run_id)
    record_path: Path | None = None
    record_error: str | None = None
    git: dict[str, Any] | None = None
    contracts: list[Contract] = field(default_factory=list)
    covers: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # falsifier -> file -> sha256 at session start
    # Controller bookkeeping: the report phases seen per node id (a test that never reached its
    # teardown never finished), and each control run's (falsifier, control, real run's node id).
    phases: dict[str, set[str]] = field(default_factory=dict)
    control_of: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    interrupted_workers: set[str] = field(default_factory=set)


_STATE = pytest.StashKey[_State]()
_CONTROL = pytest.StashKey[Control]()  # the control planted on this item's run
_FIXTURE = "falsifier_control"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shiptwo", "shiptwo falsifier contracts")
    group.addoption("--shiptwo-contracts", metavar="DIR", help=HELP["contracts"])
    group.addoption("--shiptwo-evidence", metavar="DIR", help=HELP["evidence"])
    group.addoption("--shiptwo-require", metavar="GATES", help=HELP["require"])
    group.addoption(
        "--shiptwo-no-record", action="store_true", help="do not write a run record for this session"
    )
    parser.addini("shiptwo_contracts", HELP["contracts"], default="contracts")
    parser.addini("shiptwo_evidence", HELP["evidence"], default="evidence/runs")
    parser.addini("shiptwo_require", HELP["require"], default="")
    parser.addini("shiptwo_record", HELP["record"], type="bool", default=True)


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"--shiptwo-{name}")
    return value if value is not None else config.getini(f"shiptwo_{name}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "falsifier(id): bind this test to a contract falsifier (FALSIFY-<AREA>-<NNN>)"
    )
    root = Path(config.rootpath)
    require_text = ",".join(filter(None, [_setting(config, "require"), os.environ.get(REQUIRE_ENV, "")]))
    require = frozenset(g.strip() for g in require_text.split(",") if g.strip())
    unknown = sorted(require - set(GATES))
    if unknown:
        raise pytest.UsageError(
            f"shiptwo: required host gate(s) {', '.join(unknown)} unknown (from --shiptwo-require/${REQUIRE_ENV}); "
            f"known gates: {', '.join(sorted(GATES))}"
        )
    state = _State(
        root=root,
        contracts_dir=root / _setting(config, "contracts"),
        evidence_dir=root / _setting(config, "evidence"),
        require=require,
        record=bool(config.getini("shiptwo_record")) and not config.getoption("--shiptwo-no-record"),
    )
    _load_contracts(state)
    config.stash[_STATE] = state
    if not _is_worker(config):
        config.pluginmanager.register(_Recorder(config, state), "shiptwo-recorder")


def _load_contracts(state: _State) -> None:
    if not state.contracts_dir.is_dir():
        return
    from shiptwo.harness.contract.validate import validate_paths

    result = validate_paths([state.contracts_dir], root=state.root, test_dirs=[])
    for contract in result.contracts:
        for f in contract.falsifiers:
            state.falsifiers[f.id] = f
    state.contract_problems = [
        f"{f.path}:{f.line}: {f.rule} {f.message}" for f in result.findings if f.severity.value == "error"
    ]
    state.contracts = result.contracts


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[_STATE]
    contracts = len(state.contracts)
    lines = [
        (
            f"shiptwo: contracts={_rel(state.contracts_dir, state.root)} ({contracts} contracts, "
            f"{len(state.falsifiers)} falsifiers), evidence={_rel(state.evidence_dir, state.root)}"
            f"{'' if state.record else ' (not recording)'}, require={','.join(sorted(state.require)) or '-'}"
        )
    ]
    lines += [f"shiptwo: contract error: {p}" for p in state.contract_problems]
    return lines


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _falsifier_ids(item: pytest.Item) -> list[str]:
    ids: list[str] = []
    for mark in item.iter_markers("falsifier"):
        if len(mark.args) != 1 or not isinstance(mark.args[0], str) or mark.kwargs:
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.falsifier('FALSIFY-<AREA>-<NNN>') with one id"
            )
        if mark.args[0] not in ids:
            ids.append(mark.args[0])
    return ids


def _declared_controls(state: _State, ids: list[str]) -> list[Control]:
    return [c for fid in ids if fid in state.falsifiers for c in state.falsifiers[fid].controls]


def _labels(controls: list[Control]) -> dict[tuple[str, str], str]:
    """The parametrization id of each control: its id, or `<falsifier>.<id>` where two falsifiers share one."""
    counts: dict[str, int] = {}
    for c in controls:
        counts[c.id] = counts.get(c.id, 0) + 1
    return {(c.falsifier, c.id): c.id if counts[c.id] == 1 else f"{c.falsifier}.{c.id}" for c in controls}


@pytest.hookimpl(trylast=True)  # last, so `real` / `control=<id>` ends the id: test_x[bf16-control=...]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _FIXTURE not in metafunc.fixturenames:
        return  # a bound test without the fixture is reported at collection, with the fix
    state = metafunc.config.stash[_STATE]
    ids = [
        m.args[0]
        for m in metafunc.definition.iter_markers("falsifier")
        if len(m.args) == 1 and isinstance(m.args[0], str)
    ]
    controls = _declared_controls(state, list(dict.fromkeys(ids)))
    if not controls:
        return
    labels = _labels(controls)
    metafunc.parametrize(
        _FIXTURE,
        [None, *controls],
        ids=[REAL_RUN_ID, *(f"{CONTROL_RUN_PREFIX}{labels[(c.falsifier, c.id)]}" for c in controls)],
        indirect=True,
    )


def _active_control(item: pytest.Item) -> Control | None:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get(_FIXTURE) if callspec is not None else None
    return value if isinstance(value, Control) else None


def _real_nodeid(nodeid: str, label: str) -> str:
    """The node id of the real run beside the control run `nodeid` (`...[control=x]` -> `...[real]`)."""
    head, found, tail = nodeid.rpartition(f"{CONTROL_RUN_PREFIX}{label}")
    return f"{head}{REAL_RUN_ID}{tail}" if found else nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash[_STATE]
    problems: list[str] = []
    marked: dict[str, set[str]] = {}
    collected_files: set[str] = set()
    for item in items:
        collected_files.add(item.nodeid.split("::", 1)[0])
        ids = _falsifier_ids(item)
        for fid in ids:
            if fid not in state.falsifiers:
                close = difflib.get_close_matches(fid, list(state.falsifiers), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                where = _rel(state.contracts_dir, state.root)
                problems.append(
                    f"{item.nodeid}: falsifier {fid!r} is declared by no contract in {where}/{hint}"
                )
            else:
                marked.setdefault(fid, set()).add(item.nodeid.split("[", 1)[0])
        if ids:
            item.user_properties.append((f"{_PROP}.falsifiers", ids))
        declared = _declared_controls(state, ids)
        if declared and _FIXTURE not in getattr(item, "fixturenames", ()):
            for fid in ids:
                names = [c.id for c in declared if c.falsifier == fid]
                if names:
                    problems.append(
                        f"{item.nodeid}: {fid} declares controls ({', '.join(names)}) but the test does not take the "
                        f"{_FIXTURE} fixture; add a {_FIXTURE} argument and plant each control's defect when it is set "
                        f"(if {_FIXTURE} == {names[0]!r}: ...)"
                    )
        control = _active_control(item)
        if control is not None:
            real = _real_nodeid(
                item.nodeid, _labels(declared).get((control.falsifier, control.id), control.id)
            )
            item.stash[_CONTROL] = control
            item.user_properties.append((f"{_PROP}.control", [control.falsifier, control.id, real]))
    for fid, f in state.falsifiers.items():
        if f.tests is None:
            continue
        listed = {f"{ref.file}::{ref.node}" for ref in map(TestRef.parse, f.tests) if ref is not None}
        for node in sorted(listed - marked.get(fid, set())):
            if node.split("::", 1)[0] in collected_files and any(
                i.nodeid.split("[", 1)[0] == node for i in items
            ):
                problems.append(
                    f"{node}: listed in tests: of {fid} but carries no @pytest.mark.falsifier({fid!r})"
                )
        for node in sorted(marked.get(fid, set()) - listed):
            problems.append(f"{node}: marked falsifier({fid!r}) but not listed in its contract's tests:")
    if problems:
        raise pytest.UsageError(
            "shiptwo: falsifier markers and contracts disagree:\n  " + "\n  ".join(problems)
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash[_STATE]
    for fid in _falsifier_ids(item):
        falsifier = state.falsifiers.get(fid)
        for gate in falsifier.requires if falsifier else ():
            result = check_gate(gate)
            if result.ok:
                continue
            message = f"host gate '{gate}' closed: {result.reason}"
            if gate in state.require:
                item.user_properties.append(
                    (f"{_PROP}.harness_error", f"{message} (required by {REQUIRE_ENV})")
                )
                pytest.fail(
                    f"{message}; this host claims it through {REQUIRE_ENV}/--shiptwo-require", pytrace=False
                )
            item.user_properties.append((f"{_PROP}.gate", gate))
            # Reported at the test's own location, like a skip marker, not at this line.
            raise pytest.skip.Exception(message, _use_item_location=True)


class MeasurementError(Exception):
    """A test recorded a measurement its falsifiers do not declare, or a non-number."""


@pytest.fixture
def record_measurement(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """Record a measured number for this test's falsifiers, judged against the contract.

    Outside the `pass` range the test fails (the prediction is refuted); outside `plausible`
    the falsifier reads NUMERICALLY-PASSED-METHODOLOGY-SUSPECT. Names must be declared.
    """
    state = request.config.stash[_STATE]
    item = request.node
    falsifiers = [state.falsifiers[fid] for fid in _falsifier_ids(item) if fid in state.falsifiers]

    def record(name: str, value: float) -> None:
        declaring = [f for f in falsifiers if name in f.measurements]
        if not declaring:
            declared = sorted({m for f in falsifiers for m in f.measurements})
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = (
                f"measurement {name!r} is not declared by {', '.join(f.id for f in falsifiers) or 'any falsifier of this test'} "
                f"(declared: {', '.join(declared) or 'none'}){hint}"
            )
            item.user_properties.append((f"{_PROP}.harness_error", message))
            raise MeasurementError(message)
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            message = f"measurement {name!r}: {value!r} is not a number"
            item.user_properties.append((f"{_PROP}.harness_error", message))
            raise MeasurementError(message) from exc
        if not math.isfinite(number):
            # NaN or infinity is never a measurement of a working system, whatever the range says.
            item.user_properties.append((f"{_PROP}.measurement", (name, number)))
            pytest.fail(
                f"{', '.join(f.id for f in declaring)}: {name} = {number} is not a finite number",
                pytrace=False,
            )
        item.user_properties.append((f"{_PROP}.measurement", (name, number)))
        for f in declaring:
            spec = f.measurements[name]
            if spec.passing is not None and not spec.passing.contains(number):
                pytest.fail(
                    f"{f.id}: {name} = {number:g} {spec.unit} is outside the pass range {spec.passing} "
                    f"(from {_rel(state.contracts_dir, state.root)}/{f.contract_id}.yaml: measurements.{name}.pass)",
                    pytrace=False,
                )

    return record


@pytest.fixture
def falsifier_spec(request: pytest.FixtureRequest) -> Falsifier:
    """The contract definition of this test's falsifier, so thresholds are read, never copied.

    E.g. `falsifier_spec.measurements["hidden_max_rel_err"].passing.max`. A test bound to
    several falsifiers must read `request.config` itself; this fixture wants exactly one.
    """
    state = request.config.stash[_STATE]
    ids = [fid for fid in _falsifier_ids(request.node) if fid in state.falsifiers]
    if len(ids) != 1:
        raise pytest.UsageError(
            f"{request.node.nodeid}: falsifier_spec needs exactly one falsifier marker, found {ids}"
        )
    return state.falsifiers[ids[0]]


@pytest.fixture
def falsifier_control(request: pytest.FixtureRequest) -> Control | None:
    """The control whose defect this run must plant, or None on the real run.

    A test bound to a falsifier with `controls` runs once per control with it set; the test
    plants that defect itself (`if falsifier_control == "qkv-bias-random": ...`). Its `.id`,
    `.defect` and `.falsifier` come from the contract; it compares equal to its id.
    """
    value = getattr(request, "param", None)
    return value if isinstance(value, Control) else None


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """On a control run, turn the prediction failing into a pass (refuted) and a pass into a failure (survived)."""
    control = pyfuncitem.stash.get(_CONTROL, None)
    if control is None:
        return (yield)
    try:
        result = yield
    except (AssertionError, pytest.fail.Exception) as exc:
        # The falsifier's own prediction failed with the defect planted: it sees the defect.
        detail = _exception_line(exc)
        pyfuncitem.user_properties.append((f"{_PROP}.control_outcome", ["refuted", detail]))
        return True
    message = (
        f"shiptwo: control {control.id!r} of {control.falsifier} survived: the test passed with its defect planted "
        f"({control.defect}); the falsifier cannot see the defect it exists to catch. Plant it where "
        f"{_FIXTURE} == {control.id!r}, or tighten the prediction until this run fails"
    )
    pyfuncitem.user_properties.append(
        (f"{_PROP}.control_outcome", ["survived", "the test passed with the defect planted"])
    )
    pytest.fail(message, pytrace=False)
    return result  # pragma: no cover - pytest.fail raised


def _exception_line(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return first[:500] or type(exc).__name__


def pytest_report_teststatus(
    report: pytest.TestReport | pytest.CollectReport, config: pytest.Config
) -> tuple[str, str, Any] | None:
    # Collection errors come through here too, without a `when`.
    if (
        getattr(report, "when", None) == "call"
        and report.passed
        and (_prop(report, "control_outcome") or [""])[0] == "refuted"
    ):
        return "passed", ".", ("REFUTED", {"green": True})
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.passed or item.stash.get(_CONTROL, None) is not None:
        return
    state = item.config.stash[_STATE]
    properties: list[tuple[str, Any]] = list(item.user_properties)
    recorded = {value[0] for key, value in properties if key == f"{_PROP}.measurement"}
    missing = [
        f"{fid}: {name}"
        for fid in _falsifier_ids(item)
        if fid in state.falsifiers
        for name in state.falsifiers[fid].measurements
        if name not in recorded
    ]
    if missing:
        message = "declared measurement(s) never recorded by this passing test: " + ", ".join(missing)
        report.outcome = "failed"
        report.longrepr = f"shiptwo: {message}; call record_measurement(name, value) for each"
        report.user_properties.append((f"{_PROP}.harness_error", message))


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _Recorder:
    """Collects test outcomes on the controller (or the only process) and writes the run record.

    A plugin object bound to its config rather than module state, so nested sessions
    (pytester) and xdist controllers each keep their own results.
    """

    def __init__(self, config: pytest.Config, state: _State) -> None:
        self.config = config
        self.state = state

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.state.started = utc_now()
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
        _summary(self.state, terminalreporter)


def _prop(report: pytest.TestReport | pytest.CollectReport | pytest.Item, name: str) -> Any:
    """The value of this plugin's user property `name` (the first), or None."""
    return next((v for k, v in getattr(report, "user_properties", ()) if k == f"{_PROP}.{name}"), None)


def _worker_id(node: Any) -> str:
    return str(getattr(getattr(node, "gateway", None), "id", ""))


def _entry(state: _State, nodeid: str, falsifiers: list[str]) -> dict[str, Any]:
    entry = state.results.get(nodeid)
    if entry is None:
        entry = state.results[nodeid] = {
            "nodeid": nodeid,
            "falsifiers": list(falsifiers),
            "outcome": "passed",
            "duration": 0.0,
        }
    return entry


def _record_report(state: _State, report: pytest.TestReport) -> None:
    if report.when not in ("setup", "call", "teardown"):
        _record_crash(state, report)  # xdist's report for a worker that died mid-test (when="???")
        return
    control = _prop(report, "control")
    if control is not None:
        _record_control(state, report, control)
        return
    falsifiers = _prop(report, "falsifiers")
    if falsifiers is None:
        return
    entry = _entry(state, report.nodeid, falsifiers)
    state.phases.setdefault(report.nodeid, set()).add(report.when)
    entry["duration"] = round(entry["duration"] + report.duration, 6)
    measurements: dict[str, list[float | None]] = entry.setdefault("measurements", {})
    harness_errors = []
    properties: list[tuple[str, Any]] = list(report.user_properties)
    for key, value in properties:
        if key == f"{_PROP}.measurement" and report.when == "call":
            measurements.setdefault(value[0], []).append(_json_number(value[1]))
        elif key == f"{_PROP}.harness_error":
            harness_errors.append(value)
        elif key == f"{_PROP}.gate":
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


def _record_control(state: _State, report: pytest.TestReport, control: list[str]) -> None:
    """Fold one report of a control run into its real run's entry: controls.<falsifier>.<control>."""
    fid, cid, real = control
    state.control_of[report.nodeid] = (fid, cid, real)
    state.phases.setdefault(report.nodeid, set()).add(report.when)
    entry = _entry(state, real, _prop(report, "falsifiers") or [fid])
    run = (
        entry.setdefault("controls", {})
        .setdefault(fid, {})
        .setdefault(cid, {"outcome": "not-run", "nodeid": report.nodeid})
    )
    verdict = _prop(report, "control_outcome")
    if report.when == "call":
        measured: dict[str, list[float | None]] = {}
        properties: list[tuple[str, Any]] = list(report.user_properties)
        for key, value in properties:
            if key == f"{_PROP}.measurement":
                measured.setdefault(value[0], []).append(_json_number(value[1]))
        if measured:
            run["measurements"] = measured
        run["duration"] = round(report.duration, 6)
        harness_error = _prop(report, "harness_error")
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
            detail=f"{report.when}: {_prop(report, 'harness_error') or _failure_text(report)}"[:500],
        )
    elif report.skipped and report.when == "setup":
        run.update(outcome="not-run", detail=_skip_reason(report)[:500])


def _record_crash(state: _State, report: pytest.TestReport) -> None:
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


def _static_falsifiers(state: _State, nodeid: str) -> list[str]:
    """The falsifier ids the markers of `nodeid`'s function claim, read from its source without running it."""
    file, _, node = nodeid.partition("::")
    if not node:
        return []
    scanned = scan_test_file(state.root / file)
    ids = scanned.tests.get(node.split("[", 1)[0], frozenset())
    return sorted(fid for fid in ids if fid in state.falsifiers)


def _control_from_nodeid(state: _State, nodeid: str) -> tuple[str, str, str] | None:
    """(falsifier, control, real run) of a control run known only by its node id, or None."""
    if f"{CONTROL_RUN_PREFIX}" not in nodeid or not nodeid.endswith("]"):
        return None
    label = nodeid.rpartition(CONTROL_RUN_PREFIX)[2][:-1]
    declared = _declared_controls(state, _static_falsifiers(state, nodeid))
    for (fid, cid), text in _labels(declared).items():
        if text == label:
            return fid, cid, _real_nodeid(nodeid, label)
    return None


def _finish(state: _State, *, interrupted: bool) -> None:
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
                    failure="the test never reached its end (no teardown): its process crashed or pytest hit an internal error",
                )
        for runs in entry.get("controls", {}).values():
            for run in runs.values():
                if not state.phases.get(run["nodeid"], set()) & unfinished and run["outcome"] not in (
                    "survived",
                    "error",
                ):
                    if interrupted:
                        run.update(
                            outcome="not-run",
                            detail="the session was interrupted before this control run finished",
                        )
                    else:
                        run.update(
                            outcome="error",
                            detail="the control run never reached its end: its process crashed",
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


def _fingerprints(state: _State) -> dict[str, str]:
    out = {}
    for name in sorted({g for f in state.falsifiers.values() for g in f.requires}):
        result = check_gate(name)
        if result.ok:
            for path in result.artifacts:
                if path.is_file():
                    out[str(path)] = sha256_file(path)
    return out


def build_record(state: _State, exitstatus: int) -> dict[str, Any]:
    """The run record of this session (see docs/contract-format.md, "Run records")."""
    tests = []
    for entry in state.results.values():
        entry = dict(entry)
        entry["fingerprints"] = {
            fid: state.falsifiers[fid].fingerprint for fid in entry["falsifiers"] if fid in state.falsifiers
        }
        tests.append(entry)
    ran = {fid for entry in tests for fid in entry["falsifiers"]}
    covers = {
        fid: {"digest": covers_digest(files), "files": files}
        for fid, files in sorted(state.covers.items())
        if fid in ran
    }
    gates = {}
    for name in sorted({g for f in state.falsifiers.values() for g in f.requires}):
        result = check_gate(name)
        gates[name] = {"ok": result.ok, "reason": result.reason}
    return {
        "schema": RUN_SCHEMA,
        "schema_version": RUN_SCHEMA_VERSION,
        "run_id": state.run_id,
        "sequence": next_sequence(state.evidence_dir),
        "started_at": state.started,
        "finished_at": utc_now(),
        "exit_status": int(exitstatus),
        "git": state.git if state.git is not None else git_state(state.root),
        "host": host_facts(),
        "gates": gates,
        "artifacts": _fingerprints(state),
        "covers": covers,
        "tests": sorted(tests, key=lambda t: t["nodeid"]),
    }


def _session_results(state: _State) -> list[TestResult]:
    now = utc_now()
    return [
        TestResult(
            run_id=state.run_id,
            finished_at=now,
            commit=None,
            host="",
            nodeid=e["nodeid"],
            falsifiers=tuple(e["falsifiers"]),
            outcome=e["outcome"],
            measurements={k: [v for v in vs if v is not None] for k, vs in e.get("measurements", {}).items()},
            fingerprints={},
            skip_reason=e.get("skip_reason"),
            gate=e.get("gate"),
            failure=e.get("failure"),
            controls={
                fid: {
                    cid: ControlRun(run["outcome"], run.get("detail"), run.get("nodeid"))
                    for cid, run in runs.items()
                }
                for fid, runs in e.get("controls", {}).items()
            },
        )
        for e in state.results.values()
    ]


def _summary(state: _State, terminalreporter: Any) -> None:
    if not state.results:
        return
    results = _session_results(state)
    touched = sorted({fid for r in results for fid in r.falsifiers if fid in state.falsifiers})
    tally: dict[Status, list[tuple[str, str]]] = {}
    for fid in touched:
        verdict = falsifier_status(state.falsifiers[fid], bound_tests=None, results=results)
        tally.setdefault(verdict.status, []).append((fid, verdict.reason))
    tr = terminalreporter
    tr.section("shiptwo falsifiers")
    order = [s for s in Status if s in tally]
    tr.write_line(
        f"{len(touched)} falsifiers in this session: "
        + ", ".join(f"{len(tally[s])} {s.value}" for s in order)
    )
    for status in (
        Status.FALSIFIED,
        Status.VACUOUS,
        Status.SUSPECT,
        Status.ERROR,
        Status.NOT_RUN,
        Status.HOST_GATED,
    ):
        for fid, reason in tally.get(status, []):
            tr.write_line(
                f"  {status.value}: {fid}: {reason}", red=status not in _MILD, yellow=status in _MILD
            )
    _control_summary(state, tr)
    error = state.record_error
    if error:
        tr.write_line(
            f"shiptwo: ERROR: run record not written: {error}; the results above stand, but no evidence was kept",
            red=True,
        )
    elif state.record_path is not None:
        tr.write_line(f"run record: {_rel(state.record_path, state.root)}")
    elif not state.record:
        tr.write_line("run record: not written (--shiptwo-no-record)")


_MILD = (Status.HOST_GATED, Status.NOT_RUN)


def _control_summary(state: _State, tr: Any) -> None:
    """One line per control run: what each planted defect did to its falsifier's prediction."""
    runs = [
        (fid, cid, run)
        for entry in state.results.values()
        for fid, by_id in entry.get("controls", {}).items()
        for cid, run in by_id.items()
    ]
    if not runs:
        return
    counts: dict[str, int] = {}
    for _, _, run in runs:
        counts[run["outcome"]] = counts.get(run["outcome"], 0) + 1
    tally = ", ".join(f"{counts[o]} {o}" for o in ("refuted", "survived", "error", "not-run") if o in counts)
    tr.write_line(f"{len(runs)} control runs: {tally}")
    words = {"refuted": "refuted", "survived": "SURVIVED", "error": "errored", "not-run": "not run"}
    for fid, cid, run in sorted(runs, key=lambda t: (t[2]["outcome"] == "refuted", t[0], t[1])):
        detail = str(run.get("detail") or "").removeprefix(f"{fid}: ")
        line = (
            f"  control {cid} {words[run['outcome']]}: {detail}"
            if detail
            else f"  control {cid} {words[run['outcome']]}"
        )
        tr.write_line(
            f"{line} ({fid})", green=run["outcome"] == "refuted", red=run["outcome"] in ("survived", "error")
        )
