"""Outcomes that cannot be faked: tests that never finished, and run records from the future."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shiptwo.cli import main

CONTRACT = """\
schema: shiptwo.contract/v1
id: out-v1
version: 1.0.0
title: Outcomes
obligations:
  - id: OUT-001
    statement: The subject works.
falsifiers:
  - id: FALSIFY-OUT-LOSS-001
    obligations: [OUT-001]
    prediction: the loss stays under 3 nats
    controls:
      - {id: qkv-bias-random, defect: q/k/v biases left at their random init}
    measurements:
      loss: {unit: nats, pass: {max: 3.0}}
status: DRAFT
"""

# How the test behaves is chosen by $SUBJECT: pass, fail, crash (kill its process), interrupt
# (Ctrl-C), or crash-control (kill the process on the control run only).
TESTS = """\
import os

import pytest


@pytest.mark.falsifier("FALSIFY-OUT-LOSS-001")
def test_loss(record_measurement, falsifier_control):
    mode = os.environ.get("SUBJECT", "pass")
    if falsifier_control is None:
        if mode == "crash":
            os._exit(1)
        if mode == "interrupt":
            raise KeyboardInterrupt
    elif mode == "crash-control":
        os._exit(1)
    broken = mode == "fail" or falsifier_control == "qkv-bias-random"
    record_measurement("loss", 16.4 if broken else 2.0)
"""
FID = "FALSIFY-OUT-LOSS-001"


@pytest.fixture
def out(make_project: Any) -> pytest.Pytester:
    return make_project(CONTRACT, TESTS)  # type: ignore[no-any-return]


def records(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted((root / "evidence" / "runs").glob("*.json"))]


def verdict(pv_json: Any, root: Path) -> dict[str, Any]:
    _, report = pv_json(root)
    found: dict[str, Any] = next(f for c in report["contracts"] for f in c["falsifiers"] if f["id"] == FID)
    return found


def test_a_crashed_xdist_worker_is_recorded_crashed_and_never_discharges(
    out: pytest.Pytester, pv_json: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out.runpytest().assert_outcomes(passed=2)
    assert verdict(pv_json, out.path)["status"] == "DISCHARGED"
    monkeypatch.setenv("SUBJECT", "crash")
    result = out.runpytest_subprocess("-n", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    newest = max(
        (record for _, record in records(out.path)), key=lambda r: r["sequence"]
    )  # names can tie within a second
    (entry,) = newest["tests"]
    assert entry["outcome"] == "crashed"
    assert "crashed while running 'falsifiers/test_subject.py::test_loss[real]'" in entry["failure"]
    v = verdict(pv_json, out.path)
    assert v["status"] == "ERROR", "a crash demotes the older pass: the code now kills its process"
    assert v["reason"].startswith("the test never reached its end (crashed): worker 'gw")


def test_a_control_run_that_crashes_its_worker_is_an_error(
    out: pytest.Pytester, pv_json: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBJECT", "crash-control")
    out.runpytest_subprocess("-n", "2")
    ((_, record),) = records(out.path)
    run = record["tests"][0]["controls"][FID]["qkv-bias-random"]
    assert run["outcome"] == "error" and "crashed while running" in run["detail"]
    assert verdict(pv_json, out.path)["status"] == "ERROR"


def test_an_interrupted_test_is_recorded_interrupted_and_decides_nothing(
    out: pytest.Pytester, pv_json: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBJECT", "interrupt")
    result = out.runpytest(no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    ((_, record),) = records(out.path)
    (entry,) = record["tests"]
    assert (entry["outcome"], entry["failure"]) == (
        "interrupted",
        "the session was interrupted before the test finished",
    )
    v = verdict(pv_json, out.path)
    assert v["status"] == "NOT-RUN"
    assert (
        v["reason"]
        == "no run reached its end: the newest was interrupted (the session was interrupted before the test "
        "finished)"
    )


def test_an_internal_error_mid_test_is_recorded_crashed(out: pytest.Pytester, pv_json: Any) -> None:
    out.makeconftest(
        "import pytest\n\n"
        "@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    if call.when == 'call' and item.name == 'test_loss[real]':\n"
        "        raise RuntimeError('a plugin broke')\n"
        "    yield\n"
    )
    result = out.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    ((_, record),) = records(out.path)
    entry = record["tests"][0]
    assert entry["outcome"] == "crashed"
    assert (
        entry["failure"]
        == "the test never reached its end (no teardown): its process crashed or pytest hit an internal error"
    )
    assert verdict(pv_json, out.path)["status"] == "ERROR"


def test_a_pass_recorded_without_its_measurements_is_an_error(out: pytest.Pytester, pv_json: Any) -> None:
    out.runpytest()
    ((path, record),) = records(out.path)
    del record["tests"][0]["measurements"]
    path.write_text(json.dumps(record))
    v = verdict(pv_json, out.path)
    assert (v["status"], v["reason"]) == (
        "ERROR",
        "the test passed without recording declared measurement(s) loss",
    )


def test_a_future_dated_record_cannot_hide_a_later_falsified_run(
    out: pytest.Pytester, pv_json: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out.runpytest()
    ((path, record),) = records(out.path)
    record["finished_at"] = "2999-01-01T00:00:00.000000Z"  # a host whose clock runs far ahead
    path.write_text(json.dumps(record))
    monkeypatch.setenv("SUBJECT", "fail")
    out.runpytest()
    code, report = pv_json(out.path)
    assert code == 1
    assert verdict(pv_json, out.path)["status"] == "FALSIFIED"
    (finding,) = [f for f in report["findings"] if f["rule"] == "PV603"]
    assert finding["name"] == "evidence-from-the-future" and finding["severity"] == "error"
    assert path.name in finding["path"] and path.name in finding["message"]
    assert "finished_at '2999-01-01T00:00:00.000000Z' is " in finding["message"]
    assert (
        "days ahead of this machine's clock; a record from the future cannot be ordered, so it decides "
        "nothing" in finding["message"]
    )
    assert finding["message"].endswith(
        "fix the clock of the host that wrote it and re-run pytest there, or delete the record"
    )
    contract = out.path / "contracts" / "out-v1.yaml"
    before = contract.read_bytes()
    assert main(["pv", "validate", str(out.path / "contracts"), "--write"]) == 1
    assert contract.read_bytes() == before, "no write-back while a record cannot be ordered"


def test_records_are_numbered_in_the_order_they_were_written(out: pytest.Pytester) -> None:
    out.runpytest()
    out.runpytest()
    assert sorted(record["sequence"] for _, record in records(out.path)) == [1, 2]


def test_a_record_value_of_the_wrong_type_never_reaches_the_contract(
    out: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    out.runpytest()
    ((path, record),) = records(out.path)
    record["git"]["commit"] = 12345
    path.write_text(json.dumps(record))
    contract = out.path / "contracts" / "out-v1.yaml"
    before = contract.read_bytes()
    assert main(["pv", "validate", str(out.path / "contracts"), "--write"]) == 1
    assert contract.read_bytes() == before
    out_text = capsys.readouterr().out
    assert (
        f"{path.name}: git.commit is not a commit hash (7 to 64 lower-case hex digits) or null (found "
        "12345); " in out_text
    )
    assert "delete the record or re-run pytest" in out_text


def test_write_back_refuses_evidence_the_schema_rejects(
    out: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defence in depth: should a value slip past the record checks, the write-back still refuses it.
    from shiptwo.errors import ContractError
    from shiptwo.harness import writeback

    with pytest.raises(ContractError) as excinfo:
        writeback._check_evidence(
            Path("contracts/out-v1.yaml"), FID, {"run": "r", "commit": 12345, "at": "t"}
        )
    assert str(excinfo.value) == (
        "contracts/out-v1.yaml: FALSIFY-OUT-LOSS-001: evidence.commit: 12345 is not of type 'null', "
        "'string'; "
        "not writing it (a run record holds a value the contract format does not allow: re-run pytest)"
    )
