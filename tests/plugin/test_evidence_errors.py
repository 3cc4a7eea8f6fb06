"""Bad run records and unwritable evidence dirs: clear messages, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def one_record(demo: pytest.Pytester) -> Path:
    demo.runpytest("-k", "test_pass")
    (path,) = (demo.path / "evidence" / "runs").glob("*.json")
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "run record is not valid JSON (truncated or corrupt?)"),
        (lambda text: "\x00\x01garbage", "run record is not valid JSON"),
        (lambda text: text.replace('"schema_version": 2', '"schema_version": 7'), "schema_version 7 is newer than this shiptwo reads (2); upgrade shiptwo"),
        (lambda text: text.replace('"shiptwo.run/v1"', '"other/v1"'), "schema: 'other/v1' is not a shiptwo run record"),
        (lambda text: text.replace('"outcome": "passed"', '"outcome": "won"'), "tests[0] is not a test result"),
        (lambda text: text.replace('"loss": [\n     2.0\n    ]', '"loss": 5'), "tests[0].measurements.loss is not a list of numbers"),
        (lambda text: text.replace('"loss": [\n     2.0\n    ]', '"loss": ["2.0"]'), "tests[0].measurements.loss is not a list of numbers"),
        (lambda text: text.replace('"git": {', '"git": "abc", "_git": {'), "git is not an object"),
        (lambda text: _set(text, "finished_at", None), "finished_at is not a UTC time string"),
    ],
    ids=["truncated", "garbage", "newer-schema", "foreign", "bad-outcome", "measure-int", "measure-str", "git-str", "time-null"],
)
def test_bad_run_record_is_a_finding_naming_the_file(
    demo: pytest.Pytester, pv_json: Any, damage: Any, message: str
) -> None:
    path = one_record(demo)
    path.write_text(damage(path.read_text()))
    code, report = pv_json(demo.path)
    assert code == 1
    (finding,) = [f for f in report["findings"] if f["rule"] == "PV601"]
    assert path.name in finding["message"] and message in finding["message"]


def _set(text: str, key: str, value: Any) -> str:
    data = json.loads(text)
    data[key] = value
    return json.dumps(data, indent=1, sort_keys=True)


def test_damage_helpers_really_damage(demo: pytest.Pytester) -> None:
    text = one_record(demo).read_text()
    assert '"loss": [\n     2.0\n    ]' in text and '"git": {' in text


def test_write_refuses_while_a_run_record_is_unreadable(demo: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    from shiptwo.cli import main

    path = one_record(demo)
    (path.parent / "zz-broken.json").write_text("{")
    contract = demo.path / "contracts" / "demo-v1.yaml"
    before = contract.read_bytes()
    assert main(["pv", "validate", str(demo.path / "contracts"), "--write"]) == 1
    assert contract.read_bytes() == before
    assert "not writing statuses while there are error findings" in capsys.readouterr().err


def test_evidence_option_must_be_a_directory(demo: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    from shiptwo.cli import main

    assert main(["pv", "validate", str(demo.path / "contracts"), "--evidence", str(demo.path / "nope")]) == 2
    assert "--evidence" in capsys.readouterr().err


def test_unwritable_evidence_dir_fails_the_run_but_keeps_results(demo: pytest.Pytester) -> None:
    blocker = demo.path / "blocked"
    blocker.write_text("a file where the evidence dir should be")
    result = demo.runpytest("-k", "test_pass", "--shiptwo-evidence", "blocked/runs")
    result.assert_outcomes(passed=1)  # the test results themselves are reported
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*shiptwo: ERROR: run record not written: *blocked/runs: cannot write run record*"])


def test_record_is_written_atomically_as_json(demo: pytest.Pytester) -> None:
    path = one_record(demo)
    assert json.loads(path.read_text())["tests"][0]["outcome"] == "passed"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temp file left behind"
