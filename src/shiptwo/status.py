"""Falsifier and contract status, computed from run evidence alone.

One pure function decides a falsifier's status (the plugin's summary and `pv validate` both
call it), so the two can never disagree. The rules (shared/specs/contract-format.md):

- UNBOUND: no test carries the marker. NOT-RUN: bound, but no run mentions it.
- Per test, the newest decisive (non-skipped) result counts; a skip never demotes a decisive
  result from another host. Among the falsifier's tests the worst outcome wins.
- A pass with a measurement outside its plausible range is NUMERICALLY-PASSED-METHODOLOGY-SUSPECT:
  a number that passes a threshold is not evidence if no real system could produce it.
- A decisive result recorded against another definition of the falsifier is STALE.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from shiptwo.contract.model import Falsifier, Measurement, Range
from shiptwo.evidence import TestResult


class Status(str, Enum):
    UNBOUND = "UNBOUND"
    NOT_RUN = "NOT-RUN"
    HOST_GATED = "HOST-GATED"
    DISCHARGED = "DISCHARGED"
    SUSPECT = "NUMERICALLY-PASSED-METHODOLOGY-SUSPECT"
    FALSIFIED = "FALSIFIED"
    ERROR = "ERROR"
    STALE = "STALE"


class ContractStatus(str, Enum):
    DRAFT = "DRAFT"
    DRAFT_PARTIAL_DISCHARGE = "DRAFT_PARTIAL_DISCHARGE"
    ACTIVE_RUNTIME = "ACTIVE_RUNTIME"
    FALSIFIED = "FALSIFIED"


# Worse outcomes first: a refuted prediction outranks a broken harness outranks a suspect pass.
_SEVERITY = {Status.FALSIFIED: 0, Status.ERROR: 1, Status.SUSPECT: 2, Status.STALE: 3, Status.DISCHARGED: 4}


@dataclass(frozen=True)
class Verdict:
    """A falsifier's status, the result that decided it, and why."""

    status: Status
    reason: str = ""
    decided_by: TestResult | None = None
    measured: dict[str, float | None] = field(default_factory=dict, hash=False)
    suspects: tuple[str, ...] = ()  # "name=value outside plausible [lo, hi]"


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
        sides = [v - r.min if r.min is not None else float("inf"), r.max - v if r.max is not None else float("inf")]
        return min(sides)

    return min(finite, key=margin)


def _decisive_status(result: TestResult, falsifier: Falsifier) -> tuple[Status, list[str]]:
    if result.fingerprints.get(falsifier.id, falsifier.fingerprint) != falsifier.fingerprint:
        return Status.STALE, []
    if result.outcome == "failed":
        return Status.FALSIFIED, []
    if result.outcome == "error":
        return Status.ERROR, []
    failures, suspects = judge_measurements(falsifier.measurements, result.measurements)
    if failures:  # recorded by an old plugin that did not fail the test; the numbers still refute it
        return Status.FALSIFIED, failures
    if suspects:
        return Status.SUSPECT, suspects
    return Status.DISCHARGED, []


def falsifier_status(
    falsifier: Falsifier, *, bound_tests: Iterable[str] | None, results: Iterable[TestResult]
) -> Verdict:
    """Decide one falsifier's status from every recorded result (any order).

    `bound_tests` are the node ids whose markers claim the falsifier now (None: unknown, trust
    the records); results of tests that no longer claim it are ignored.
    """
    bound = set(bound_tests) if bound_tests is not None else None
    if bound is not None and not bound:
        return Verdict(Status.UNBOUND, "no test carries @pytest.mark.falsifier for it")
    mine = [r for r in results if falsifier.id in r.falsifiers and (bound is None or r.nodeid.split("[", 1)[0] in bound)]
    if not mine:
        return Verdict(Status.NOT_RUN, "bound, but no run record mentions it")
    mine.sort(key=lambda r: (r.finished_at, r.run_id))
    newest_decisive: dict[str, TestResult] = {}
    for r in mine:
        if r.outcome != "skipped":
            newest_decisive[r.nodeid] = r
    if not newest_decisive:
        newest = mine[-1]
        gated = [r for r in mine if r.gate]
        if gated:
            last = gated[-1]
            return Verdict(Status.HOST_GATED, last.skip_reason or f"host gate '{last.gate}' closed", last)
        return Verdict(Status.NOT_RUN, f"every run skipped it: {newest.skip_reason or 'no reason given'}", newest)
    judged = [(r, *_decisive_status(r, falsifier)) for r in newest_decisive.values()]
    # A bound test that never produced a decisive result leaves the claim partly untested:
    # the other tests' passes cannot discharge it (an importorskip must not hide a failure).
    undecided = sorted({n for n in bound or ()} - {r.nodeid.split("[", 1)[0] for r in newest_decisive.values()})
    # Worst outcome first; among equals, the newest result speaks (both sorts are stable).
    judged.sort(key=lambda t: (t[0].finished_at, t[0].run_id), reverse=True)
    judged.sort(key=lambda t: _SEVERITY[t[1]])
    result, status, notes = judged[0]
    if status is Status.DISCHARGED and undecided:
        skipped = [r for r in mine if r.nodeid.split("[", 1)[0] in undecided]
        gated = [r for r in skipped if r.gate]
        if gated:
            return Verdict(Status.HOST_GATED, gated[-1].skip_reason or f"host gate '{gated[-1].gate}' closed", gated[-1])
        why = skipped[-1].skip_reason if skipped else "never ran"
        return Verdict(Status.NOT_RUN, f"{undecided[0]} has no decisive result ({why}); the other tests alone cannot discharge it")
    measured = {
        name: worst_value(values, falsifier.measurements.get(name))
        for name, values in sorted(result.measurements.items())
        if values
    }
    reason = {
        Status.DISCHARGED: "the newest decisive run passed and every measurement was plausible",
        Status.SUSPECT: "passed, but " + "; ".join(notes),
        Status.FALSIFIED: (result.failure or "; ".join(notes) or "the test failed"),
        Status.ERROR: "the test errored in setup or teardown: " + (result.failure or "?"),
        Status.STALE: "the newest decisive result was recorded against an earlier definition of the falsifier",
    }[status]
    return Verdict(status, reason.splitlines()[0] if reason else "", result, measured, tuple(notes) if status is Status.SUSPECT else ())


def contract_status(statuses: Iterable[Status]) -> ContractStatus:
    """FALSIFIED if any is; ACTIVE_RUNTIME if all are DISCHARGED; PARTIAL if any is; else DRAFT."""
    statuses = list(statuses)
    if Status.FALSIFIED in statuses:
        return ContractStatus.FALSIFIED
    if statuses and all(s is Status.DISCHARGED for s in statuses):
        return ContractStatus.ACTIVE_RUNTIME
    if Status.DISCHARGED in statuses:
        return ContractStatus.DRAFT_PARTIAL_DISCHARGE
    return ContractStatus.DRAFT
