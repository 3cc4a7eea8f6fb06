"""`Verdict.relied_on`, the records `pv prune` keeps: any set of run records that holds them gives
the same verdict, whatever else it drops. A property over random histories of two bound tests."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.harness.contract.model import Contract
from shiptwo.harness.evidence import CONTROL_OUTCOMES, OUTCOMES, ControlRun, TestResult
from shiptwo.harness.status import Verdict, falsifier_status

CONTRACT = Contract.from_data(
    {
        "schema": "shiptwo.contract/v1",
        "id": "c-v1",
        "version": "1.0.0",
        "title": "t",
        "obligations": [{"id": "O-001", "statement": "s"}],
        "falsifiers": [
            {
                "id": "FALSIFY-X-001",
                "obligations": ["O-001"],
                "prediction": "val loss is plausible",
                "controls": [{"id": "zeroed", "defect": "weights zeroed"}],
                "measurements": {
                    "val_loss": {"unit": "nats", "pass": {"max": 9.38}, "plausible": {"min": 1.5, "max": 2.5}}
                },
            }
        ],
    },
    Path("c-v1.yaml"),
)
F = CONTRACT.falsifiers[0]
NODES = ("falsifiers/test_x.py::test_x", "falsifiers/test_x.py::test_y")


@st.composite
def result_of(draw: st.DrawFn, run: int, node: str, outcomes: tuple[str, ...]) -> TestResult:
    outcome = draw(st.sampled_from(outcomes))
    gate = draw(st.sampled_from([None, "cuda", "qwen-artifacts"])) if outcome == "skipped" else None
    control = draw(st.sampled_from((None, *CONTROL_OUTCOMES)))
    return TestResult(
        run_id=f"run-{run:03d}",
        finished_at=f"2026-11-30T12:{run // 60:02d}:{run % 60:02d}.000000Z",
        commit="abc",
        host="h",
        nodeid=node,
        falsifiers=(F.id,),
        outcome=outcome,
        measurements={"val_loss": [draw(st.sampled_from([2.0, 0.001, 50.0]))]} if outcome == "passed" else {},
        fingerprints={F.id: draw(st.sampled_from([F.fingerprint, "0" * 64]))},
        skip_reason=draw(st.sampled_from(["no GPU", "no snapshot"])) if outcome == "skipped" else None,
        gate=gate,
        failure="boom" if outcome in ("failed", "error", "crashed", "interrupted") else None,
        controls={F.id: {"zeroed": ControlRun(control)}} if control else {},
    )


@st.composite
def history(draw: st.DrawFn) -> list[TestResult]:
    """Runs oldest first; each ran one or both bound tests. Histories of skips alone, and of passes
    and skips, are drawn as often as any mix: they are where the deciding skip is chosen."""
    outcomes = draw(st.sampled_from([OUTCOMES, ("skipped", "interrupted"), ("skipped", "passed")]))
    results = []
    for run in range(draw(st.integers(1, 8))):
        nodes = draw(st.sampled_from([NODES[:1], NODES[1:], NODES]))
        results += [draw(result_of(run, node, outcomes)) for node in nodes]
    return results


def shape(v: Verdict) -> tuple[object, ...]:
    return (v.status, v.reason, v.decided_by.run_id if v.decided_by else None, v.measured, v.controls)


@settings(max_examples=300, deadline=None)
@given(history(), st.data())
def test_the_records_a_verdict_relied_on_decide_it_alone(
    results: list[TestResult], data: st.DataObject
) -> None:
    bound = list(data.draw(st.sampled_from([NODES[:1], NODES])))
    before = falsifier_status(F, bound_tests=bound, results=results)
    runs = sorted({r.run_id for r in results})
    kept = {r.run_id for r in before.relied_on} | set(data.draw(st.lists(st.sampled_from(runs))))
    after = falsifier_status(F, bound_tests=bound, results=[r for r in results if r.run_id in kept])
    assert shape(after) == shape(before)


def test_a_repeated_skip_keeps_the_first_as_the_deciding_run() -> None:
    def skip(run: int, reason: str) -> TestResult:
        return TestResult(
            f"run-{run}",
            f"2026-11-30T12:00:0{run}.000000Z",
            "abc",
            "h",
            NODES[0],
            (F.id,),
            "skipped",
            {},
            {},
            skip_reason=reason,
            gate="cuda",
        )

    verdict = falsifier_status(F, bound_tests=NODES[:1], results=[skip(1, "no GPU"), skip(2, "no GPU")])
    assert verdict.decided_by is not None and verdict.decided_by.run_id == "run-1"
    assert {r.run_id for r in verdict.relied_on} == {"run-1", "run-2"}
    # A skip that says something else is news: it decides.
    verdict = falsifier_status(
        F, bound_tests=NODES[:1], results=[skip(1, "no GPU"), skip(2, "driver too old")]
    )
    assert verdict.decided_by is not None and verdict.decided_by.run_id == "run-2"


def test_two_tests_of_one_run_pick_the_same_speaker_whatever_older_records_survive() -> None:
    """Found by the property: both tests of the newest run are STALE, and which one's measurement
    the verdict reported depended on which test had the older decisive record, which prune drops."""

    def passed(run: int, node: str, val_loss: float, fingerprint: str) -> TestResult:
        return TestResult(
            f"run-{run}",
            f"2026-11-30T12:00:0{run}.000000Z",
            "abc",
            "h",
            node,
            (F.id,),
            "passed",
            {"val_loss": [val_loss]},
            {F.id: fingerprint},
        )

    old = passed(1, NODES[1], 2.0, F.fingerprint)
    newest = [passed(2, NODES[0], 2.0, "0" * 64), passed(2, NODES[1], 0.001, "0" * 64)]
    before = falsifier_status(F, bound_tests=NODES, results=[old, *newest])
    assert before.status == "STALE" and {r.run_id for r in before.relied_on} == {"run-2"}
    after = falsifier_status(F, bound_tests=NODES, results=newest)
    assert shape(after) == shape(before)
    assert before.decided_by is not None and before.decided_by.nodeid == NODES[0]
    assert before.measured == {"val_loss": 2.0}
