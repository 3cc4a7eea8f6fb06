"""Control runs: a bound test run once for real and once per control, with its defect planted.

A test bound to a falsifier that declares `controls` runs as `test_x[real]` and once per
control as `test_x[control=<id>]`, the `falsifier_control` fixture naming the defect to plant.
On a control run the verdict turns over: the prediction failing (an assertion, `pytest.fail`, a
measurement outside `pass`) passes, the control refuted; a pass fails, the control survived.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from shiptwo.harness.contract.model import Control
from shiptwo.harness.evidence import CONTROL_RUN_PREFIX, REAL_RUN_ID
from shiptwo.harness.session import FIXTURE, PROP, State


def declared_controls(state: State, ids: list[str]) -> list[Control]:
    """The controls the falsifiers `ids` declare, in order (unknown ids declare none)."""
    return [c for fid in ids if fid in state.falsifiers for c in state.falsifiers[fid].controls]


def labels(controls: list[Control]) -> dict[tuple[str, str], str]:
    """The parametrization id of each control: its id, or `<falsifier>.<id>` where two share one."""
    counts: dict[str, int] = {}
    for c in controls:
        counts[c.id] = counts.get(c.id, 0) + 1
    return {(c.falsifier, c.id): c.id if counts[c.id] == 1 else f"{c.falsifier}.{c.id}" for c in controls}


def parametrize(metafunc: pytest.Metafunc, state: State) -> None:
    """Run a test that takes the fixture once for real and once per declared control."""
    if FIXTURE not in metafunc.fixturenames:
        return  # a bound test without the fixture is reported at collection, with the fix
    ids = [
        m.args[0]
        for m in metafunc.definition.iter_markers("falsifier")
        if len(m.args) == 1 and isinstance(m.args[0], str)
    ]
    controls = declared_controls(state, list(dict.fromkeys(ids)))
    if not controls:
        return
    names = labels(controls)
    metafunc.parametrize(
        FIXTURE,
        [None, *controls],
        ids=[REAL_RUN_ID, *(f"{CONTROL_RUN_PREFIX}{names[(c.falsifier, c.id)]}" for c in controls)],
        indirect=True,
    )


def active_control(item: pytest.Item) -> Control | None:
    """The control this item's run plants, or None on a real run."""
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get(FIXTURE) if callspec is not None else None
    return value if isinstance(value, Control) else None


def real_nodeid(nodeid: str, label: str) -> str:
    """The node id of the real run beside the control run `nodeid` (`...[control=x]` -> `...[real]`)."""
    head, found, tail = nodeid.rpartition(f"{CONTROL_RUN_PREFIX}{label}")
    return f"{head}{REAL_RUN_ID}{tail}" if found else nodeid


def judge_control_run(pyfuncitem: pytest.Function, control: Control) -> Generator[None, object, object]:
    """The body of the pyfunc_call wrapper on a control run: a failed prediction passes, a pass fails."""
    try:
        result = yield
    except (AssertionError, pytest.fail.Exception) as exc:
        # The falsifier's own prediction failed with the defect planted: it sees the defect.
        detail = _exception_line(exc)
        pyfuncitem.user_properties.append((f"{PROP}.control_outcome", ["refuted", detail]))
        return True
    message = (
        f"shiptwo: control {control.id!r} of {control.falsifier} survived: the test passed with its "
        f"defect planted ({control.defect}); the falsifier cannot see the defect it exists to catch. "
        f"Plant it where {FIXTURE} == {control.id!r}, or tighten the prediction until this run fails"
    )
    pyfuncitem.user_properties.append(
        (f"{PROP}.control_outcome", ["survived", "the test passed with the defect planted"])
    )
    pytest.fail(message, pytrace=False)
    return result  # pragma: no cover - pytest.fail raised


def _exception_line(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return first[:500] or type(exc).__name__
