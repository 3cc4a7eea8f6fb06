"""Fuzzing the harness's text formats (issue 14): 500 seeded damaged contracts (mutations of the
shipped ones) and 500 damaged run records (of one written by `write_run_record`), each through
`validate_paths` / `read_evidence` and `shiptwo pv validate`: clean findings, exit 0/1/2, no
traceback, no hang. A failing input is rebuilt with `make_input(target, 0, i)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiptwo.errors import EvidenceError
from shiptwo.fuzz.contracts import build_targets, main, make_input, run
from shiptwo.fuzz.text import TextTarget, classify
from shiptwo.harness.contract.yamlsafe import parse_yaml
from shiptwo.harness.evidence import read_run_record

INPUTS = 500


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TextTarget]:
    return build_targets(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("name", ["contracts", "run-record"])
def test_every_damaged_input_gives_clean_findings(
    targets: dict[str, TextTarget], tmp_path: Path, name: str
) -> None:
    tally = run(targets[name], tmp_path, count=INPUTS, seed=0)

    assert tally.tried == INPUTS
    assert tally.failed == 0, tally.report()
    # The damage is real and the seeds stay valid: both outcomes occur.
    assert tally.counts["refused"] >= INPUTS // 2 and tally.counts["loaded"] >= 10, tally.report()


def test_the_undamaged_seeds_validate_clean(targets: dict[str, TextTarget], tmp_path: Path) -> None:
    seeds = targets["contracts"].seed_dir
    for seed in sorted(seeds.iterdir()):
        directory = tmp_path / seed.stem
        directory.mkdir()
        (directory / seed.name).write_bytes(seed.read_bytes())
        assert classify(targets["contracts"], directory, 10.0) == ("loaded", ""), seed.name
    record = targets["run-record"]
    assert classify(record, record.seed_dir, 10.0) == ("loaded", "")


def test_the_damage_covers_every_kind(targets: dict[str, TextTarget]) -> None:
    labels = " | ".join(make_input(targets["contracts"], 0, i)[2] for i in range(INPUTS))
    for kind in (
        "truncate at",
        "flip",
        "nested",
        "= 9999",
        "= None",
        "key with",
        "twice",
        "append 'lol",
        "alias or tag",
        "insert b'\\xff'",
        "empty",
        "indented with a tab",
    ):
        assert kind in labels, kind
    records = " | ".join(make_input(targets["run-record"], 0, i)[2] for i in range(INPUTS))
    for kind in ("truncate at", "flip", "nested", "digits", "['finished_at'] =", "empty"):
        assert kind in records, kind


def test_inputs_are_rebuilt_exactly_from_their_index(targets: dict[str, TextTarget]) -> None:
    for name in ("contracts", "run-record"):
        assert make_input(targets[name], 0, 7) == make_input(targets[name], 0, 7)
        assert len({make_input(targets[name], 0, i)[1] for i in range(50)}) > 40


def test_the_loop_catches_a_traceback_and_a_hang(targets: dict[str, TextTarget], tmp_path: Path) -> None:
    import time

    def breaks(d: Path) -> None:
        raise KeyError("x")

    def hangs(d: Path) -> None:
        time.sleep(5)

    for check, outcome in ((breaks, "traceback"), (hangs, "hang")):
        planted = TextTarget("contracts", targets["contracts"].seed_dir, "", False, check)
        tally = run(planted, tmp_path / outcome, count=2, deadline_s=0.2)
        assert tally.counts[outcome] == 2, tally.report()


def test_the_command_line_prints_the_tally(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "20", "--format-output", "json"]) == 0

    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert [(f["format"], f["tried"]) for f in out["formats"]] == [("contracts", 20), ("run-record", 20)]


# What the fuzz run found, kept as plain regressions.


def test_a_binary_yaml_value_is_a_finding_not_a_traceback() -> None:
    [problem] = parse_yaml(b"a: !!binary AAAA\n").problems

    assert (problem.kind, problem.line) == ("syntax", 1)
    assert "tag:yaml.org,2002:binary cannot be read: a contract holds no binary data" in problem.message


def test_a_run_record_with_a_huge_integer_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"schema": "shiptwo.run/v1", "sequence": ' + "9" * 5000 + "}")

    with pytest.raises(EvidenceError, match=r"r\.json: run record is not valid JSON .*4300 digits") as raised:
        read_run_record(path)
    assert "\n" not in str(raised.value)


def test_a_run_record_with_encoded_surrogates_is_refused_in_one_line(tmp_path: Path) -> None:
    """json.loads of bytes lets CESU-8 surrogates through; the record is read as strict UTF-8."""
    path = tmp_path / "r.json"
    path.write_bytes(b'{"schema": "shiptwo.run/v1", "x": "\xed\xa0\x80"}')

    with pytest.raises(EvidenceError, match=r"r\.json: run record is not valid JSON .*utf-8") as raised:
        read_run_record(path)
    assert "\n" not in str(raised.value)


def test_seed_0_input_1384_of_the_run_records_is_no_longer_a_traceback(
    targets: dict[str, TextTarget], tmp_path: Path
) -> None:
    """The 2,000-input run's one traceback: a surrogate in a record's covered-file name."""
    tally = run(targets["run-record"], tmp_path, count=0, seed=0, only=1384)
    assert tally.tried == 1 and not tally.findings, tally.report()
