"""The pure status function, table-driven: each rule of the status table on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiptwo.harness.contract.model import Contract
from shiptwo.harness.evidence import ControlRun, TestResult
from shiptwo.harness.status import ContractStatus, Status, Verdict, contract_status, falsifier_status

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
                "measurements": {
                    "val_loss": {"unit": "nats", "pass": {"max": 9.38}, "plausible": {"min": 1.5, "max": 2.5}}
                },
            }
        ],
    },
    Path("c-v1.yaml"),
)
F = CONTRACT.falsifiers[0]
NODE = "falsifiers/test_x.py::test_x"


def result(
    outcome: str,
    at: str,
    *,
    node: str = NODE,
    loss: float | None = 2.0,
    gate: str | None = None,
    fp: str | None = None,
) -> TestResult:
    return TestResult(
        run_id=f"run-{at}",
        finished_at=at,
        commit="abc",
        host="h",
        nodeid=node,
        falsifiers=(F.id,),
        outcome=outcome,
        measurements={"val_loss": [loss]} if loss is not None and outcome == "passed" else {},
        fingerprints={F.id: fp or F.fingerprint},
        skip_reason=f"host gate '{gate}' closed: no" if gate else None,
        gate=gate,
    )


OTHER = "falsifiers/test_x.py::test_y"


def status(*results: TestResult, bound: list[str] | None = None) -> Status:
    return falsifier_status(F, bound_tests=[NODE] if bound is None else bound, results=results).status


def test_unbound_when_no_marker() -> None:
    assert status(result("passed", "1"), bound=[]) is Status.UNBOUND


def test_not_run_without_records() -> None:
    assert status() is Status.NOT_RUN


def test_plausible_pass_discharges_and_implausible_is_suspect() -> None:
    assert status(result("passed", "1", loss=2.0)) is Status.DISCHARGED
    assert status(result("passed", "1", loss=0.00081)) is Status.SUSPECT


def test_pass_range_violation_in_a_record_still_falsifies() -> None:
    # A record from a plugin that did not fail the test cannot launder a refuted number.
    assert status(result("passed", "1", loss=11.0)) is Status.FALSIFIED


def test_failed_and_errored() -> None:
    assert status(result("failed", "1")) is Status.FALSIFIED
    assert status(result("error", "1")) is Status.ERROR


def test_only_gated_skips_read_host_gated_with_reason() -> None:
    verdict = falsifier_status(F, bound_tests=[NODE], results=[result("skipped", "1", gate="cuda")])
    assert verdict.status is Status.HOST_GATED and "cuda" in verdict.reason


def test_plain_skips_are_not_run() -> None:
    assert status(result("skipped", "1")) is Status.NOT_RUN


@pytest.mark.parametrize("order", [1, -1])
def test_skip_never_demotes_a_decisive_result(order: int) -> None:
    results = [result("passed", "1"), result("skipped", "2", gate="cuda")][::order]
    assert status(*results) is Status.DISCHARGED


def test_newest_decisive_result_wins() -> None:
    assert status(result("failed", "1"), result("passed", "2")) is Status.DISCHARGED
    assert status(result("passed", "1"), result("failed", "2")) is Status.FALSIFIED


def test_worst_outcome_among_tests_wins() -> None:
    both = [NODE, OTHER]
    assert status(result("passed", "2"), result("failed", "1", node=OTHER), bound=both) is Status.FALSIFIED
    assert status(result("passed", "2"), result("error", "1", node=OTHER), bound=both) is Status.ERROR
    assert (
        status(result("passed", "2"), result("passed", "1", node=OTHER, loss=0.001), bound=both)
        is Status.SUSPECT
    )
    assert status(result("passed", "2"), result("passed", "1", node=OTHER), bound=both) is Status.DISCHARGED


def test_a_bound_test_that_never_decided_blocks_discharge() -> None:
    both = [NODE, OTHER]
    # An importorskip (or -k) kept test_y from ever running: test_x's pass alone proves too little.
    verdict = falsifier_status(
        F, bound_tests=both, results=[result("passed", "2"), result("skipped", "2", node=OTHER)]
    )
    assert verdict.status is Status.NOT_RUN and OTHER in verdict.reason
    assert status(result("passed", "2"), bound=both) is Status.NOT_RUN
    assert (
        status(result("passed", "2"), result("skipped", "2", node=OTHER, gate="cuda"), bound=both)
        is Status.HOST_GATED
    )
    # It cannot hide a refutation either.
    assert status(result("failed", "2"), bound=both) is Status.FALSIFIED


def test_non_finite_measurements_refute() -> None:
    assert status(result("passed", "1", loss=float("nan"))) is Status.FALSIFIED
    r = result("passed", "1")
    assert status(TestResult(**{**r.__dict__, "measurements": {"val_loss": [None]}})) is Status.FALSIFIED


def test_results_of_tests_that_no_longer_claim_it_are_ignored() -> None:
    assert (
        status(result("failed", "1", node="falsifiers/old.py::test_gone"), result("passed", "2"))
        is Status.DISCHARGED
    )


def test_parametrized_node_ids_match_their_function() -> None:
    assert status(result("failed", "1", node=NODE + "[bf16]")) is Status.FALSIFIED


def test_evidence_against_another_definition_is_stale() -> None:
    assert status(result("passed", "1", fp="0" * 64)) is Status.STALE
    # Fresh evidence for the current definition replaces it.
    assert status(result("passed", "1", fp="0" * 64), result("passed", "2")) is Status.DISCHARGED


def test_verdict_keeps_the_deciding_numbers() -> None:
    verdict = falsifier_status(F, bound_tests=[NODE], results=[result("passed", "1", loss=0.00081)])
    assert verdict.measured == {"val_loss": 0.00081}
    assert verdict.suspects == ("val_loss=0.00081 nats outside plausible [1.5, 2.5]",)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([Status.DISCHARGED, Status.FALSIFIED], ContractStatus.FALSIFIED),
        ([Status.DISCHARGED, Status.VACUOUS], ContractStatus.FALSIFIED),
        ([Status.DISCHARGED, Status.DISCHARGED], ContractStatus.ACTIVE_RUNTIME),
        ([Status.DISCHARGED, Status.HOST_GATED], ContractStatus.DRAFT_PARTIAL_DISCHARGE),
        ([Status.SUSPECT, Status.NOT_RUN], ContractStatus.DRAFT),
        ([], ContractStatus.DRAFT),
    ],
)
def test_contract_status(statuses: list[Status], expected: ContractStatus) -> None:
    assert contract_status(statuses) is expected


# Outcomes that never reached their end, missing measurements, ordering.


def test_a_crashed_test_is_an_error_and_demotes_an_older_pass() -> None:
    verdict = falsifier_status(F, bound_tests=[NODE], results=[result("passed", "1"), result("crashed", "2")])
    assert verdict.status is Status.ERROR and "never reached its end (crashed)" in verdict.reason


def test_an_interrupted_test_decides_nothing() -> None:
    verdict = falsifier_status(F, bound_tests=[NODE], results=[result("interrupted", "1")])
    assert verdict.status is Status.NOT_RUN and "interrupted" in verdict.reason
    # An earlier complete run still speaks; the interrupted one neither discharges nor demotes.
    assert status(result("failed", "1"), result("interrupted", "2")) is Status.FALSIFIED


def test_a_pass_that_did_not_record_its_measurements_is_an_error() -> None:
    r = result("passed", "1")
    verdict = falsifier_status(
        F, bound_tests=[NODE], results=[TestResult(**{**r.__dict__, "measurements": {}})]
    )
    assert verdict.status is Status.ERROR
    assert verdict.reason == "the test passed without recording declared measurement(s) val_loss"


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [("failed", "passed", Status.DISCHARGED), ("passed", "failed", Status.FALSIFIED)],
)
def test_equal_times_are_ordered_by_sequence_not_by_run_id(first: str, second: str, expected: Status) -> None:
    older = TestResult(
        **{**result(first, "2026-01-01T00:00:00.000000Z").__dict__, "run_id": "zzz", "sequence": 1}
    )
    newer = TestResult(
        **{**result(second, "2026-01-01T00:00:00.000000Z").__dict__, "run_id": "aaa", "sequence": 2}
    )
    assert status(older, newer) is expected


def test_the_real_run_of_a_controlled_test_continues_its_history_before_controls() -> None:
    # Before controls the node was `test_x`; with them its real run is `test_x[real]`: one test.
    assert status(result("failed", "1"), result("passed", "2", node=NODE + "[real]")) is Status.DISCHARGED
    assert (
        status(result("passed", "1", node=NODE + "[bf16-real]"), result("failed", "2", node=NODE + "[bf16]"))
        is Status.FALSIFIED
    )


# Controls.

CONTROLLED = Contract.from_data(
    {
        "schema": "shiptwo.contract/v1",
        "id": "c-v1",
        "version": "1.0.0",
        "title": "t",
        "obligations": [{"id": "O-001", "statement": "s"}],
        "falsifiers": [
            {
                "id": "FALSIFY-Y-001",
                "obligations": ["O-001"],
                "prediction": "the model loads every weight",
                "controls": [
                    {"id": "qkv-bias-random", "defect": "q/k/v biases left at init"},
                    {"id": "tied-head-random", "defect": "the tied head left random"},
                ],
                "covers": ["src/model.py"],
            }
        ],
    },
    Path("c-v1.yaml"),
)
G = CONTROLLED.falsifiers[0]
CODE = {"src/model.py": "a" * 64}


def controlled(
    outcome: str,
    at: str,
    *,
    node: str = NODE + "[real]",
    covers: dict[str, str] | None = CODE,
    **controls: str,
) -> TestResult:
    return TestResult(
        run_id=f"run-{at}",
        finished_at=at,
        commit="abc",
        host="h",
        nodeid=node,
        falsifiers=(G.id,),
        outcome=outcome,
        measurements={},
        fingerprints={G.id: G.fingerprint},
        controls={G.id: {cid.replace("_", "-"): ControlRun(o, f"why {cid}") for cid, o in controls.items()}},
        covers={G.id: covers} if covers is not None else {},
    )


def judge(
    *results: TestResult, bound: list[str] | None = None, covered: dict[str, str] | None = CODE
) -> Verdict:
    return falsifier_status(
        G, bound_tests=[NODE] if bound is None else bound, results=results, covered=covered
    )


def test_control_fixture_value_compares_equal_to_its_id() -> None:
    control = G.controls[0]
    assert control == "qkv-bias-random" and control != "tied-head-random" and control == "qkv-bias-random"
    assert control in {"qkv-bias-random"} and str(control) == "qkv-bias-random"
    assert (control.id, control.defect, control.falsifier) == (
        "qkv-bias-random",
        "q/k/v biases left at init",
        G.id,
    )


def test_every_control_refuted_discharges() -> None:
    verdict = judge(controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="refuted"))
    assert verdict.status is Status.DISCHARGED and verdict.refuted == 2
    assert [(c.id, c.outcome) for c in verdict.controls] == [
        ("qkv-bias-random", "refuted"),
        ("tied-head-random", "refuted"),
    ]


def test_a_surviving_control_makes_the_falsifier_vacuous() -> None:
    verdict = judge(controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="survived"))
    assert verdict.status is Status.VACUOUS and verdict.refuted == 1
    assert verdict.reason.startswith(
        "control 'tied-head-random' survived: its run passed with the defect planted (the tied head left "
        "random)"
    )
    assert contract_status([Status.DISCHARGED, Status.VACUOUS]) is ContractStatus.FALSIFIED


def test_a_control_that_errored_or_never_ran_blocks_discharge() -> None:
    errored = judge(controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="error"))
    assert errored.status is Status.ERROR and "control 'tied-head-random' errored" in errored.reason
    missing = judge(controlled("passed", "1", qkv_bias_random="refuted"))
    assert missing.status is Status.NOT_RUN
    assert (
        missing.reason
        == "control 'tied-head-random' has no verdict (run run-1 has no control run for it); run the test "
        "with its controls"
    )
    skipped = judge(controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="not-run"))
    assert skipped.status is Status.NOT_RUN


def test_controls_count_only_from_the_deciding_run() -> None:
    # Refuted once, in an older run: the newest run (other code) did not watch it fail.
    verdict = judge(
        controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="refuted"),
        controlled("passed", "2"),
    )
    assert verdict.status is Status.NOT_RUN and verdict.refuted == 0
    # A survivor from an older run is forgotten once the newest run catches it.
    fixed = judge(
        controlled("passed", "1", qkv_bias_random="survived", tied_head_random="survived"),
        controlled("passed", "2", qkv_bias_random="refuted", tied_head_random="refuted"),
    )
    assert fixed.status is Status.DISCHARGED


def test_a_control_is_refuted_when_any_bound_test_catches_it() -> None:
    other = "falsifiers/test_x.py::test_y"
    verdict = judge(
        controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="not-run"),
        controlled(
            "passed", "1", node=other + "[real]", qkv_bias_random="not-run", tied_head_random="refuted"
        ),
        bound=[NODE, other],
    )
    assert verdict.status is Status.DISCHARGED


def test_a_refuted_prediction_outranks_its_controls() -> None:
    assert judge(controlled("failed", "1", qkv_bias_random="survived")).status is Status.FALSIFIED


def test_edited_covered_code_makes_the_evidence_stale() -> None:
    run = controlled("passed", "1", qkv_bias_random="refuted", tied_head_random="refuted")
    edited = judge(run, covered={"src/model.py": "b" * 64, "src/new.py": "c" * 64})
    assert edited.status is Status.STALE
    assert edited.reason == "covered code changed since run run-1: src/model.py (edited), src/new.py (new)"
    assert judge(run, covered={}).reason == "covered code changed since run run-1: src/model.py (deleted)"
    assert judge(run, covered=None).status is Status.DISCHARGED  # in-session: nothing to compare


def test_a_record_without_a_digest_of_the_covered_code_is_stale() -> None:
    verdict = judge(
        controlled("passed", "1", covers=None, qkv_bias_random="refuted", tied_head_random="refuted")
    )
    assert verdict.status is Status.STALE and "recorded no digest of the files it covers" in verdict.reason
