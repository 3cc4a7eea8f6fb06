"""The fuzz loop: damaged copies of a valid seed file, each run through a format's readers.

A format (`shiptwo.fuzz.apr`, `.gguf`, `.safetensors`) supplies a `Target`: the seed image with
its field and section layout, optional mutations of its own, and `check(path)`, which runs every
public reader over one file. Each input either loads, or is refused with the format's error
(`FormatError`, one line naming the file); anything else is a finding: another exception (a
traceback a user would see), a run past the per-input deadline (a hang), or a jump in the
process's peak memory (an allocation the file's own bytes could not justify).

Every input is made from its own `random.Random(f"{seed}:{format}:{index}")`, so one failing
input is rebuilt exactly from (format, seed, index): `python -m shiptwo.fuzz --only INDEX`.
"""

from __future__ import annotations

import random
import resource
import signal
import struct
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiptwo.errors import FormatError

# Values a length, count, offset or dimension field is set to: the edges of every integer width.
INTERESTING: tuple[int, ...] = (
    0,
    1,
    2,
    7,
    8,
    63,
    64,
    65,
    255,
    256,
    2**15 - 1,
    2**15,
    2**16 - 1,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
)
# How much the peak RSS may grow over one input before it counts as unbounded memory: far more
# than any tiny seed needs, far less than a length field taken on trust would allocate.
MEMORY_SLACK_BYTES = 256 << 20
DEFAULT_DEADLINE_S = 2.0
OUTCOMES = ("loaded", "refused", "traceback", "hang", "memory", "unclear", "disagreement")
FAILURES = ("traceback", "hang", "memory", "unclear", "disagreement")


class Disagreement(Exception):
    """Raised by a check when an independent reader of the format (the oracle) refuses an input
    that ours loaded."""


@dataclass(frozen=True)
class Field:
    """A fixed-width integer field of the seed: where it is and its struct code ("<Q", "<i")."""

    name: str
    offset: int
    fmt: str


@dataclass(frozen=True)
class Target:
    """One binary format under test: its seed and how to read a file of it."""

    name: str
    suffix: str
    image: bytes
    fields: tuple[Field, ...]
    sections: tuple[tuple[int, int], ...]  # [start, end) byte ranges: moved, repeated, cut at
    check: Callable[[Path], None]  # runs every reader; returns when the file loads
    # Format-aware damage (rebuilt JSON headers, recomputed checksums): given the rng and the
    # generically damaged image, returns the image to test and a label, or None to keep it.
    special: Callable[[random.Random, bytes], tuple[bytes, str] | None] | None = None


@dataclass
class Finding:
    """One input that did not load or refuse cleanly."""

    index: int
    outcome: str
    how: str  # the damage done
    detail: str  # the exception and where it came from


@dataclass
class Tally:
    """Counts per outcome for one format, with the findings themselves."""

    format: str
    seed: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    findings: list[Finding] = field(default_factory=list)
    # What refused the inputs: the field a refusal names first ("header checksum", "tensor 'a'").
    refused_by: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, index: int, outcome: str, how: str, detail: str) -> None:
        """Count one input's outcome; a failure keeps its finding, with the index that rebuilds it."""
        self.counts[outcome] += 1
        if outcome in FAILURES:
            self.findings.append(Finding(index, outcome, how, detail))

    @property
    def tried(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(self.counts[o] for o in FAILURES)

    def report(self, limit: int = 30) -> str:
        """The counts and the first `limit` findings, each with the index that rebuilds its input."""
        lines = [
            f"{self.format} (seed {self.seed}): {self.failed} of {self.tried} inputs failed {self.counts}"
        ]
        lines += [f"  input {f.index} ({f.outcome}): {f.how}: {f.detail}" for f in self.findings[:limit]]
        if len(self.findings) > limit:
            lines.append(f"  ... and {len(self.findings) - limit} more")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "seed": self.seed,
            "tried": self.tried,
            **self.counts,
            "seconds": round(self.seconds, 2),
            "refused_by": dict(self.refused_by.most_common()),
            "findings": [
                {"index": f.index, "outcome": f.outcome, "damage": f.how, "detail": f.detail}
                for f in self.findings
            ],
        }


def input_rng(fmt: str, seed: int, index: int) -> random.Random:
    """The generator of input `index`: the same (format, seed, index) always gives the same input."""
    return random.Random(f"{seed}:{fmt}:{index}")


def pack_field(f: Field, value: int) -> bytes:
    """`value` packed into the field's width: wrapped to unsigned, or to signed for a signed code."""
    bits = 8 * struct.calcsize(f.fmt)
    value %= 1 << bits
    if f.fmt[-1].islower() and value >= 1 << (bits - 1):  # b h i q: signed
        value -= 1 << bits
    return struct.pack(f.fmt, value)


def interesting(rng: random.Random, original: int | None = None) -> int:
    """A value for an integer field: an edge of some width, a small or negative number, or off by one."""
    roll = rng.random()
    if original is not None and roll < 0.2:
        return original + rng.choice((-1, 1, 64, -64))
    if roll < 0.3:
        return -rng.choice((1, 2, 64, 2**31, 2**63))
    if roll < 0.4:
        return rng.randrange(0, 4096)
    return rng.choice(INTERESTING)


def damage(target: Target, rng: random.Random) -> tuple[bytes, str]:
    """One damaged copy of the seed and a short label of what was done to it."""
    buf = bytearray(target.image)
    kind = rng.choice(("flip", "flip", "field", "field", "field", "truncate", "section", "splice"))
    if kind == "flip":
        n = rng.choice((1, 1, 2, 4, 16))
        for _ in range(n):
            at = rng.randrange(len(buf))
            buf[at] = rng.randrange(256) if rng.random() < 0.5 else buf[at] ^ (1 << rng.randrange(8))
        how = f"flip {n} byte(s)"
    elif kind == "field":
        picked = rng.sample(target.fields, k=min(len(target.fields), rng.choice((1, 1, 2, 3))))
        parts = []
        for f in picked:
            (old,) = struct.unpack_from(f.fmt, buf, f.offset)
            value = interesting(rng, old)
            buf[f.offset : f.offset + struct.calcsize(f.fmt)] = pack_field(f, value)
            parts.append(f"{f.name}={value}")
        how = "set " + ", ".join(parts)
    elif kind == "truncate":
        cut = _boundary(target, rng) + rng.choice((-1, 0, 0, 1))
        cut = min(max(cut, 0), len(buf) - 1)
        del buf[cut:]
        how = f"truncate at {cut}"
    elif kind == "section":
        (a, b), (c, d) = rng.choice(target.sections), rng.choice(target.sections)
        if rng.random() < 0.5:
            buf[c:c] = target.image[a:b]
            how = f"repeat [{a}, {b}) at {c}"
        else:
            lo, hi = sorted(((a, b), (c, d)))
            if lo[1] > hi[0]:  # overlapping ranges: swap with the bytes after instead
                hi = (lo[1], min(len(buf), lo[1] + lo[1] - lo[0]))
            buf[lo[0] : hi[1]] = buf[hi[0] : hi[1]] + buf[lo[1] : hi[0]] + buf[lo[0] : lo[1]]
            how = f"swap [{lo[0]}, {lo[1]}) with [{hi[0]}, {hi[1]})"
    else:
        at = rng.randrange(len(buf) + 1)
        src = rng.randrange(len(target.image))
        piece = target.image[src : src + rng.choice((1, 8, 64, 512))]
        if rng.random() < 0.5:
            buf[at:at] = piece
            how = f"insert {len(piece)} bytes from {src} at {at}"
        else:
            del buf[at : at + len(piece)]
            how = f"delete {len(piece)} bytes at {at}"
    return bytes(buf), how


def _boundary(target: Target, rng: random.Random) -> int:
    edges = [*(f.offset for f in target.fields), *(s for r in target.sections for s in r)]
    return rng.choice(edges) if rng.random() < 0.8 else rng.randrange(len(target.image))


def make_input(target: Target, seed: int, index: int) -> tuple[bytes, str]:
    """Input `index` of a run: damaged generically, then (for most inputs) by the format's own hook."""
    rng = input_rng(target.name, seed, index)
    image, how = damage(target, rng)
    if target.special is not None:
        special = target.special(rng, image)
        if special is not None:
            image, label = special
            how = f"{how}; {label}" if label.startswith("+") else label
    return image, how


class _Deadline(BaseException):
    """Raised inside a reader that ran past the per-input deadline (a BaseException: no reader
    may catch it)."""


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def classify(target: Target, path: Path, deadline_s: float) -> tuple[str, str]:
    """Run the format's readers on one file: (outcome, detail), `memory` on top of `judge`'s."""
    before = _peak_rss()
    outcome, detail = judge(lambda: target.check(path), str(path), deadline_s, refusal=FormatError)
    grown = _peak_rss() - before
    if outcome in ("loaded", "refused") and grown > MEMORY_SLACK_BYTES:
        outcome, detail = "memory", f"peak memory grew by {grown >> 20} MiB reading one small file"
    return outcome, detail


def judge(
    check: Callable[[], None], where: str, deadline_s: float, *, refusal: type[Exception]
) -> tuple[str, str]:
    """Run `check` under the per-input deadline and say what it did: the one classification every
    fuzz loop (binary, text, contracts) uses.

    loaded; refused (a `refusal` naming `where` on one line); unclear (a refusal that does not);
    disagreement (an oracle refused what we loaded); hang; memory (MemoryError); traceback (any
    other exception, BaseExceptions included: a pyo3 PanicException is one).
    """
    timer = threading.current_thread() is threading.main_thread()
    if timer:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, deadline_s)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Garbage bytes decode to inf and NaN on purpose; numpy saying so is not a failure.
            warnings.simplefilter("ignore", RuntimeWarning)
            check()
        outcome, detail = "loaded", ""
    except _Deadline:
        outcome, detail = "hang", f"still running after {deadline_s} s"
    except Disagreement as exc:
        outcome, detail = "disagreement", str(exc)[:300]
    except refusal as exc:
        message = str(exc)
        if where not in message or "\n" in message:
            outcome, detail = "unclear", f"refusal does not name the file in one line: {message[:300]!r}"
        else:
            outcome, detail = "refused", message
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        outcome, detail = ("memory" if isinstance(exc, MemoryError) else "traceback"), _describe(exc)
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    if outcome in ("loaded", "refused") and elapsed > deadline_s:
        outcome, detail = "hang", f"took {elapsed:.2f} s, over the {deadline_s} s deadline"
    return outcome, detail


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Deadline


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno} ({where.name})" if where else ""
    return f"{type(exc).__name__}: {str(exc)[:300]}{at}"


def run(
    target: Target,
    workdir: Path,
    *,
    count: int,
    seed: int = 0,
    deadline_s: float = DEFAULT_DEADLINE_S,
    only: int | None = None,
) -> Tally:
    """Try `count` damaged inputs (or the one input `only`) and tally what each did."""
    tally = Tally(target.name, seed)
    path = workdir / f"input{target.suffix}"
    # The undamaged seed first, untimed: it must load (or the run proves nothing), and it pays
    # the one-off imports (torch) that no input's deadline should be charged for.
    path.write_bytes(target.image)
    target.check(path)
    start = time.perf_counter()
    for index in indexes(count, only):
        image, how = make_input(target, seed, index)
        # A new file each time, never rewritten in place: a map of the last input that is still
        # alive keeps its own (unlinked) bytes instead of seeing this one's.
        path.unlink(missing_ok=True)
        path.write_bytes(image)
        outcome, detail = classify(target, path, deadline_s)
        tally.add(index, outcome, how, detail)
        if outcome == "refused":
            tally.refused_by[detail[len(str(path)) + 2 :].split(": ")[0][:60]] += 1
    path.unlink(missing_ok=True)
    tally.seconds = time.perf_counter() - start
    return tally


def indexes(count: int, only: int | None) -> Iterator[int]:
    """The input indexes a run tries: 0..count-1, or the one input `only` (to rebuild a finding)."""
    return iter((only,)) if only is not None else iter(range(count))
