"""The fuzz loop itself: each kind of finding is caught, by input, and the command exits 1 on one."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from shiptwo.errors import FormatError, UsageError
from shiptwo.fuzz import __main__ as command
from shiptwo.fuzz.binary import Disagreement, Field, Target, classify, damage, input_rng, pack_field, run

SEED = bytes(range(64))


def _target(check: object) -> Target:
    fields = (Field("count", 0, "<Q"), Field("small", 8, "<i"))
    return Target("planted", ".bin", SEED, fields, ((0, 8), (8, 32), (32, 64)), check)  # type: ignore[arg-type]


def _loads(path: Path) -> None:
    if path.read_bytes()[:8] != SEED[:8]:
        raise FormatError(f"{path}: count: damaged")


def _key_error(path: Path) -> None:
    _loads(path)
    if path.read_bytes() != SEED:
        raise KeyError("count")


def _slow(path: Path) -> None:
    if path.read_bytes() != SEED:
        time.sleep(5)


def _nameless(path: Path) -> None:
    if path.read_bytes() != SEED:
        raise FormatError("count: damaged")  # no file named


def _oracle_says_no(path: Path) -> None:
    if path.read_bytes() != SEED:
        raise Disagreement("the oracle refuses it")


@pytest.mark.parametrize(
    "check,outcome",
    [(_key_error, "traceback"), (_slow, "hang"), (_nameless, "unclear"), (_oracle_says_no, "disagreement")],
)
def test_each_kind_of_finding_is_caught(tmp_path: Path, check: object, outcome: str) -> None:
    tally = run(_target(check), tmp_path, count=4, seed=0, deadline_s=0.2)
    assert tally.counts[outcome] >= 1 and tally.failed == tally.counts[outcome]
    finding = tally.findings[0]
    assert finding.outcome == outcome and f"input {finding.index} ({outcome})" in tally.report()


def test_clean_refusals_and_loads_are_not_findings(tmp_path: Path) -> None:
    tally = run(_target(_loads), tmp_path, count=300, seed=0)
    assert tally.failed == 0 and tally.counts["loaded"] > 0 and tally.counts["refused"] > 0
    assert tally.refused_by == {"count": tally.counts["refused"]}


def test_a_seed_that_does_not_load_stops_the_run(tmp_path: Path) -> None:
    def refuses_all(path: Path) -> None:
        raise FormatError(f"{path}: x: no")

    with pytest.raises(FormatError):
        run(_target(refuses_all), tmp_path, count=1)


def test_a_hang_in_the_deadline_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    start = time.perf_counter()
    assert classify(_target(_slow), path, deadline_s=0.2)[0] == "hang"
    assert time.perf_counter() - start < 2


def test_field_values_wrap_to_the_field_width() -> None:
    assert pack_field(Field("u", 0, "<Q"), -1) == b"\xff" * 8
    assert pack_field(Field("i", 0, "<i"), 2**31) == struct.pack("<i", -(2**31))
    assert pack_field(Field("h", 0, "<H"), 2**64 - 1) == b"\xff\xff"


def test_damage_is_deterministic_and_varied() -> None:
    target = _target(_loads)
    first = [damage(target, input_rng("planted", 0, i)) for i in range(100)]
    assert first == [damage(target, input_rng("planted", 0, i)) for i in range(100)]
    kinds = {how.split()[0] for _, how in first}
    assert kinds >= {"flip", "set", "truncate", "insert", "delete"}
    assert any(how.startswith(("repeat", "swap")) for _, how in first)


def test_the_command_reports_per_format_and_exits_1_on_a_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main(["--format", "safetensors", "--count", "40", "--format-output", "json"]) == 0
    (fmt,) = json.loads(capsys.readouterr().out)["formats"]
    assert fmt["format"] == "safetensors" and fmt["tried"] == 40 and fmt["traceback"] == fmt["hang"] == 0
    assert fmt["loaded"] + fmt["refused"] == 40

    monkeypatch.setattr(command, "load_target", lambda name, workdir: _target(_key_error))
    assert command.main(["--format", "apr", "--count", "10", "--save", str(tmp_path / "found")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("planted: 10 inputs (seed 0)") and "tracebacks" in out
    assert "(traceback): " in out and "KeyError: 'count'" in out
    saved = sorted((tmp_path / "found").iterdir())
    assert saved and saved[0].name.startswith("planted-0-")


def test_the_command_refuses_a_bad_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        command.main(["--count", "-1"])
    assert exc.value.code == 2 and "--count must be >= 0" in capsys.readouterr().err


def test_usage_error_is_not_a_clean_refusal(tmp_path: Path) -> None:
    # Only the format's own error counts as a refusal: a UsageError from a reader is a finding.
    def usage(path: Path) -> None:
        if path.read_bytes() != SEED:
            raise UsageError(f"{path}: not a format error")

    assert run(_target(usage), tmp_path, count=3).counts["traceback"] == 3
