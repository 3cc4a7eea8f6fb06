"""`python -m shiptwo.fuzz`: every reader's fuzz run, larger than the test suite's (docs/fuzzing.md).

    python -m shiptwo.fuzz --format all --count 20000 --seed 0 --format-output json
    python -m shiptwo.fuzz --format text --count 5000      # the six tokenizer/corpus text formats
    python -m shiptwo.fuzz --format contracts --count 5000 # contracts and run records

`--format` takes a binary format (apr, gguf, safetensors), `binary`, `text`, `contracts` or
`all`. `--only` and `--save` apply to the binary formats.

Per format it prints inputs tried, loaded, clean refusals, tracebacks, hangs (and the rarer
findings: memory, unclear refusals, disagreements with an oracle), and exits 1 if any input
was a finding. `--only INDEX` reruns one input; `--save DIR` keeps every finding's bytes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shiptwo.fuzz.binary import DEFAULT_DEADLINE_S, Tally, Target, make_input, run

# Format name -> the module whose `target(workdir)` builds it (imported only when asked for).
FORMATS = {"apr": "shiptwo.fuzz.apr", "gguf": "shiptwo.fuzz.gguf", "safetensors": "shiptwo.fuzz.safetensors"}


def load_target(name: str, workdir: Path) -> Target:
    """The fuzz target of one format, its seed written into `workdir`."""
    target: Target = importlib.import_module(FORMATS[name]).target(workdir)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shiptwo.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--format", choices=(*FORMATS, "binary", "text", "contracts", "all"), default="all")
    parser.add_argument("--count", type=int, default=5000, help="inputs per format (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S, help="seconds per input")
    parser.add_argument("--only", type=int, metavar="INDEX", help="run the one input INDEX")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write each finding's input to DIR")
    parser.add_argument("--format-output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    if args.count < 0 or args.deadline <= 0:
        parser.error("--count must be >= 0 and --deadline > 0")
    names = list(FORMATS) if args.format in ("all", "binary") else [n for n in FORMATS if n == args.format]
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory(prefix="shiptwo-fuzz-") as tmp:
        for group in ("text", "contracts"):
            if args.format in (group, "all"):
                for tally in _run_group(group, Path(tmp) / group, args):
                    tallies.append(tally)
                    if args.format_output == "text":
                        _print_text(tally)
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            target = load_target(name, workdir)
            tally = run(
                target, workdir, count=args.count, seed=args.seed, deadline_s=args.deadline, only=args.only
            )
            tallies.append(tally)
            if args.save is not None:
                _save(target, tally, args.save)
            if args.format_output == "text":
                _print_text(tally)
    if args.format_output == "json":
        print(
            json.dumps({"formats": [t.as_dict() for t in tallies], "ok": not any(t.failed for t in tallies)})
        )
    return 1 if any(t.failed for t in tallies) else 0


def _run_group(group: str, workdir: Path, args: argparse.Namespace) -> list[Tally]:
    """The text formats' or the contract formats' tallies (their own loops, same outcomes)."""
    module = importlib.import_module(f"shiptwo.fuzz.{group}")
    workdir.mkdir(parents=True)
    targets = module.build_targets(workdir / "seeds")
    return [
        module.run(t, workdir / name, count=args.count, seed=args.seed, deadline_s=args.deadline)
        for name, t in targets.items()
    ]


def _print_text(t: Tally) -> None:
    c = t.counts
    rest = ", ".join(f"{c[k]} {k}" for k in c if k not in ("loaded", "refused", "traceback", "hang"))
    print(
        f"{t.format}: {t.tried} inputs (seed {t.seed}) in {t.seconds:.1f} s: {c.get('loaded', 0)} loaded, "
        f"{c.get('refused', 0)} clean refusals, {c.get('traceback', 0)} tracebacks, {c.get('hang', 0)} hangs"
        + (f", {rest}" if rest else "")
    )
    if t.findings:
        print(t.report(limit=20).split("\n", 1)[1])
    sys.stdout.flush()


def _save(target: Target, tally: Tally, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in tally.findings:
        image, _ = make_input(target, tally.seed, f.index)
        (out / f"{target.name}-{tally.seed}-{f.index}{target.suffix}").write_bytes(image)


if __name__ == "__main__":
    sys.exit(main())
