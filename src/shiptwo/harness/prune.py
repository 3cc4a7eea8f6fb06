"""`pv prune`: delete the run records that decide no current status.

Which records decide is the status computation's own answer (`Verdict.relied_on`, filled by
`status.falsifier_status`), not a second opinion kept here: every record some verdict relied
on stays, so `pv validate` computes the same statuses, and writes the same evidence, after a
prune as before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shiptwo.errors import EvidenceError, UsageError
from shiptwo.harness.contract.rules import Severity
from shiptwo.harness.evaluate import Evaluation
from shiptwo.harness.evidence import RunRecord


@dataclass(frozen=True)
class Kept:
    record: RunRecord
    reason: str  # why it stays, for a person
    falsifiers: tuple[str, ...] = ()  # the falsifiers whose status it helps decide


@dataclass(frozen=True)
class PrunePlan:
    kept: tuple[Kept, ...]
    removed: tuple[RunRecord, ...]


def deciding_runs(evaluation: Evaluation) -> dict[str, list[str]]:
    """run id -> the falsifiers whose current status the run's record helps decide, in contract order."""
    out: dict[str, list[str]] = {}
    for contract in evaluation.contracts:
        for report in contract.falsifiers:
            for result in report.verdict.relied_on:
                fids = out.setdefault(result.run_id, [])
                if report.falsifier.id not in fids:
                    fids.append(report.falsifier.id)
    return out


def plan_prune(evaluation: Evaluation, *, keep_newest: int = 0, keep_foreign: bool = False) -> PrunePlan:
    """Which records stay and which go.

    A record stays if it decides a current status, if it is among the `keep_newest` newest, or,
    with `keep_foreign` (contracts named one by one, not the whole directory), if it mentions a
    falsifier none of the evaluated contracts declares: it may decide a status elsewhere.
    Refuses (UsageError) while there are error findings: a broken contract or an unreadable
    record may hide which records decide.
    """
    errors = [f for f in evaluation.findings if f.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        raise UsageError(
            f"not pruning while there are {len(errors)} error finding(s) in the contracts or run records "
            f"(first: {first.path}:{first.line}: {first.rule} {first.message}); fix them first "
            "(`shiptwo pv validate` lists them)"
        )
    deciding = deciding_runs(evaluation)
    declared = {f.falsifier.id for c in evaluation.contracts for f in c.falsifiers}
    records = evaluation.records  # oldest first
    newest = {r.run_id for r in records[len(records) - keep_newest :]} if keep_newest > 0 else set()
    kept: list[Kept] = []
    removed: list[RunRecord] = []
    for record in records:
        fids = deciding.get(record.run_id)
        if fids:
            shown = ", ".join(fids[:3]) + (f" and {len(fids) - 3} more" if len(fids) > 3 else "")
            kept.append(Kept(record, f"decides {shown}", tuple(fids)))
        elif record.run_id in newest:
            kept.append(Kept(record, f"among the {keep_newest} newest (--keep)"))
        elif keep_foreign and (foreign := _foreign(record, declared)):
            kept.append(Kept(record, f"mentions {foreign}, which no contract checked here declares"))
        else:
            removed.append(record)
    return PrunePlan(tuple(kept), tuple(removed))


def _foreign(record: RunRecord, declared: set[str]) -> str | None:
    """The first falsifier id the record mentions that is not in `declared`, or None."""
    for result in record.results():
        for fid in result.falsifiers:
            if fid not in declared:
                return fid
    return None


def remove_records(plan: PrunePlan) -> list[Path]:
    """Delete the records `plan` removes, one unlink each (atomic per file); returns their paths.

    A record already gone (another prune, a person) is not an error: the plan's aim is met.
    """
    gone: list[Path] = []
    for record in plan.removed:
        try:
            os.unlink(record.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise EvidenceError(
                f"{record.path}: cannot delete run record: {exc.strerror or exc}; "
                f"{len(gone)} of {len(plan.removed)} deleted so far, the rest left as they were"
            ) from exc
        gone.append(record.path)
    return gone
