"""`shiptwo.progress`: plain lines off a terminal, at a bounded rate; nothing when disabled."""

from __future__ import annotations

import io

from shiptwo.progress import LineProgress, progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(total: float, step_seconds: float, steps: int, *, interval: float = 10.0) -> list[str]:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(
        total=total,
        desc="train",
        unit="step",
        unit_scale=False,
        initial=0,
        stream=out,
        interval=interval,
        clock=clock,
    )
    for i in range(steps):
        clock.now += step_seconds
        bar.set_postfix_str(f"loss {2.5 - i / 10:.4f}")
        bar.update(1)
    bar.close()
    return out.getvalue().splitlines()


def test_fast_steps_print_the_first_every_interval_and_the_last() -> None:
    got = lines(total=40, step_seconds=1.9, steps=40)
    assert got[0] == "train: step 1/40 (2%) loss 2.5000, 1.9 s/step"
    assert got[-1] == "train: step 40/40 (100%) loss -1.4000, 1.9 s/step"
    # 76 s of steps, a line at most every 10 s: the first, about seven, and the last.
    assert 7 <= len(got) <= 10
    assert got[1].startswith("train: step 7/40 ")  # 1.9 * 6 = 11.4 s after the first line


def test_slow_steps_get_a_line_each() -> None:
    got = lines(total=3, step_seconds=12.0, steps=3)
    assert [line.split(" loss")[0] for line in got] == [
        "train: step 1/3 (33%)",
        "train: step 2/3 (67%)",
        "train: step 3/3 (100%)",
    ]
    assert got[0].endswith("12.0 s/step")


def test_an_interrupted_run_says_where_it_stopped_on_close() -> None:
    got = lines(total=40, step_seconds=0.5, steps=5)
    assert got[-1].startswith("train: step 5/40 (12%)")
    assert got[-1].endswith("2.0 step/s")


def test_bytes_are_scaled() -> None:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(
        total=48e6,
        desc="encode-corpus",
        unit="B",
        unit_scale=True,
        initial=0,
        stream=out,
        interval=10,
        clock=clock,
    )
    clock.now += 3
    bar.update(12.6e6)
    assert out.getvalue() == "encode-corpus: 12.6 MB/48.0 MB (26%), 4.2 MB/s\n"


def test_disabled_or_off_a_terminal() -> None:
    quiet = io.StringIO()
    bar = progress(total=3, desc="train", unit="step", enabled=False, stream=quiet)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""
    plain = io.StringIO()  # StringIO.isatty() is False: lines, not a tqdm bar
    bar = progress(total=3, desc="train", unit="step", stream=plain)
    bar.update(3)
    bar.close()
    assert plain.getvalue().startswith("train: step 3/3 (100%)")
    assert "\r" not in plain.getvalue()
