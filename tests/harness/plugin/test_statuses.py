"""Every status of the table, reached by a small real project, and the same under xdist."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

NOT_RUN = ["-k", "not notrun"]


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {f["id"]: f["status"] for c in report["contracts"] for f in c["falsifiers"]}


def records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "evidence" / "runs").glob("*.json"))]


def test_every_status_is_reached(demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]) -> None:
    result = demo.runpytest(*NOT_RUN)
    result.assert_outcomes(passed=3, failed=1, skipped=1, errors=1, deselected=1)
    code, report = pv_json(demo.path)
    assert statuses(report) == expected
    assert code == 1, "a FALSIFIED falsifier makes pv validate exit 1"
    assert report["contracts"][0]["status"] == "FALSIFIED"


def test_terminal_summary_names_suspects_and_the_record(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]
) -> None:
    result = demo.runpytest(*NOT_RUN)
    result.stdout.fnmatch_lines(
        [
            "*shiptwo falsifiers*",
            "5 falsifiers in this session: 1 HOST-GATED, 1 DISCHARGED, 1 "
            "NUMERICALLY-PASSED-METHODOLOGY-SUSPECT, 1 FALSIFIED, 1 ERROR",
            "*NUMERICALLY-PASSED-METHODOLOGY-SUSPECT: FALSIFY-DEMO-SUSPECT-001: passed, but val_loss=0.00081 "
            "nats outside plausible ?1.5, 2.5?",
            "*HOST-GATED: FALSIFY-DEMO-GATED-001: host gate 'qwen-artifacts' closed: no Qwen2 snapshot: run "
            "`shiptwo models fetch`*",
            "run record: evidence/runs/*.json",
        ]
    )
    result.stdout.fnmatch_lines(
        ["shiptwo: contracts=contracts (1 contracts, 7 falsifiers), evidence=evidence/runs, require=-"]
    )


def test_run_record_holds_what_the_spec_asks(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]
) -> None:
    demo.runpytest(*NOT_RUN)
    (record,) = records(demo.path)
    assert record["schema"] == "shiptwo.run/v1" and record["schema_version"] == 2
    for key in ("run_id", "started_at", "finished_at", "git", "host", "gates", "artifacts", "tests"):
        assert key in record
    assert record["started_at"] <= record["finished_at"]
    assert {"python", "platform"} <= set(record["host"])
    tests = {t["nodeid"].split("::")[1]: t for t in record["tests"]}
    assert "test_plain" not in tests, "tests without a falsifier marker are not evidence"
    assert tests["test_pass"]["measurements"] == {"loss": [2.0]}
    assert tests["test_gated"]["outcome"] == "skipped" and tests["test_gated"]["gate"] == "qwen-artifacts"
    assert tests["test_error"]["outcome"] == "error" and "fixture broke" in tests["test_error"]["failure"]
    assert tests["test_fail"]["outcome"] == "failed" and "assert" in tests["test_fail"]["failure"]
    assert all(len(t["fingerprints"][t["falsifiers"][0]]) == 64 for t in tests.values())
    assert all(t["duration"] >= 0 for t in tests.values())


def test_same_statuses_under_xdist(demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]) -> None:
    demo.runpytest(*NOT_RUN)
    _, serial = pv_json(demo.path)
    for p in (demo.path / "evidence" / "runs").glob("*.json"):
        p.unlink()
    result = demo.runpytest_subprocess("-n", "2", *NOT_RUN)
    result.assert_outcomes(passed=3, failed=1, skipped=1, errors=1)  # xdist does not count deselections
    assert len(records(demo.path)) == 1, "one run record per session, written by the controller"
    (record,) = records(demo.path)
    assert len(record["tests"]) == 5 and len({t["nodeid"] for t in record["tests"]}) == 5
    _, parallel = pv_json(demo.path)
    assert statuses(parallel) == statuses(serial) == expected


def test_edited_prediction_makes_evidence_stale(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]
) -> None:
    demo.runpytest(*NOT_RUN)
    path = demo.path / "contracts" / "demo-v1.yaml"
    path.write_text(path.read_text().replace("passes with a plausible number", "passes with a better number"))
    _, report = pv_json(demo.path)
    assert statuses(report)["FALSIFY-DEMO-PASS-001"] == "STALE"
    # A threshold edit is a new claim too.
    path.write_text(
        path.read_text().replace(
            "pass: {max: 9.38}\n        plausible: {min: 1.5",
            "pass: {max: 5.0}\n        plausible: {min: 1.5",
            1,
        )
    )
    assert statuses(pv_json(demo.path)[1])["FALSIFY-DEMO-PASS-001"] == "STALE"


def test_a_skip_never_demotes_a_decisive_result(
    demo: pytest.Pytester,
    pv_json: Any,
    expected: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "qwen"
    snapshot.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (snapshot / name).write_text("{}")
    monkeypatch.setenv("SHIPTWO_QWEN_DIR", str(snapshot))
    from shiptwo.harness import gates

    gates.clear_cache()
    demo.runpytest("-k", "gated")  # the "GPU machine": the gate is open and the test passes
    (record,) = records(demo.path)
    # Fingerprinted under a name without the user (the record is redacted by default).
    assert any(path.endswith("/qwen/model.safetensors") for path in record["artifacts"]), (
        "artifacts the gate used are fingerprinted"
    )
    monkeypatch.delenv("SHIPTWO_QWEN_DIR")
    gates.clear_cache()
    demo.runpytest("-k", "gated")  # the "CI machine": skipped
    assert [r["tests"][0]["outcome"] for r in records(demo.path)] in (
        ["passed", "skipped"],
        ["skipped", "passed"],
    )
    assert statuses(pv_json(demo.path)[1])["FALSIFY-DEMO-GATED-001"] == "DISCHARGED"


def test_newest_decisive_result_wins(demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]) -> None:
    tests = demo.path / "falsifiers" / "test_demo.py"
    source = tests.read_text()
    tests.write_text(source.replace("assert 1 + 1 == 3", "assert 1 + 1 == 2"))
    demo.runpytest("-k", "test_fail")
    assert statuses(pv_json(demo.path)[1])["FALSIFY-DEMO-FAIL-001"] == "DISCHARGED"
    tests.write_text(source)
    demo.runpytest("-k", "test_fail")
    assert statuses(pv_json(demo.path)[1])["FALSIFY-DEMO-FAIL-001"] == "FALSIFIED"


def test_worst_outcome_wins_among_tests_of_one_falsifier(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]
) -> None:
    tests = demo.path / "falsifiers" / "test_demo.py"
    tests.write_text(
        tests.read_text()
        + '\n@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_pass_again(record_measurement):\n'
        '    record_measurement("loss", 0.001)\n'
    )
    demo.runpytest("-k", "test_pass")
    _, report = pv_json(demo.path)
    verdict = next(f for f in report["contracts"][0]["falsifiers"] if f["id"] == "FALSIFY-DEMO-PASS-001")
    assert verdict["status"] == "NUMERICALLY-PASSED-METHODOLOGY-SUSPECT"
    assert verdict["measured"] == {"loss": 0.001}


def test_required_gate_turns_skip_into_error(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPTWO_REQUIRE", "qwen-artifacts")
    result = demo.runpytest("-k", "gated")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*host gate 'qwen-artifacts' closed*this host claims it through SHIPTWO_REQUIRE*"]
    )
    assert statuses(pv_json(demo.path)[1])["FALSIFY-DEMO-GATED-001"] == "ERROR"


def test_unknown_required_gate_is_a_usage_error(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]
) -> None:
    result = demo.runpytest("--shiptwo-require", "cuda,gpu-farm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*required host gate(s) gpu-farm unknown*known gates: cuda, multi-gpu*"])


def test_record_can_be_turned_off(demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]) -> None:
    result = demo.runpytest("-k", "test_pass", "--shiptwo-no-record")
    result.stdout.fnmatch_lines(["run record: not written (--shiptwo-no-record)"])
    assert not (demo.path / "evidence" / "runs").exists()


def test_marker_selects_exactly_the_bound_tests(
    demo: pytest.Pytester, pv_json: Any, expected: dict[str, str]
) -> None:
    result = demo.runpytest("-m", "falsifier", "--collect-only", "-q")
    lines = [line for line in result.stdout.lines if "::" in line]
    assert len(lines) == 6 and not any("test_plain" in line for line in lines)
    assert os.environ.get("SHIPTWO_REQUIRE") is None
