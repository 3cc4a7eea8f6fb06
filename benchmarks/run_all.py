"""Run every benchmark and write one JSON of figures: each benchmark's own `--format json` output.

Benchmarks run one after another (they measure ratios against a peer in the same run, and two
at once would slow each other's sides unevenly). A benchmark that fails or times out is recorded
with its exit code and the tail of its output; the command then exits 1.

    .venv/bin/python benchmarks/run_all.py [-o benchmarks/figures.json] [--only NAME ...]
        [--skip NAME ...] [--timeout 1800] [--update]

`--update` keeps the other benchmarks' results already in the output file and replaces only those
run now; every result carries the time it was measured at.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> extra arguments; every script takes `--format json`.
BENCHMARKS: dict[str, list[str]] = {
    "bench_plugin": [],
    "bench_validate": [],
    "bench_apr_read": [],
    "bench_encode_corpus": [],
    "bench_tokenize_train": [],
    "bench_forward": [],
    "bench_train": [],
    "bench_real_model": [],  # needs `shiptwo models fetch`
    "bench_real_train": [],  # needs `shiptwo models fetch`; about 10 GB at its peak
}


def run_one(name: str, extra: list[str], timeout: float) -> dict[str, object]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), *extra, "--format", "json"]
    print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    at = _now()
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        return {"ok": False, "at": at, "exit": proc.returncode, "wall_s": wall, "error": tail}
    try:
        figures = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return {"ok": False, "at": at, "wall_s": wall, "error": f"--format json printed no JSON ({exc})"}
    print(f"[run_all] {name}: {wall:.0f} s", file=sys.stderr, flush=True)
    return {"ok": True, "at": at, "wall_s": wall, "figures": figures}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "figures.json")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--skip", nargs="*", choices=sorted(BENCHMARKS), default=[])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    parser.add_argument("--update", action="store_true", help="keep the other results in the output file")
    args = parser.parse_args(argv)
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    results: dict[str, object] = {}
    if args.update and args.output.exists():
        try:
            results = dict(json.loads(args.output.read_text(encoding="utf-8"))["results"])
        except (ValueError, KeyError, TypeError) as exc:
            print(
                f"error: {args.output}: not a figures file to update ({exc}); run without --update",
                file=sys.stderr,
            )
            return 2
    results.update({name: run_one(name, BENCHMARKS[name], args.timeout) for name in names})
    doc = {
        "at": _now(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    from shiptwo.fileio import atomic_write_bytes

    atomic_write_bytes(args.output, (json.dumps(doc, indent=2) + "\n").encode())
    failed = [n for n in names if not results[n]["ok"]]  # type: ignore[index]
    print(f"wrote {args.output}; {len(names) - len(failed)} ok, failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
