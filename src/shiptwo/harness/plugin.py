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

This module holds the hooks and fixtures; their work is done in `binding` (markers against
contracts, gates, measurements), `controls` (control runs), `recorder` (outcomes and the run
record) and `summary`. Those load the contract machinery, so they are imported only once a
contract declares a falsifier or a test claims one: a project without contracts pays for
little more than this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shiptwo.fileio import display_path
from shiptwo.harness.session import (
    CONTROL,
    REQUIRE_ENV,
    STATE,
    MeasurementError,
    State,
    falsifier_ids,
    prop,
)

if TYPE_CHECKING:
    from shiptwo.harness.contract.model import Control, Falsifier

# Importable from here; the hooks and fixtures below are found by pytest.
__all__ = ["HELP", "REQUIRE_ENV", "MeasurementError"]

# One help text per setting, shared by the command-line option and the ini key.
HELP = {
    "contracts": "directory of shiptwo contracts, relative to the rootdir "
    "(default: [tool.shiptwo] contracts, else contracts)",
    "evidence": "directory for run records, relative to the rootdir "
    "(default: [tool.shiptwo] evidence, else evidence/runs)",
    "require": "comma-separated host gates this machine claims to have; a closed one errors instead "
    f"of skipping (also ${REQUIRE_ENV})",
    "record": "write a run record for sessions that ran falsifier tests (default: true)",
    "record_host": "put the hostname, user and absolute paths in run records (default: false)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shiptwo", "shiptwo falsifier contracts")
    group.addoption("--shiptwo-contracts", metavar="DIR", help=HELP["contracts"])
    group.addoption("--shiptwo-evidence", metavar="DIR", help=HELP["evidence"])
    group.addoption("--shiptwo-require", metavar="GATES", help=HELP["require"])
    group.addoption(
        "--shiptwo-no-record", action="store_true", help="do not write a run record for this session"
    )
    # No ini defaults: an unset ini key falls through to [tool.shiptwo], then to its default.
    parser.addini("shiptwo_contracts", HELP["contracts"], default=None)
    parser.addini("shiptwo_evidence", HELP["evidence"], default=None)
    parser.addini("shiptwo_require", HELP["require"], default=None)
    parser.addini("shiptwo_record", HELP["record"], type="bool", default=None)
    parser.addini("shiptwo_record_host", HELP["record_host"], type="bool", default=None)


def _setting(config: pytest.Config, name: str, fallback: Any) -> Any:
    """A flag, else the pytest ini key, else `fallback` (from [tool.shiptwo])."""
    option = f"--shiptwo-{name.replace('_', '-')}"
    value = config.getoption(option) if name in ("contracts", "evidence", "require") else None
    if value is None:
        value = config.getini(f"shiptwo_{name}")
    return fallback if value is None else value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "falsifier(id): bind this test to a contract falsifier (FALSIFY-<AREA>-<NNN>)"
    )
    from shiptwo.errors import UsageError
    from shiptwo.harness.config import load_config

    root = Path(config.rootpath)
    try:
        project = load_config(root)
    except UsageError as exc:
        raise pytest.UsageError(f"shiptwo: {exc}") from None
    require_text = ",".join(
        filter(
            None,
            [_setting(config, "require", ",".join(sorted(project.require))), os.environ.get(REQUIRE_ENV, "")],
        )
    )
    require = frozenset(g.strip() for g in require_text.split(",") if g.strip())
    if project.gates:
        from shiptwo.harness.gates import register_project_gates

        try:
            register_project_gates(project.gates, root)
        except ValueError as exc:
            raise pytest.UsageError(f"shiptwo: {project.source}: {exc}") from None
    if require:  # the gate registry reads every installed package's entry points: only when asked
        from shiptwo.harness.gates import GATES

        unknown = sorted(require - set(GATES))
        if unknown:
            raise pytest.UsageError(
                f"shiptwo: required host gate(s) {', '.join(unknown)} unknown "
                f"(from --shiptwo-require/${REQUIRE_ENV}/[tool.shiptwo] require); "
                f"known gates: {', '.join(sorted(GATES))}"
            )
    no_record = config.getoption("--shiptwo-no-record")
    state = State(
        root=root,
        contracts_dir=root / _setting(config, "contracts", project.contracts),
        evidence_dir=root / _setting(config, "evidence", project.evidence),
        require=require,
        record=bool(_setting(config, "record", project.record)) and not no_record,
        record_host=bool(_setting(config, "record_host", project.record_host)),
        configured=project.configured,
    )
    _load_contracts(state, config)
    config.stash[STATE] = state
    # Without a falsifier no test can be bound, so nothing is recorded: no recorder, no git.
    if state.falsifiers and not hasattr(config, "workerinput"):  # not on an xdist worker
        from shiptwo.harness.recorder import Recorder

        config.pluginmanager.register(Recorder(config, state), "shiptwo-recorder")


def _load_contracts(state: State, config: pytest.Config) -> None:
    """Validate the contracts, in a project that asked for shiptwo or holds shiptwo contracts.

    A `contracts/` directory of someone else's YAML is not ours to parse or to report on: without
    [tool.shiptwo] the directory is read only when a file in it names the contract schema. An
    unchanged project is not validated again: the answer is kept in pytest's cache directory
    (`contract.cache`), where there is one.
    """
    if not state.contracts_dir.is_dir():
        return
    if not state.configured and not _holds_contracts(state.contracts_dir):
        return
    cache_dir = _cache_dir(config)
    state.configured = True
    from shiptwo.harness.contract.cache import load_contracts

    loaded = load_contracts(state.contracts_dir, state.root, cache_dir)
    for contract in loaded.contracts:
        for f in contract.falsifiers:
            state.falsifiers[f.id] = f
    state.contract_problems = loaded.problems
    state.contracts = loaded.contracts
    state.contracts_cached = loaded.cached


def _cache_dir(config: pytest.Config) -> Path | None:
    """shiptwo's directory in pytest's cache, or None under `-p no:cacheprovider` or where it cannot
    be made (a read-only checkout: the session then validates, as it would without a cache)."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    try:
        path: Path = cache.mkdir("shiptwo")
    except OSError:
        return None
    return path


def _holds_contracts(directory: Path) -> bool:
    """Whether any YAML file under `directory` mentions the shiptwo contract schema (a byte scan)."""
    for path in directory.rglob("*.y*ml"):
        try:
            with path.open("rb") as fh:
                if b"shiptwo.contract/" in fh.read(1 << 16):
                    return True
        except OSError:
            continue
    return False


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[STATE]
    if not state.configured:  # a project that has not asked for shiptwo hears nothing from it
        return []
    contracts = display_path(state.contracts_dir, state.root)
    evidence = display_path(state.evidence_dir, state.root)
    lines = [
        f"shiptwo: contracts={contracts} ({len(state.contracts)} contracts, {len(state.falsifiers)} "
        f"falsifiers{'; unchanged since validated' if state.contracts_cached else ''}), "
        f"evidence={evidence}{'' if state.record else ' (not recording)'}, "
        f"require={','.join(sorted(state.require)) or '-'}"
    ]
    lines += [f"shiptwo: contract error: {p}" for p in state.contract_problems]
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Contract errors in every verbosity: `-q` hides the header that also lists them."""
    state = config.stash.get(STATE, None)
    if state is not None and state.contract_problems:
        terminalreporter.section("shiptwo contract errors", red=True, bold=True)
        for problem in state.contract_problems:
            terminalreporter.line(problem, red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A broken contract fails the session that would otherwise pass: its falsifiers went unchecked."""
    state = session.config.stash.get(STATE, None)
    if state is not None and state.contract_problems and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # last, so `real` / `control=<id>` ends the id: test_x[bf16-control=...]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash[STATE]
    if state.falsifiers:  # controls are declared by falsifiers
        from shiptwo.harness.controls import parametrize

        parametrize(metafunc, state)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash[STATE]
    if state.falsifiers or any(item.get_closest_marker("falsifier") for item in items):
        from shiptwo.harness.binding import check_bindings

        check_bindings(state, items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash[STATE]
    if state.falsifiers:
        from shiptwo.harness.binding import check_gates

        check_gates(state, item)


@pytest.fixture
def record_measurement(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """Record a measured number for this test's falsifiers, judged against the contract.

    Outside the `pass` range the test fails (the prediction is refuted); outside `plausible`
    the falsifier reads NUMERICALLY-PASSED-METHODOLOGY-SUSPECT. Names must be declared.
    """
    from shiptwo.harness.binding import measurement_recorder

    return measurement_recorder(request.config.stash[STATE], request.node)


@pytest.fixture
def falsifier_spec(request: pytest.FixtureRequest) -> Falsifier:
    """The contract definition of this test's falsifier, so thresholds are read, never copied.

    E.g. `falsifier_spec.measurements["hidden_max_rel_err"].passing.max`. A test bound to
    several falsifiers must read `request.config` itself; this fixture wants exactly one.
    """
    state = request.config.stash[STATE]
    ids = [fid for fid in falsifier_ids(request.node) if fid in state.falsifiers]
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
    if value is None:
        return None
    from shiptwo.harness.contract.model import Control

    return value if isinstance(value, Control) else None


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """On a control run, a failed prediction passes (refuted) and a pass fails (survived)."""
    control = pyfuncitem.stash.get(CONTROL, None)
    if control is None:
        return (yield)
    from shiptwo.harness.controls import judge_control_run

    return (yield from judge_control_run(pyfuncitem, control))


def pytest_report_teststatus(
    report: pytest.TestReport | pytest.CollectReport, config: pytest.Config
) -> tuple[str, str, Any] | None:
    # Collection errors come through here too, without a `when`.
    if (
        getattr(report, "when", None) == "call"
        and report.passed
        and (prop(report, "control_outcome") or [""])[0] == "refuted"
    ):
        return "passed", ".", ("REFUTED", {"green": True})
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.passed or item.stash.get(CONTROL, None) is not None:
        return
    state = item.config.stash[STATE]
    if state.falsifiers:
        from shiptwo.harness.binding import check_recorded

        check_recorded(state, item, report)
