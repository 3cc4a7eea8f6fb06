"""The `shiptwo falsifiers` section of pytest's terminal summary.

The status of every falsifier the session touched, computed by the same function `pv validate`
uses (over this session's results alone), then what each control run's planted defect did, and
where the run record went.
"""

from __future__ import annotations

from typing import Any

from shiptwo.fileio import display_path
from shiptwo.harness.evidence import TestResult, control_runs, utc_now
from shiptwo.harness.session import State
from shiptwo.harness.status import Status, falsifier_status

# Shown in yellow, not red: the host could not run it, or nothing ran it.
_MILD = (Status.HOST_GATED, Status.NOT_RUN)
# The statuses that get a line of their own, worst first.
_LISTED = (Status.FALSIFIED, Status.VACUOUS, Status.SUSPECT, Status.ERROR, Status.NOT_RUN, Status.HOST_GATED)


def write_summary(state: State, tr: Any) -> None:
    """Write the section on the terminal reporter `tr`; nothing when no bound test ran."""
    if not state.results:
        return
    results = _session_results(state)
    touched = sorted({fid for r in results for fid in r.falsifiers if fid in state.falsifiers})
    tally: dict[Status, list[tuple[str, str]]] = {}
    for fid in touched:
        verdict = falsifier_status(state.falsifiers[fid], bound_tests=None, results=results)
        tally.setdefault(verdict.status, []).append((fid, verdict.reason))
    tr.section("shiptwo falsifiers")
    order = [s for s in Status if s in tally]
    tr.write_line(
        f"{len(touched)} falsifiers in this session: "
        + ", ".join(f"{len(tally[s])} {s.value}" for s in order)
    )
    for status in _LISTED:
        for fid, reason in tally.get(status, []):
            tr.write_line(
                f"  {status.value}: {fid}: {reason}", red=status not in _MILD, yellow=status in _MILD
            )
    _control_summary(state, tr)
    error = state.record_error
    if error:
        tr.write_line(
            f"shiptwo: ERROR: run record not written: {error}; the results above stand, "
            "but no evidence was kept",
            red=True,
        )
    elif state.record_path is not None:
        tr.write_line(f"run record: {display_path(state.record_path, state.root)}")
    elif not state.record:
        tr.write_line("run record: not written (--shiptwo-no-record)")


def _session_results(state: State) -> list[TestResult]:
    """This session's test entries as the status function reads results (null measurements dropped)."""
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
            controls=control_runs(e.get("controls", {})),
        )
        for e in state.results.values()
    ]


def _control_summary(state: State, tr: Any) -> None:
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
