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
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 7'), "schema_version 7 is newer than this shiptwo reads (1); upgrade shiptwo"),
        (lambda text: text.replace('"shiptwo.run/v1"', '"other/v1"'), "schema: 'other/v1' is not a shiptwo run record"),
        (lambda text: text.replace('"outcome": "passed"', '"outcome": "won"'), "tests[0] is not a test result"),
    ],
    ids=["truncated", "garbage", "newer-schema", "foreign", "bad-outcome"],
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
