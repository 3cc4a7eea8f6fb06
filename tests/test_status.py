"""The pure status function, table-driven: each rule of the status table on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiptwo.contract.model import Contract
from shiptwo.evidence import TestResult
from shiptwo.status import ContractStatus, Status, contract_status, falsifier_status

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
                "measurements": {"val_loss": {"unit": "nats", "pass": {"max": 9.38}, "plausible": {"min": 1.5, "max": 2.5}}},
            }
        ],
    },
    Path("c-v1.yaml"),
)
F = CONTRACT.falsifiers[0]
NODE = "falsifiers/test_x.py::test_x"


def result(outcome: str, at: str, *, node: str = NODE, loss: float | None = 2.0, gate: str | None = None, fp: str | None = None) -> TestResult:
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
    assert status(result("passed", "2"), result("passed", "1", node=OTHER, loss=0.001), bound=both) is Status.SUSPECT
    assert status(result("passed", "2"), result("passed", "1", node=OTHER), bound=both) is Status.DISCHARGED


def test_a_bound_test_that_never_decided_blocks_discharge() -> None:
    both = [NODE, OTHER]
    # An importorskip (or -k) kept test_y from ever running: test_x's pass alone proves too little.
    verdict = falsifier_status(F, bound_tests=both, results=[result("passed", "2"), result("skipped", "2", node=OTHER)])
    assert verdict.status is Status.NOT_RUN and OTHER in verdict.reason
    assert status(result("passed", "2"), bound=both) is Status.NOT_RUN
    assert status(result("passed", "2"), result("skipped", "2", node=OTHER, gate="cuda"), bound=both) is Status.HOST_GATED
    # It cannot hide a refutation either.
    assert status(result("failed", "2"), bound=both) is Status.FALSIFIED


def test_non_finite_measurements_refute() -> None:
    assert status(result("passed", "1", loss=float("nan"))) is Status.FALSIFIED
    r = result("passed", "1")
    assert status(TestResult(**{**r.__dict__, "measurements": {"val_loss": [None]}})) is Status.FALSIFIED


def test_results_of_tests_that_no_longer_claim_it_are_ignored() -> None:
    assert status(result("failed", "1", node="falsifiers/old.py::test_gone"), result("passed", "2")) is Status.DISCHARGED


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
        ([Status.DISCHARGED, Status.DISCHARGED], ContractStatus.ACTIVE_RUNTIME),
        ([Status.DISCHARGED, Status.HOST_GATED], ContractStatus.DRAFT_PARTIAL_DISCHARGE),
        ([Status.SUSPECT, Status.NOT_RUN], ContractStatus.DRAFT),
        ([], ContractStatus.DRAFT),
    ],
)
def test_contract_status(statuses: list[Status], expected: ContractStatus) -> None:
    assert contract_status(statuses) is expected
