"""Render an evaluation as text for people, JSON for scripts, or GitHub workflow annotations."""

from __future__ import annotations

import re
from typing import Any

from shiptwo import jsonout
from shiptwo.fileio import display_path
from shiptwo.harness.contract.findings import Finding
from shiptwo.harness.contract.rules import Severity
from shiptwo.harness.evaluate import Evaluation, statuses_tally
from shiptwo.harness.status import Status, Verdict

# The falsifier statuses that need a person, each with its alert level and what to do about it:
# annotations in `--format github`, results in `--format sarif`.
# FALSIFIED and VACUOUS fail `pv validate`; ERROR is a broken harness; SUSPECT and STALE are
# passes that do not count until a person looks or re-runs. NOT-RUN, HOST-GATED and UNBOUND say
# nothing is known yet, which is not an alert.
ALERTS: dict[Status, tuple[str, str]] = {
    Status.FALSIFIED: ("error", "The newest decisive run refuted the falsifier's prediction."),
    Status.VACUOUS: (
        "error",
        "A control survived: the test passed with its defect planted, so it cannot see that defect.",
    ),
    Status.ERROR: ("error", "The bound test errored or crashed instead of reaching a verdict."),
    Status.SUSPECT: (
        "warning",
        "Passed, but a measurement lies outside its plausible range: check the methodology.",
    ),
    Status.STALE: (
        "warning",
        "The evidence predates an edit of the falsifier or of the code it covers; re-run its tests.",
    ),
}


# What a terminal or a log must never receive raw from a YAML key, a file name or a record: C0 and
# C1 controls (a newline forges a line, ESC drives the terminal), DEL, the Unicode line
# separators, and the bidirectional overrides that reorder what a reader sees. Tab is harmless.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def visible(text: str) -> str:
    """`text` on one line with every control character written as an escape: `\\n`, `\\x1b`, `\\u202e`."""
    return _UNSAFE.sub(_escape_one, text)


def _escape_one(m: re.Match[str]) -> str:
    char = m.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _finding_text(f: Finding) -> str:
    return f"{f.path}:{f.line}:{f.column}: {f.severity.value} {f.rule} {f.name}: {f.message}"


def summary_line(ev: Evaluation) -> str:
    findings = ev.findings
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = len(findings) - errors
    falsifiers = sum(len(c.falsifiers) for c in ev.contracts)
    tally = ", ".join(f"{n} {s}" for s, n in statuses_tally(ev).items()) or "none"
    skipped = len(ev.validation.skipped)
    skip = f"; {skipped} non-contract YAML skipped" if skipped else ""
    return (
        f"{len(ev.contracts)} contracts, {falsifiers} falsifiers ({tally}) from {ev.runs} run records; "
        f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}{skip}"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def render_text(ev: Evaluation, *, verbose: bool = True) -> str:
    out: list[str] = [_finding_text(f) for f in ev.findings]
    if verbose:
        for c in ev.contracts:
            done = sum(f.verdict.status is Status.DISCHARGED for f in c.falsifiers)
            out.append(
                f"{c.contract.id} {c.contract.version}  {c.status.value}  ({done}/{len(c.falsifiers)} "
                "discharged)"
            )
            width = max(len(f.verdict.status.value) for f in c.falsifiers)
            for f in c.falsifiers:
                line = f"  {f.verdict.status.value:<{width}}  {f.falsifier.id}"
                if f.falsifier.controls:
                    line += f"  [{controls_text(f.verdict)}]"
                if f.verdict.status not in (Status.DISCHARGED, Status.UNBOUND):
                    line += f"  ({f.verdict.reason})"
                out.append(line)
    out.append(summary_line(ev))
    # Ids, reasons, messages and paths quote the contracts, records and file names they came from.
    return "\n".join(map(visible, out))


def controls_text(verdict: Verdict) -> str:
    """`2/3 controls refuted` (watched failing on their defect), `-` for a falsifier without controls."""
    if not verdict.controls:
        return "-"
    return f"{verdict.refuted}/{len(verdict.controls)} controls refuted"


def render_github(ev: Evaluation) -> str:
    """GitHub Actions workflow commands: one annotation per finding and per refuted falsifier."""

    def esc(text: str) -> str:
        # Controls made visible first (no raw ESC reaches the log), then the workflow-command escapes.
        return visible(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:  # property values also escape the separators
        return esc(text).replace(":", "%3A").replace(",", "%2C")

    out = []
    for f in ev.findings:
        level = "error" if f.severity is Severity.ERROR else "warning"
        out.append(
            f"::{level} file={prop(f.path)},line={f.line},col={f.column},title={f.rule} "
            f"{f.name}::{esc(f.message)}"
        )
    for c in ev.contracts:
        for r in c.falsifiers:
            alert = ALERTS.get(r.verdict.status)
            if alert is not None:
                level = alert[0]
                where = prop(display_path(c.contract.path, ev.validation.root))
                out.append(
                    f"::{level} file={where},title={prop(r.falsifier.id)} {r.verdict.status.value}::"
                    f"{esc(r.verdict.reason)}"
                )
    out.append(esc(summary_line(ev)))
    return "\n".join(out)


def to_json(ev: Evaluation) -> dict[str, Any]:
    contracts = []
    for c in ev.contracts:
        falsifiers = []
        for f in c.falsifiers:
            v = f.verdict
            item: dict[str, Any] = {
                "id": f.falsifier.id,
                "status": v.status.value,
                "reason": v.reason,
                "obligations": list(f.falsifier.obligations),
                "requires": list(f.falsifier.requires),
                "tests": ev.validation.markers.get(f.falsifier.id, []),
                "measured": v.measured,
                "written_status": f.falsifier.status,
                "controls": [
                    {
                        "id": cv.id,
                        "defect": cv.defect,
                        "outcome": cv.outcome,
                        "detail": cv.detail,
                        "run": cv.run_id,
                    }
                    for cv in v.controls
                ],
                "covers": list(f.falsifier.covers),
            }
            if v.decided_by is not None:
                item["run"] = v.decided_by.run_id
                item["commit"] = v.decided_by.commit
                item["at"] = v.decided_by.finished_at
            falsifiers.append(item)
        contracts.append(
            {
                "id": c.contract.id,
                "path": display_path(c.contract.path, ev.validation.root),
                "version": c.contract.version,
                "status": c.status.value,
                "written_status": c.contract.status,
                "falsifiers": falsifiers,
                "valid": True,
            }
        )
    for path, data in ev.validation.invalid:
        # Still listed, so a consumer sees the contract exists; its findings say why it has no status.
        contracts.append(
            {
                "id": data.get("id") if isinstance(data.get("id"), str) else None,
                "path": display_path(path, ev.validation.root),
                "version": data.get("version") if isinstance(data.get("version"), str) else None,
                "status": None,
                "written_status": data.get("status") if isinstance(data.get("status"), str) else None,
                "falsifiers": [],
                "valid": False,
            }
        )
    return {
        "contracts": contracts,
        "findings": [f.to_json() for f in ev.findings],
        "summary": {
            "contracts": len(ev.contracts),
            "falsifiers": statuses_tally(ev),
            "controls": {
                "declared": sum(len(f.verdict.controls) for c in ev.contracts for f in c.falsifiers),
                "refuted": sum(f.verdict.refuted for c in ev.contracts for f in c.falsifiers),
            },
            "runs": ev.runs,
            "skipped_files": [display_path(p, ev.validation.root) for p in ev.validation.skipped],
        },
    }


def render_json(ev: Evaluation) -> str:
    return jsonout.dumps(to_json(ev), indent=2)
