"""Controls: each bound test runs once for real and once per planted defect, and must catch it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shiptwo.cli import main

CONTRACT = """\
schema: shiptwo.contract/v1
id: ctl-v1
version: 1.0.0
title: Falsifiers watched failing on their own defects
obligations:
  - id: CTL-001
    statement: The subject works.
falsifiers:
  - id: FALSIFY-CTL-CAUGHT-001
    obligations: [CTL-001]
    prediction: the loss stays under 3 nats
    controls:
      - {id: qkv-bias-random, defect: q/k/v biases left at their random init}
    measurements:
      loss: {unit: nats, pass: {max: 3.0}, plausible: {min: 0.5, max: 3.0}}
  - id: FALSIFY-CTL-ASSERT-001
    obligations: [CTL-001]
    prediction: the loader refuses a foreign vocab
    controls:
      - {id: wrong-sign, defect: the sign is flipped}
      - {id: no-refusal, defect: the loader accepts anything}
  - id: FALSIFY-CTL-BLIND-001
    obligations: [CTL-001]
    prediction: nothing can fail it
    controls:
      - {id: no-op, defect: a defect the test never plants}
  - id: FALSIFY-CTL-PARAM-001
    obligations: [CTL-001]
    prediction: each dtype keeps its tag
    controls:
      - {id: bf16-as-f16, defect: BF16 tagged F16}
status: DRAFT
"""

TESTS = """\
import pytest


def loss(control):
    return 16.4 if control == "qkv-bias-random" else 2.0


@pytest.mark.falsifier("FALSIFY-CTL-CAUGHT-001")
def test_caught(record_measurement, falsifier_control):
    record_measurement("loss", loss(falsifier_control))


@pytest.mark.falsifier("FALSIFY-CTL-ASSERT-001")
def test_assert(falsifier_control):
    sign = -1 if falsifier_control == "wrong-sign" else 1
    assert sign * 2 > 0, "the sign flipped"
    refuses = falsifier_control != "no-refusal"
    with pytest.raises(ValueError):
        if refuses:
            raise ValueError("foreign vocab")


@pytest.mark.falsifier("FALSIFY-CTL-BLIND-001")
def test_blind(falsifier_control):
    assert True  # takes the fixture, plants nothing


@pytest.fixture
def tagged(falsifier_control, dtype):
    return "f16" if falsifier_control == "bf16-as-f16" else dtype


@pytest.mark.falsifier("FALSIFY-CTL-PARAM-001")
@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_param(dtype, tagged):
    assert tagged == dtype
"""

STATUSES = {
    "FALSIFY-CTL-CAUGHT-001": "DISCHARGED",
    "FALSIFY-CTL-ASSERT-001": "DISCHARGED",
    "FALSIFY-CTL-BLIND-001": "VACUOUS",
    "FALSIFY-CTL-PARAM-001": "DISCHARGED",
}


@pytest.fixture
def ctl(make_project: Any) -> pytest.Pytester:
    return make_project(CONTRACT, TESTS)  # type: ignore[no-any-return]


def falsifiers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for c in report["contracts"] for f in c["falsifiers"]}


def the_record(root: Path) -> dict[str, Any]:
    (path,) = (root / "evidence" / "runs").glob("*.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_a_caught_control_discharges_and_a_surviving_one_is_vacuous(
    ctl: pytest.Pytester, pv_json: Any
) -> None:
    result = ctl.runpytest()
    # 5 real runs pass; 5 control runs catch their defect and pass; the blind one's control fails.
    result.assert_outcomes(passed=10, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    code, report = pv_json(ctl.path)
    assert {fid: f["status"] for fid, f in falsifiers(report).items()} == STATUSES
    assert code == 1, "a VACUOUS falsifier makes pv validate exit 1, as a FALSIFIED one does"
    assert report["contracts"][0]["status"] == "FALSIFIED"
    caught = falsifiers(report)["FALSIFY-CTL-CAUGHT-001"]
    assert (
        caught["reason"]
        == "the newest decisive run passed and every measurement was plausible; its control refuted"
    )
    [control] = caught["controls"]
    assert {k: control[k] for k in ("id", "defect", "outcome")} == {
        "id": "qkv-bias-random",
        "defect": "q/k/v biases left at their random init",
        "outcome": "refuted",
    }
    assert "loss = 16.4 nats is outside the pass range [-inf, 3]" in control["detail"]
    blind = falsifiers(report)["FALSIFY-CTL-BLIND-001"]
    assert blind["reason"] == (
        "control 'no-op' survived: its run passed with the defect planted (a defect the test never plants); "
        "the falsifier cannot see it"
    )
    assert [(c["id"], c["outcome"]) for c in blind["controls"]] == [("no-op", "survived")]
    assert report["summary"]["controls"] == {"declared": 5, "refuted": 4}


def test_pytest_output_says_what_each_control_did(ctl: pytest.Pytester) -> None:
    result = ctl.runpytest("-q")
    result.stdout.fnmatch_lines_random(
        [
            "6 control runs: 5 refuted, 1 survived",
            "  control no-op SURVIVED: the test passed with the defect planted (FALSIFY-CTL-BLIND-001)",
            "  control qkv-bias-random refuted: loss = 16.4 nats is outside the pass range ?-inf, 3? "
            "*(FALSIFY-CTL-CAUGHT-001)",
            "  control wrong-sign refuted: the sign flipped (FALSIFY-CTL-ASSERT-001)",
            "  control no-refusal refuted: DID NOT RAISE *ValueError* (FALSIFY-CTL-ASSERT-001)",
            "  VACUOUS: FALSIFY-CTL-BLIND-001: control 'no-op' survived: *",
            "FAILED falsifiers/test_subject.py::test_blind[[]control=no-op[]] - Failed: shiptw*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "shiptwo: control 'no-op' of FALSIFY-CTL-BLIND-001 survived: the test passed with its defect "
            "planted*Plant it where falsifier_control == 'no-op'*"
        ]
    )
    verbose = ctl.runpytest("-v", "-k", "caught")
    verbose.stdout.fnmatch_lines(
        ["*test_caught[[]real[]] PASSED*", "*test_caught[[]control=qkv-bias-random[]] REFUTED*"]
    )


def test_the_run_record_keeps_each_control_run_under_its_real_run(ctl: pytest.Pytester) -> None:
    ctl.runpytest()
    tests = {t["nodeid"].split("::")[1]: t for t in the_record(ctl.path)["tests"]}
    assert sorted(tests) == [
        "test_assert[real]",
        "test_blind[real]",
        "test_caught[real]",
        "test_param[bf16-real]",
        "test_param[f32-real]",
    ], "control runs are folded into their real run's entry"
    caught = tests["test_caught[real]"]
    assert caught["outcome"] == "passed" and caught["measurements"] == {"loss": [2.0]}
    run = caught["controls"]["FALSIFY-CTL-CAUGHT-001"]["qkv-bias-random"]
    assert run["outcome"] == "refuted" and run["measurements"] == {"loss": [16.4]}
    assert run["nodeid"] == "falsifiers/test_subject.py::test_caught[control=qkv-bias-random]"
    assert tests["test_blind[real]"]["controls"]["FALSIFY-CTL-BLIND-001"]["no-op"]["outcome"] == "survived"
    assert tests["test_param[f32-real]"]["controls"]["FALSIFY-CTL-PARAM-001"]["bf16-as-f16"] == {
        "outcome": "refuted",
        "detail": "assert 'f16' == 'f32'",
        "duration": pytest.approx(0, abs=5),
        "nodeid": "falsifiers/test_subject.py::test_param[f32-control=bf16-as-f16]",
    }


def test_same_verdicts_under_xdist(ctl: pytest.Pytester, pv_json: Any) -> None:
    result = ctl.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=10, failed=1)
    assert {fid: f["status"] for fid, f in falsifiers(pv_json(ctl.path)[1]).items()} == STATUSES


def test_a_test_that_does_not_take_the_fixture_fails_collection(make_project: Any) -> None:
    project = make_project(
        CONTRACT,
        TESTS.replace("def test_blind(falsifier_control):", "def test_blind():"),
    )
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*falsifier markers and contracts disagree*",
            (
                "*falsifiers/test_subject.py::test_blind: FALSIFY-CTL-BLIND-001 declares controls (no-op) "
                "but the test does not "
                "take the falsifier_control fixture; add a falsifier_control argument and plant each "
                "control's defect when it "
                "is set (if falsifier_control == 'no-op': ...)"
            ),
        ]
    )


def test_a_control_that_errors_or_is_not_run_never_discharges(make_project: Any, pv_json: Any) -> None:
    project = make_project(
        CONTRACT,
        TESTS.replace(
            "def loss(control):\n",
            'def loss(control):\n    if control is not None:\n        raise RuntimeError("the model failed '
            'to load")\n',
        ).replace(
            "    assert True  # takes the fixture, plants nothing",
            '    if falsifier_control is not None:\n        pytest.skip("not planted yet")',
        ),
    )
    result = project.runpytest("-k", "caught or blind")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    report = falsifiers(pv_json(project.path)[1])
    assert report["FALSIFY-CTL-CAUGHT-001"]["status"] == "ERROR"
    assert report["FALSIFY-CTL-CAUGHT-001"]["reason"] == (
        "control 'qkv-bias-random' errored instead of reaching a verdict: RuntimeError: the model failed to "
        "load"
    )
    assert report["FALSIFY-CTL-BLIND-001"]["status"] == "NOT-RUN"
    assert report["FALSIFY-CTL-BLIND-001"]["reason"] == (
        "control 'no-op' has no verdict (not planted yet); run the test with its controls"
    )


def test_deselected_controls_keep_a_pass_from_discharging(ctl: pytest.Pytester, pv_json: Any) -> None:
    ctl.runpytest("-k", "caught and not control")
    verdict = falsifiers(pv_json(ctl.path)[1])["FALSIFY-CTL-CAUGHT-001"]
    assert verdict["status"] == "NOT-RUN"
    assert "control 'qkv-bias-random' has no verdict" in verdict["reason"]
    assert [c["outcome"] for c in verdict["controls"]] == ["not-run"]


def test_control_runs_alone_decide_nothing(ctl: pytest.Pytester, pv_json: Any) -> None:
    ctl.runpytest("falsifiers/test_subject.py::test_caught[control=qkv-bias-random]").assert_outcomes(
        passed=1
    )
    (entry,) = the_record(ctl.path)["tests"]
    assert (
        entry["outcome"] == "skipped"
        and entry["skip_reason"] == "its real run was not selected; only its control runs ran"
    )
    assert entry["controls"]["FALSIFY-CTL-CAUGHT-001"]["qkv-bias-random"]["outcome"] == "refuted"
    assert falsifiers(pv_json(ctl.path)[1])["FALSIFY-CTL-CAUGHT-001"]["status"] == "NOT-RUN"


def test_write_back_counts_the_controls_watched_red(
    ctl: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl.runpytest()
    path = ctl.path / "contracts" / "ctl-v1.yaml"
    contracts = str(ctl.path / "contracts")
    assert main(["pv", "validate", contracts, "--write"]) == 1  # VACUOUS still exits 1
    text = path.read_text()
    assert "controls: {declared: 2, refuted: 2}}" in text
    assert "    status: VACUOUS\n    evidence: {run: '" in text
    assert "reason: 'control ''no-op'' survived: its run passed with the defect planted" in text
    assert "controls: {declared: 1, refuted: 0}}" in text
    assert text.endswith("status: FALSIFIED\n")
    before = path.read_bytes()
    capsys.readouterr()
    main(["pv", "validate", contracts, "--write"])
    assert path.read_bytes() == before, "a second --write changes nothing"
    assert main(["pv", "validate", contracts, "--check", "--format", "json"]) == 1
    assert "PV602" not in capsys.readouterr().out
    assert main(["pv", "status", contracts]) == 0
    out = capsys.readouterr().out
    assert "CONTROLS REFUTED" in out
    assert [line.split()[2:4] for line in out.splitlines() if "FALSIFY-CTL-" in line] == [
        ["DISCHARGED", "1/1"],
        ["DISCHARGED", "2/2"],
        ["VACUOUS", "0/1"],
        ["DISCHARGED", "1/1"],
    ]


def test_text_report_shows_the_control_count(
    ctl: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl.runpytest()
    main(["pv", "validate", str(ctl.path / "contracts")])
    out = capsys.readouterr().out
    assert "  DISCHARGED  FALSIFY-CTL-ASSERT-001  [2/2 controls refuted]" in out
    assert "  VACUOUS     FALSIFY-CTL-BLIND-001  [0/1 controls refuted]  (control 'no-op' survived:" in out


def test_controls_of_a_gated_falsifier_skip_with_it(make_project: Any, pv_json: Any) -> None:
    project = make_project(
        CONTRACT.replace(
            "    prediction: nothing can fail it\n",
            "    prediction: nothing can fail it\n    requires: [qwen-artifacts]\n",
        ),
        TESTS,
    )
    project.runpytest("-k", "blind").assert_outcomes(skipped=2)
    verdict = falsifiers(pv_json(project.path)[1])["FALSIFY-CTL-BLIND-001"]
    assert verdict["status"] == "HOST-GATED"
    assert [c["outcome"] for c in verdict["controls"]] == ["not-run"]


def test_two_falsifiers_sharing_a_control_id_get_distinct_runs(make_project: Any, pv_json: Any) -> None:
    contract = CONTRACT.replace("{id: no-op, defect:", "{id: qkv-bias-random, defect:")
    tests = TESTS + (
        '\n\n@pytest.mark.falsifier("FALSIFY-CTL-CAUGHT-001")\n@pytest.mark.falsifier("FALSIFY-CTL-BLIND-001")\n'
        'def test_both(record_measurement, falsifier_control):\n    record_measurement("loss", '
        "loss(falsifier_control))\n"
    )
    project = make_project(
        contract,
        tests.replace(
            "def test_blind(falsifier_control):\n    assert True",
            "def test_blind(falsifier_control):\n    assert falsifier_control is None",
        ),
    )
    result = project.runpytest("-k", "both", "--collect-only", "-q")
    result.stdout.fnmatch_lines_random(
        [
            "*test_both[[]real[]]",
            "*test_both[[]control=FALSIFY-CTL-CAUGHT-001.qkv-bias-random[]]",
            "*test_both[[]control=FALSIFY-CTL-BLIND-001.qkv-bias-random[]]",
        ]
    )


def test_github_format_annotates_a_vacuous_falsifier(
    ctl: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl.runpytest()
    assert main(["pv", "validate", str(ctl.path / "contracts"), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        "::error file=contracts/ctl-v1.yaml,title=FALSIFY-CTL-BLIND-001 VACUOUS::control 'no-op' survived: "
        in "\n".join(lines)
    )
