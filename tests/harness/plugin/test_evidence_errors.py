"""Bad run records and unwritable evidence dirs: clear messages, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

_RECORD: dict[str, str] = {}  # name -> text of the one record, made by the first test that needs it


def one_record(demo: pytest.Pytester) -> Path:
    """The run record of `pytest -k test_pass` on the demo project.

    Run once, then copied: the project is the same.
    """
    runs = demo.path / "evidence" / "runs"
    if not _RECORD:
        demo.runpytest("-k", "test_pass")
        (path,) = runs.glob("*.json")
        _RECORD[path.name] = path.read_text()
        return path
    ((name, text),) = _RECORD.items()
    runs.mkdir(parents=True)
    (runs / name).write_text(text)
    return runs / name


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "run record is not valid JSON (truncated or corrupt?)"),
        (lambda text: "\x00\x01garbage", "run record is not valid JSON"),
        (
            lambda text: text.replace('"schema_version": 2', '"schema_version": 7'),
            "schema_version 7 is newer than this shiptwo reads (2); upgrade shiptwo",
        ),
        (
            lambda text: text.replace('"shiptwo.run/v1"', '"other/v1"'),
            "schema: 'other/v1' is not a shiptwo run record",
        ),
        (
            lambda text: text.replace('"outcome": "passed"', '"outcome": "won"'),
            "tests[0] is not a test result",
        ),
        (
            lambda text: text.replace('"loss": [\n     2.0\n    ]', '"loss": 5'),
            "tests[0].measurements.loss is not a list of numbers",
        ),
        (
            lambda text: text.replace('"loss": [\n     2.0\n    ]', '"loss": ["2.0"]'),
            "tests[0].measurements.loss is not a list of numbers",
        ),
        (lambda text: text.replace('"git": {', '"git": "abc", "_git": {'), "git is not an object"),
        (lambda text: _set(text, "finished_at", None), "finished_at is not a UTC time string"),
        # Every field is type-checked before anything computes with it or writes it into a contract.
        (
            lambda text: _set(text, "finished_at", "zzz-sorts-last"),
            "finished_at is not a UTC time string (ISO 8601 with Z or +00:00) (found 'zzz-sorts-last'); "
            "delete the record or re-run pytest",
        ),
        (
            lambda text: _set(text, "finished_at", "2026-11-21T21:00:42"),
            "finished_at is not a UTC time string (ISO 8601 with Z or +00:00) (found '2026-11-21T21:00:42')",
        ),
        (
            lambda text: _set(text, "started_at", "yesterday"),
            "started_at is not a UTC time string (ISO 8601 with Z or +00:00) (found 'yesterday')",
        ),
        (
            lambda text: _set(text, "git.commit", 12345),
            "git.commit is not a commit hash (7 to 64 lower-case hex digits) or null (found 12345); delete "
            "the record or re-run pytest",
        ),
        (
            lambda text: _set(text, "git.commit", "HEAD; rm -rf"),
            "git.commit is not a commit hash (7 to 64 lower-case hex digits) or null (found 'HEAD; rm -rf')",
        ),
        (lambda text: _set(text, "git.dirty", "yes"), "git.dirty is not true, false or null (found 'yes')"),
        (
            lambda text: _set(text, "run_id", "a'\nb: c"),
            'run_id is not a run id (letters, digits and ._:+-, at most 128) (found "a\'\\nb: c")',
        ),
        (lambda text: _set(text, "sequence", -1), "sequence is not a non-negative integer (found -1)"),
        (lambda text: _set(text, "sequence", True), "sequence is not a non-negative integer (found True)"),
        (lambda text: _set(text, "host.hostname", 7), "host.hostname is not a string (found 7)"),
        (
            lambda text: _set(text, "tests.0.duration", "fast"),
            "tests[0].duration is not a number of seconds (found 'fast')",
        ),
        (
            lambda text: _set(text, "tests.0.fingerprints", {"FALSIFY-DEMO-PASS-001": 5}),
            "tests[0].fingerprints is not an object of sha256 strings (found {'FALSIFY-DEMO-PASS-001': 5})",
        ),
        (
            lambda text: _set(text, "tests.0.controls", {"FALSIFY-DEMO-PASS-001": {"c": {"outcome": "won"}}}),
            "tests[0].controls.FALSIFY-DEMO-PASS-001.c is not a control run (outcome "
            "refuted|survived|error|not-run) (found {'outcome': 'won'})",
        ),
        (
            lambda text: _set(
                text,
                "tests.0.controls",
                {"FALSIFY-DEMO-PASS-001": {"c": {"outcome": "refuted", "detail": 3}}},
            ),
            "tests[0].controls.FALSIFY-DEMO-PASS-001.c.detail is not a string (found 3)",
        ),
        (
            lambda text: _set(
                text,
                "covers",
                {"FALSIFY-DEMO-PASS-001": {"digest": "0" * 64, "files": {"src/a.py": "1" * 64}}},
            ),
            "covers.FALSIFY-DEMO-PASS-001.digest is not the digest of its files (edited by hand?) (found "
            "'0000000000",
        ),
        (
            lambda text: _set(
                text, "covers", {"FALSIFY-DEMO-PASS-001": {"digest": "x", "files": {"src/a.py": "abc"}}}
            ),
            "covers.FALSIFY-DEMO-PASS-001.files.src/a.py is not a sha256 hex digest (found 'abc')",
        ),
    ],
    ids=[
        "truncated",
        "garbage",
        "newer-schema",
        "foreign",
        "bad-outcome",
        "measure-int",
        "measure-str",
        "git-str",
        "time-null",
        "time-garbage",
        "time-naive",
        "started-garbage",
        "commit-int",
        "commit-text",
        "dirty-str",
        "run-id-newline",
        "sequence-negative",
        "sequence-bool",
        "hostname-int",
        "duration-str",
        "fingerprint-int",
        "control-outcome",
        "control-detail",
        "covers-digest",
        "covers-hash",
    ],
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
    """`text` (a record) with the field at the dotted `key` (list indices as numbers) set to `value`."""
    data = json.loads(text)
    *parents, last = key.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value
    return json.dumps(data, indent=1, sort_keys=True)


def test_damage_helpers_really_damage(demo: pytest.Pytester) -> None:
    text = one_record(demo).read_text()
    assert '"loss": [\n     2.0\n    ]' in text and '"git": {' in text


def test_write_refuses_while_a_run_record_is_unreadable(
    demo: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from shiptwo.cli import main

    path = one_record(demo)
    (path.parent / "zz-broken.json").write_text("{")
    contract = demo.path / "contracts" / "demo-v1.yaml"
    before = contract.read_bytes()
    assert main(["pv", "validate", str(demo.path / "contracts"), "--write"]) == 1
    assert contract.read_bytes() == before
    assert "not writing statuses while there are error findings" in capsys.readouterr().err


def test_evidence_option_must_be_a_directory(
    demo: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from shiptwo.cli import main

    assert main(["pv", "validate", str(demo.path / "contracts"), "--evidence", str(demo.path / "nope")]) == 2
    assert "--evidence" in capsys.readouterr().err


def test_unwritable_evidence_dir_fails_the_run_but_keeps_results(demo: pytest.Pytester) -> None:
    blocker = demo.path / "blocked"
    blocker.write_text("a file where the evidence dir should be")
    result = demo.runpytest("-k", "test_pass", "--shiptwo-evidence", "blocked/runs")
    result.assert_outcomes(passed=1)  # the test results themselves are reported
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*shiptwo: ERROR: run record not written: *blocked/runs: cannot write run record*"]
    )


def test_record_is_written_atomically_as_json(demo: pytest.Pytester) -> None:
    demo.runpytest("-k", "test_pass")
    (path,) = (demo.path / "evidence" / "runs").glob("*.json")
    assert json.loads(path.read_text())["tests"][0]["outcome"] == "passed"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temp file left behind"
