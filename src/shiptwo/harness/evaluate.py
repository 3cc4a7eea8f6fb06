"""Join validation with run evidence: every contract's falsifiers and their statuses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from shiptwo.harness.contract.findings import Finding, finding
from shiptwo.harness.contract.model import Contract, Falsifier
from shiptwo.harness.contract.validate import ValidationResult
from shiptwo.harness.covers import covered_files
from shiptwo.harness.evidence import RecordFromTheFuture, RunRecord, TestResult, read_evidence
from shiptwo.harness.status import ContractStatus, Status, Verdict, contract_status, falsifier_status


@dataclass(frozen=True)
class FalsifierReport:
    falsifier: Falsifier
    verdict: Verdict


@dataclass(frozen=True)
class ContractReport:
    contract: Contract
    status: ContractStatus
    falsifiers: tuple[FalsifierReport, ...]


@dataclass
class Evaluation:
    validation: ValidationResult
    contracts: list[ContractReport] = field(default_factory=list)
    evidence_findings: list[Finding] = field(default_factory=list)
    runs: int = 0
    # The readable run records, oldest first: the report plots each measurement's history from them.
    records: list[RunRecord] = field(default_factory=list, repr=False)

    @property
    def findings(self) -> list[Finding]:
        return sorted(self.validation.findings + self.evidence_findings)


def evaluate(
    validation: ValidationResult, evidence_dir: Path | Sequence[Path], *, now: datetime | None = None
) -> Evaluation:
    """Compute every falsifier's status from the run records under `evidence_dir` (one or several).

    Several directories are one body of evidence (`read_evidence`): the committed records and,
    say, a GPU host's records downloaded beside them in CI.

    A record that cannot be read, or that finished after `now` (default: this machine's clock),
    is a finding and decides nothing. Falsifiers that `cover` files are judged against those
    files as they are on disk now.
    """
    directories = [evidence_dir] if isinstance(evidence_dir, Path) else list(evidence_dir)
    records, errors = read_evidence(directories, now=now)
    out = Evaluation(validation, runs=len(records), records=records)
    for exc in errors:
        rule = "evidence-from-the-future" if isinstance(exc, RecordFromTheFuture) else "evidence-unreadable"
        out.evidence_findings.append(finding(rule, str(exc).split(":", 1)[0], 1, 1, str(exc)))
    results: list[TestResult] = [r for record in records for r in record.results()]
    by_falsifier: dict[str, list[TestResult]] = {}
    for r in results:
        for fid in r.falsifiers:
            by_falsifier.setdefault(fid, []).append(r)
    hashed: dict[tuple[str, ...], dict[str, str]] = {}  # falsifiers often cover the same files
    for contract in validation.contracts:
        reports = []
        for f in contract.falsifiers:
            bound = validation.markers.get(f.id, [])
            covered = None
            if f.covers:
                covered = hashed.get(f.covers) or hashed.setdefault(
                    f.covers, covered_files(validation.root, f.covers)
                )
            verdict = falsifier_status(
                f, bound_tests=bound, results=by_falsifier.get(f.id, []), covered=covered
            )
            reports.append(FalsifierReport(f, verdict))
        status = contract_status(r.verdict.status for r in reports)
        out.contracts.append(ContractReport(contract, status, tuple(reports)))
    return out


def absent_run(evaluation: Evaluation, report: FalsifierReport) -> str | None:
    """The run the YAML's `evidence:` names, where the evidence here cannot judge the written status.

    That is: the named record is in none of the evidence directories and no record here mentions
    the falsifier at all (a fresh clone of a project that does not commit its records). None
    where the evidence can judge it, which is every other case: a record that mentions the
    falsifier, or a written status that names no run, is judged as usual.
    """
    run = (report.falsifier.evidence or {}).get("run")
    verdict = report.verdict
    if not isinstance(run, str) or verdict.status is not Status.NOT_RUN or verdict.relied_on:
        return None
    if verdict.decided_by is not None or any(r.run_id == run for r in evaluation.records):
        return None
    return run


def standing_status(evaluation: Evaluation, report: FalsifierReport) -> Status:
    """The status `--check` holds a falsifier to: the computed one, or, where the evidence here
    cannot judge it (`absent_run`), the status written in the YAML, taken at its word."""
    written = report.falsifier.status
    if written in set(Status) and written != report.verdict.status and absent_run(evaluation, report):
        return Status(written)
    return report.verdict.status


def statuses_tally(evaluation: Evaluation) -> dict[str, int]:
    tally: dict[str, int] = {}
    for c in evaluation.contracts:
        for f in c.falsifiers:
            tally[f.verdict.status.value] = tally.get(f.verdict.status.value, 0) + 1
    return dict(sorted(tally.items(), key=lambda kv: list(Status).index(Status(kv[0]))))
