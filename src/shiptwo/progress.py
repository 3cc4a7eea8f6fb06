"""Progress of a long command on stderr: a tqdm bar on a terminal, plain lines elsewhere.

A bar is redrawn with carriage returns, which a CI log or `2> run.log` turns into one unreadable
line, so tqdm's own default is to show nothing off a terminal; a 70-second `shiptwo train` then
looked hung. Off a terminal this prints whole lines instead, at most one per `interval` seconds
(plus the first and the last), so a log shows the run moving without filling up:

    train: step 3/40 (8%) loss 2.3110, 1.9 s/step
    encode-corpus: 12.6/48.0 MB (26%) 4.20 MB/s

Every long command (train, encode-corpus, tokenize train, models fetch) builds its progress
here; `--no-progress` (enabled=False) silences both kinds.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

# Seconds between two plain lines; a step slower than this gets a line of its own.
LINE_INTERVAL_S = 10.0


class Progress(Protocol):
    """The part of tqdm's interface the commands use; both kinds of progress provide it."""

    n: float

    def update(self, n: float = 1) -> Any: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...

    def close(self) -> Any: ...


def progress(
    *,
    total: float,
    desc: str,
    unit: str = "it",
    unit_scale: bool = False,
    initial: float = 0,
    enabled: bool = True,
    stream: TextIO | None = None,
    interval: float = LINE_INTERVAL_S,
) -> Progress:
    """A progress display on `stream` (default stderr): a bar on a terminal, lines elsewhere.

    `unit_scale` shows byte counts as kB/MB/GB (with unit "B"); `set_postfix_str` adds a note
    (a loss, a rate) to what is shown. Nothing at all when `enabled` is False.
    """
    out = stream if stream is not None else sys.stderr
    if enabled and _is_terminal(out):
        try:
            from tqdm import tqdm
        except ModuleNotFoundError:  # the harness-only install has no tqdm: lines still work
            pass
        else:
            bar: Progress = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, file=out
            )
            return bar
    return LineProgress(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        initial=initial,
        stream=out if enabled else None,
        interval=interval,
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


class LineProgress:
    """Progress as plain lines, at most one per `interval` seconds; silent when `stream` is None."""

    def __init__(
        self,
        *,
        total: float,
        desc: str,
        unit: str,
        unit_scale: bool,
        initial: float,
        stream: TextIO | None,
        interval: float,
        clock: Any = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self._start = initial
        self.stream, self.interval, self.clock = stream, interval, clock
        self.postfix = ""
        self._t0 = clock()
        self._last_line: float | None = None
        self._shown = initial

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        last = self._last_line
        if last is None or self.n >= self.total or now - last >= self.interval:
            self._emit(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.n != self._shown:  # progress made since the last line: say where it stopped
            self._emit(self.clock())

    def line(self, now: float) -> str:
        """What one line says at time `now`: done/total, share, note, and the rate."""
        done, total = self._amount(self.n), self._amount(self.total)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        head = f"{done}/{total}{share}" if self.unit_scale else f"{self.unit} {done}/{total}{share}"
        note = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {head}{note}{self._rate(now)}"

    def _amount(self, value: float) -> str:
        if not self.unit_scale:
            return f"{value:g}"
        for prefix in ("", "k", "M", "G", "T"):
            if abs(value) < 1000 or prefix == "T":
                return f"{value:.1f} {prefix}{self.unit}" if prefix else f"{value:g} {self.unit}"
            value /= 1000
        raise AssertionError("unreachable")  # pragma: no cover

    def _rate(self, now: float) -> str:
        done, seconds = self.n - self._start, now - self._t0
        if done <= 0 or seconds <= 0:
            return ""
        per_second = done / seconds
        if per_second < 1 and not self.unit_scale:  # slow steps read better as seconds per step
            return f", {seconds / done:.1f} s/{self.unit}"
        return f", {self._amount(per_second)}/s" if self.unit_scale else f", {per_second:.1f} {self.unit}/s"

    def _emit(self, now: float) -> None:
        self._last_line, self._shown = now, self.n
        if self.stream is not None:
            print(self.line(now), file=self.stream, flush=True)
