"""Fuzzing the text formats (issue 14): 500 seeded damaged inputs each of vocab.json, merges.txt,
tokenizer.json, tiktoken ranks, config.json and JSONL; every one loads or is refused in one line
naming the file: no traceback, no hang. A failing input is rebuilt with `make_input(target, 0, i)`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shiptwo.errors import FormatError
from shiptwo.fuzz.text import TextTarget, build_targets, make_input, run

INPUTS = 500
FORMATS = ("vocab.json", "merges.txt", "tokenizer.json", "tiktoken", "config.json", "jsonl")


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TextTarget]:
    return build_targets(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("name", FORMATS)
def test_every_damaged_input_loads_or_is_refused_in_one_line(
    targets: dict[str, TextTarget], tmp_path: Path, name: str
) -> None:
    tally = run(targets[name], tmp_path, count=INPUTS, seed=0)
    assert tally.tried == INPUTS
    assert tally.failed == 0, tally.report()
    # The damage must be real and the seed must stay loadable: both outcomes occur.
    assert tally.counts["refused"] >= INPUTS // 4 and tally.counts["loaded"] >= 10, tally.report()


def test_inputs_are_rebuilt_exactly_from_their_index(targets: dict[str, TextTarget]) -> None:
    target = targets["tokenizer.json"]
    assert make_input(target, 0, 7) == make_input(target, 0, 7)
    assert len({make_input(target, 0, i)[0] for i in range(50)}) > 40


def _planted(check: object, tmp_path: Path) -> TextTarget:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "f.json").write_text('{"a": [1, 2, 3], "b": "x"}')
    return TextTarget("planted", seed, "f.json", True, check)  # type: ignore[arg-type]


def test_the_loop_catches_tracebacks_hangs_and_nameless_refusals(tmp_path: Path) -> None:
    seed = b'{"a": [1, 2, 3], "b": "x"}'

    def traceback_on_damage(d: Path) -> None:
        if (d / "f.json").read_bytes() != seed:
            raise KeyError("a")

    def hangs_on_damage(d: Path) -> None:
        if (d / "f.json").read_bytes() != seed:
            time.sleep(5)

    def nameless_on_damage(d: Path) -> None:
        if (d / "f.json").read_bytes() != seed:
            raise FormatError("f.json: damaged")  # not the path the user gave

    for i, (check, outcome) in enumerate(
        [(traceback_on_damage, "traceback"), (hangs_on_damage, "hang"), (nameless_on_damage, "unclear")]
    ):
        work = tmp_path / str(i)
        work.mkdir()
        tally = run(_planted(check, work), work, count=3, deadline_s=0.2)
        assert tally.counts[outcome] >= 1 and tally.failed == tally.counts[outcome], tally.report()
        assert f"({outcome})" in tally.report()
