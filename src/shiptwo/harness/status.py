"""Falsifier and contract status, computed from run evidence alone.

One pure function decides a falsifier's status (the plugin's summary and `pv validate` both
call it), so the two can never disagree. The rules (docs/contract-format.md, "Falsifier status"):

- UNBOUND: no test carries the marker. NOT-RUN: bound, but no run mentions it.
- Per test, the newest decisive (non-skipped) result counts; a skip never demotes a decisive
  result from another host. Among the falsifier's tests the worst outcome wins.
- Where no result is decisive, the oldest skip (or interruption) that says what the newest one
  says decides: a run that only repeats a skip decides nothing new, so the evidence written
  back does not move with every CI run.
- A pass with a measurement outside its plausible range is NUMERICALLY-PASSED-METHODOLOGY-SUSPECT:
  a number that passes a threshold is not evidence if no real system could produce it.
- A decisive result recorded against another definition of the falsifier, or before the files
  it `covers` last changed, is STALE.
- A test that never reached its end is no evidence of a pass: crashed reads ERROR, interrupted
  decides nothing. A pass that did not record every declared measurement is an ERROR.
- Controls: DISCHARGED also needs every declared control refuted (its defect caught) by the
  deciding results. A control that survived (its run passed) makes the falsifier VACUOUS: it
  cannot see the defect it exists to catch. One that errored reads ERROR, one never run NOT-RUN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shiptwo.harness.contract.model import Falsifier, Measurement, Range
from shiptwo.harness.contract.testrefs import unparametrized
from shiptwo.harness.covers import changed_files
from shiptwo.harness.evidence import TestResult, test_key


class Status(StrEnum):
    UNBOUND = "UNBOUND"
    NOT_RUN = "NOT-RUN"
    HOST_GATED = "HOST-GATED"
    DISCHARGED = "DISCHARGED"
    SUSPECT = "NUMERICALLY-PASSED-METHODOLOGY-SUSPECT"
    FALSIFIED = "FALSIFIED"
    ERROR = "ERROR"
    STALE = "STALE"
    VACUOUS = "VACUOUS"


class ContractStatus(StrEnum):
    DRAFT = "DRAFT"
    DRAFT_PARTIAL_DISCHARGE = "DRAFT_PARTIAL_DISCHARGE"
    ACTIVE_RUNTIME = "ACTIVE_RUNTIME"
    FALSIFIED = "FALSIFIED"


# Worse outcomes first: a refuted prediction outranks a blind one outranks a broken harness
# outranks a suspect pass.
_SEVERITY = {
    Status.FALSIFIED: 0,
    Status.VACUOUS: 1,
    Status.ERROR: 2,
    Status.SUSPECT: 3,
    Status.STALE: 4,
    Status.NOT_RUN: 5,
    Status.DISCHARGED: 6,
}
# Outcomes that say something about the prediction; a skip or an interrupted run says nothing.
_UNDECIDED = ("skipped", "interrupted")


@dataclass(frozen=True)
class ControlVerdict:
    """What the deciding results showed about one declared control."""

    id: str
    defect: str
    outcome: str  # refuted | survived | error | not-run
    detail: str = ""
    run_id: str | None = None  # the run whose control run decided it
    nodeid: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A falsifier's status, the result that decided it, and why."""

    status: Status
    reason: str = ""
    decided_by: TestResult | None = None
    measured: dict[str, float | None] = field(default_factory=dict, hash=False)
    suspects: tuple[str, ...] = ()  # "name=value outside plausible [lo, hi]"
    controls: tuple[ControlVerdict, ...] = ()  # one per declared control, in declared order
    # Every result this verdict was computed from: computed again from any set of run records
    # that holds these (and no newer ones), the verdict comes out the same. What prune keeps.
    relied_on: tuple[TestResult, ...] = field(default=(), hash=False)

    @property
    def refuted(self) -> int:
        """How many declared controls were watched failing (their defect caught)."""
        return sum(c.outcome == "refuted" for c in self.controls)


def judge_measurements(
    declared: Mapping[str, Measurement], recorded: Mapping[str, list[float | None]]
) -> tuple[list[str], list[str]]:
    """(failures outside `pass`, suspects outside `plausible`) for recorded values, as text."""
    failures: list[str] = []
    suspects: list[str] = []
    for name, values in recorded.items():
        spec = declared.get(name)
        if spec is None:
            continue
        for value in values:
            if value is None or not math.isfinite(value):  # JSON keeps NaN/inf as null
                failures.append(f"{name}={value} is not a finite number")
            elif spec.passing is not None and not spec.passing.contains(value):
                failures.append(f"{name}={value:g} {spec.unit} outside pass {spec.passing}")
            elif spec.plausible is not None and not spec.plausible.contains(value):
                suspects.append(f"{name}={value:g} {spec.unit} outside plausible {spec.plausible}")
    return failures, suspects


def worst_value(values: list[float | None], spec: Measurement | None) -> float | None:
    """The value of a repeated measurement that is nearest to (or furthest past) its bounds."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < len(values):
        return next(v for v in values if v is None or not math.isfinite(v))
    ranges = [r for r in (spec.plausible, spec.passing) if r is not None] if spec else []
    if not ranges or len(finite) == 1:
        return finite[-1]

    def margin(v: float) -> float:
        r: Range = ranges[0]
        sides = [
            v - r.min if r.min is not None else float("inf"),
            r.max - v if r.max is not None else float("inf"),
        ]
        return min(sides)

    return min(finite, key=margin)


def _decisive_status(
    result: TestResult, falsifier: Falsifier, covered: Mapping[str, str] | None
) -> tuple[Status, list[str]]:
    if result.fingerprints.get(falsifier.id, falsifier.fingerprint) != falsifier.fingerprint:
        return Status.STALE, []
    if covered is not None and falsifier.covers:
        recorded = result.covers.get(falsifier.id)
        if recorded is None:
            return Status.STALE, [
                f"run {result.run_id} recorded no digest of the files it covers; re-run it to tie the "
                "evidence to the code"
            ]
        changed = changed_files(recorded, dict(covered))
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            return Status.STALE, [f"covered code changed since run {result.run_id}: {shown}"]
    if result.outcome == "failed":
        return Status.FALSIFIED, []
    if result.outcome == "error":
        return Status.ERROR, ["the test errored in setup or teardown: " + (result.failure or "?")]
    if result.outcome == "crashed":
        return Status.ERROR, ["the test never reached its end (crashed): " + (result.failure or "?")]
    failures, suspects = judge_measurements(falsifier.measurements, result.measurements)
    if failures:  # recorded by an old plugin that did not fail the test; the numbers still refute it
        return Status.FALSIFIED, failures
    missing = [name for name in falsifier.measurements if name not in result.measurements]
    if missing:
        return Status.ERROR, [
            f"the test passed without recording declared measurement(s) {', '.join(missing)}"
        ]
    if suspects:
        return Status.SUSPECT, suspects
    return Status.DISCHARGED, []


_CONTROL_RANK = {"refuted": 0, "survived": 1, "error": 2, "not-run": 3}


def _control_verdicts(falsifier: Falsifier, deciding: Sequence[TestResult]) -> tuple[ControlVerdict, ...]:
    """Each declared control, judged over the deciding result of every bound test.

    A control is refuted when any of the falsifier's tests caught its defect; otherwise it
    survived if a control run passed, errored if one broke, and is not-run if none reached a verdict.
    """
    out = []
    for control in falsifier.controls:
        runs = [(r, r.controls.get(falsifier.id, {}).get(control.id)) for r in deciding]
        seen = [(r, run) for r, run in runs if run is not None]
        if not seen:
            where = f"run {deciding[0].run_id}" if len(deciding) == 1 else "the deciding runs"
            out.append(
                ControlVerdict(control.id, control.defect, "not-run", f"{where} has no control run for it")
            )
            continue
        r, run = min(seen, key=lambda t: _CONTROL_RANK[t[1].outcome])
        out.append(
            ControlVerdict(control.id, control.defect, run.outcome, run.detail or "", r.run_id, run.nodeid)
        )
    return tuple(out)


def _not_run(falsifier: Falsifier, why: str) -> tuple[ControlVerdict, ...]:
    return tuple(ControlVerdict(c.id, c.defect, "not-run", why) for c in falsifier.controls)


def _says(r: TestResult) -> tuple[str, str | None, str | None, str | None]:
    """What an undecided result says: two skips that say the same are one piece of evidence."""
    return r.outcome, r.gate, r.skip_reason, r.failure


def _first_saying(results: Sequence[TestResult]) -> tuple[TestResult, TestResult]:
    """(the oldest result that says what the newest says, the newest) among `results`, oldest first."""
    newest = results[-1]
    return next(r for r in results if _says(r) == _says(newest)), newest


def falsifier_status(
    falsifier: Falsifier,
    *,
    bound_tests: Iterable[str] | None,
    results: Iterable[TestResult],
    covered: Mapping[str, str] | None = None,
) -> Verdict:
    """Decide one falsifier's status from every recorded result (any order).

    `bound_tests` are the node ids whose markers claim the falsifier now (None: unknown, trust
    the records); results of tests that no longer claim it are ignored. `covered` is file ->
    sha256 of the files the falsifier `covers` as they are now (None: do not check).
    """
    bound = set(bound_tests) if bound_tests is not None else None
    if bound is not None and not bound:
        return Verdict(
            Status.UNBOUND,
            "no test carries @pytest.mark.falsifier for it",
            controls=_not_run(falsifier, "no test is bound"),
        )
    mine = [
        r
        for r in results
        if falsifier.id in r.falsifiers and (bound is None or unparametrized(r.nodeid) in bound)
    ]
    if not mine:
        return Verdict(
            Status.NOT_RUN, "bound, but no run record mentions it", controls=_not_run(falsifier, "never run")
        )
    # Oldest first; run records carry times in one spelling, so the text sorts as the time.
    mine.sort(key=lambda r: (r.finished_at, r.sequence, r.run_id))
    newest_decisive: dict[str, TestResult] = {}
    for r in mine:
        if r.outcome not in _UNDECIDED:
            newest_decisive[test_key(r.nodeid)] = r
    if not newest_decisive:
        gated = [r for r in mine if r.gate]
        if gated:
            first, last = _first_saying(gated)
            why = first.skip_reason or f"host gate '{first.gate}' closed"
            return Verdict(
                Status.HOST_GATED, why, first, controls=_not_run(falsifier, why), relied_on=(first, last)
            )
        first, newest = _first_saying(mine)
        if newest.outcome == "interrupted":
            why = (
                f"no run reached its end: the newest was interrupted ({newest.failure or 'no reason given'})"
            )
        else:
            why = f"every run skipped it: {newest.skip_reason or 'no reason given'}"
        return Verdict(
            Status.NOT_RUN, why, first, controls=_not_run(falsifier, why), relied_on=(first, newest)
        )
    judged = [(r, *_decisive_status(r, falsifier, covered)) for r in newest_decisive.values()]
    # A bound test that never produced a decisive result leaves the claim partly untested:
    # the other tests' passes cannot discharge it (an importorskip must not hide a failure).
    undecided = sorted(set(bound or ()) - {unparametrized(r.nodeid) for r in newest_decisive.values()})
    # Worst outcome first; among equals, the newest result speaks (the sorts are stable). Two
    # tests of one run tie on time: the first node id speaks, not the test that happened to have
    # the older decisive record, so the verdict cannot change when prune drops that record.
    judged.sort(key=lambda t: t[0].nodeid)
    judged.sort(key=lambda t: (t[0].finished_at, t[0].sequence, t[0].run_id), reverse=True)
    judged.sort(key=lambda t: _SEVERITY[t[1]])
    result, status, notes = judged[0]
    relied_on = tuple(r for r, _, _ in judged)
    controls = _control_verdicts(falsifier, [r for r, _, _ in judged]) if falsifier.controls else ()
    measured = {
        name: worst_value(values, falsifier.measurements.get(name))
        for name, values in sorted(result.measurements.items())
        if values
    }
    if status in (Status.DISCHARGED, Status.SUSPECT):
        verdict = _control_status(controls, judged, measured)
        if verdict is not None:
            return dataclasses.replace(verdict, relied_on=relied_on)
    if status is Status.DISCHARGED and undecided:
        skipped = [r for r in mine if unparametrized(r.nodeid) in undecided]
        gated = [r for r in skipped if r.gate]
        if gated:
            first, last = _first_saying(gated)
            why = first.skip_reason or f"host gate '{first.gate}' closed"
            return Verdict(
                Status.HOST_GATED, why, first, controls=controls, relied_on=(*relied_on, first, last)
            )
        why = (skipped[-1].skip_reason if skipped else None) or "never ran"
        return Verdict(
            Status.NOT_RUN,
            f"{undecided[0]} has no decisive result ({why}); the other tests alone cannot discharge it",
            controls=controls,
            relied_on=relied_on + tuple(skipped[-1:]),
        )
    if status is Status.DISCHARGED:
        blocking = _blocking_control(controls)
        if blocking is not None:
            return Verdict(blocking[0], blocking[1], result, measured, controls=controls, relied_on=relied_on)
    reason = {
        Status.DISCHARGED: "the newest decisive run passed and every measurement was plausible"
        + (
            ""
            if not controls
            else "; its control refuted"
            if len(controls) == 1
            else f"; all {len(controls)} controls refuted"
        ),
        Status.SUSPECT: "passed, but " + "; ".join(notes),
        Status.FALSIFIED: (result.failure or "; ".join(notes) or "the test failed"),
        Status.ERROR: "; ".join(notes) or "the test errored",
        Status.STALE: "; ".join(notes)
        or "the newest decisive result was recorded against an earlier definition of the falsifier",
    }[status]
    return Verdict(
        status,
        reason.splitlines()[0] if reason else "",
        result,
        measured,
        tuple(notes) if status is Status.SUSPECT else (),
        controls,
        relied_on,
    )


def _control_status(
    controls: tuple[ControlVerdict, ...],
    judged: list[tuple[TestResult, Status, list[str]]],
    measured: dict[str, float | None],
) -> Verdict | None:
    """VACUOUS when a control survived a passing falsifier; it outranks every milder verdict."""
    survived = [c for c in controls if c.outcome == "survived"]
    if not survived:
        return None
    c = survived[0]
    by = next((r for r, _, _ in judged if r.run_id == c.run_id), judged[0][0])
    others = f" (and {len(survived) - 1} more)" if len(survived) > 1 else ""
    why = (
        f"control {c.id!r} survived{others}: its run passed with the defect planted ({c.defect}); the "
        "falsifier cannot see it"
    )
    return Verdict(Status.VACUOUS, why, by, measured, controls=controls)


def _blocking_control(controls: tuple[ControlVerdict, ...]) -> tuple[Status, str] | None:
    """The status and reason of the first control that keeps a pass from discharging.

    An errored control first, else one never run; None when no control errored or went unrun.
    """
    for c in controls:
        if c.outcome == "error":
            return Status.ERROR, f"control {c.id!r} errored instead of reaching a verdict: {c.detail or '?'}"
    for c in controls:
        if c.outcome == "not-run":
            return (
                Status.NOT_RUN,
                f"control {c.id!r} has no verdict ({c.detail or 'not run'}); run the test with its controls",
            )
    return None


def contract_status(statuses: Iterable[Status]) -> ContractStatus:
    """A contract's status from its falsifiers' statuses.

    FALSIFIED if any is FALSIFIED or VACUOUS; ACTIVE_RUNTIME if all are DISCHARGED;
    DRAFT_PARTIAL_DISCHARGE if any is; else DRAFT.
    """
    statuses = list(statuses)
    if Status.FALSIFIED in statuses or Status.VACUOUS in statuses:
        return ContractStatus.FALSIFIED
    if statuses and all(s is Status.DISCHARGED for s in statuses):
        return ContractStatus.ACTIVE_RUNTIME
    if Status.DISCHARGED in statuses:
        return ContractStatus.DRAFT_PARTIAL_DISCHARGE
    return ContractStatus.DRAFT
