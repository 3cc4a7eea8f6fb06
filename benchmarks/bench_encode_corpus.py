"""Benchmark: `encode-corpus` end to end against bare `tokenizers` encode_batch, on 1 and 2 threads.

Corpus: real Python, the standard library sources of this interpreter, as JSONL. The peer is
`Tokenizer.encode_batch` over the documents already in memory (no reading, no JSON, no audit, no
writing; its tokenizer loaded before the clock starts); the subject is the whole command: loading
the vocab, hashing the inputs, reading and parsing JSONL, encoding, EOS placement, the audit
histogram and writing shards. `encode_batch_fast` (no offsets, what encode-corpus calls) is
reported beside it.

Like with like: at N threads the peer runs with RAYON_NUM_THREADS=N, the command with
`--workers N` and RAYON_NUM_THREADS=1 (N encoding threads: in process for 1, one per worker
process for 2). Every measurement is a fresh process (the thread count is fixed when `tokenizers`
first encodes), the sides interleaved and their order alternated; best of R wall times
(timeit's rule: on a shared machine the minimum is the least disturbed run). Peak RSS: the
measuring process's, and for the command the largest worker's. Goal: ratio >= 1.0 at 1 and 2.
Needs the Qwen2 vocab (`shiptwo tokenize fetch-qwen2`) unless --tokenizer names another
byte-level tokenizer.json.

    python benchmarks/bench_encode_corpus.py [--max-files N] [--repeats R] [--threads 1 2] [--format json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corpora import stdlib_sources


def build_corpus(path: Path, max_files: int) -> int:
    """Write up to `max_files` stdlib sources as JSONL; returns how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for text in stdlib_sources():
            f.write(json.dumps({"content": text}) + "\n")
            count += 1
            if count == max_files:
                break
    return count


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def _measure(side: str, tokenizer: Path, corpus: Path, out: Path, workers: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process: wall and CPU seconds, tokens, peak RSS."""
    if side == "cmd":
        from shiptwo.tokenize.corpus import encode_corpus

        w0, c0 = time.perf_counter(), time.process_time()
        manifest = encode_corpus(tokenizer, [corpus], out, eos_policy="none", workers=workers, progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "wall_s": wall,
            "cpu_s": cpu + children.ru_utime + children.ru_stime,
            "tokens": manifest["total_tokens"],
            "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
            "worker_peak_rss_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN) if workers > 1 else None,
        }
    from tokenizers import Tokenizer

    tokenizer_json = tokenizer / "tokenizer.json" if tokenizer.is_dir() else tokenizer
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["content"] for line in f]
    bare = Tokenizer.from_file(str(tokenizer_json))
    fast = side == "fast"
    w0, c0 = time.perf_counter(), time.process_time()
    encode = bare.encode_batch_fast if fast else bare.encode_batch
    encodings = encode(texts, add_special_tokens=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "tokens": sum(len(e) for e in encodings),
        "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
        "worker_peak_rss_mb": None,
    }


def _run_child(side: str, threads: int, tokenizer: Path, corpus: Path, out: Path) -> dict[str, Any]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(1 if side == "cmd" else threads))
    env.pop("TOKENIZERS_PARALLELISM", None)
    args = [sys.executable, __file__, "--child", side, "--threads", str(threads)]
    args += ["--tokenizer", str(tokenizer), "--corpus", str(corpus), "--out", str(out)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} at {threads} threads failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--max-files", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--child", choices=["bare", "fast", "cmd"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child, args.tokenizer, args.corpus, args.out, args.threads[0])))
        return 0

    from shiptwo.tokenize.qwen2 import find_qwen2_tokenizer_dir

    tokenizer = args.tokenizer or find_qwen2_tokenizer_dir()
    if tokenizer is None:
        print("no Qwen2 vocab: run `shiptwo tokenize fetch-qwen2` or pass --tokenizer", file=sys.stderr)
        return 2
    text = args.format == "text"
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "stdlib.jsonl"
        files = build_corpus(corpus, args.max_files)
        mb = corpus.stat().st_size / 1e6
        if text:
            print(f"corpus: {files} Python files, {mb:.1f} MB of JSONL; {os.cpu_count()} cores")
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        sides = ["bare", "fast", "cmd"]
        for r in range(args.repeats):
            for threads in args.threads:
                # Interleaved, the order turned each repeat, so no side always runs first.
                for side in sides if r % 2 == 0 else sides[::-1]:
                    out = Path(tmp) / f"out-{r}-{threads}"
                    m = _run_child(side, threads, tokenizer, corpus, out)
                    runs.setdefault((side, threads), []).append(m)
                    if text:
                        print(
                            f"run {r}, {threads} thread(s), {side}: {m['wall_s']:.2f} s wall, "
                            f"{m['cpu_s']:.2f} s CPU, {m['tokens']:,} tokens",
                            flush=True,
                        )
        report: dict[str, Any] = {
            "corpus": {"files": files, "megabytes": round(mb, 3)},
            "cores": os.cpu_count(),
            "repeats": args.repeats,
            "goal": 1.0,
            "threads": {},
        }
        for threads in args.threads:
            best = {side: min(runs[side, threads], key=lambda m: m["wall_s"]) for side in sides}
            tokens = {best[side]["tokens"] for side in sides}
            if len(tokens) != 1:
                print(f"token counts differ at {threads} threads: {tokens}", file=sys.stderr)
                return 1
            n = tokens.pop()
            cmd, bare, fast = best["cmd"], best["bare"], best["fast"]
            report["threads"][str(threads)] = {
                "tokens": n,
                "bare_tokens_per_s": round(n / bare["wall_s"]),
                "fast_tokens_per_s": round(n / fast["wall_s"]),
                "cmd_tokens_per_s": round(n / cmd["wall_s"]),
                "ratio": round(bare["wall_s"] / cmd["wall_s"], 3),
                "ratio_fast": round(fast["wall_s"] / cmd["wall_s"], 3),
                "ratio_cpu": round(bare["cpu_s"] / cmd["cpu_s"], 3),
                "bare_peak_rss_mb": round(bare["peak_rss_mb"], 1),
                "cmd_peak_rss_mb": round(cmd["peak_rss_mb"], 1),
                "cmd_worker_peak_rss_mb": cmd["worker_peak_rss_mb"] and round(cmd["worker_peak_rss_mb"], 1),
            }
    if not text:
        print(json.dumps(report, indent=2))
        return 0
    for threads, t in report["threads"].items():
        workers = f"--workers {threads}" + (" (1 thread each)" if int(threads) > 1 else "")
        print(
            f"{threads} thread(s): bare encode_batch {t['bare_tokens_per_s']:,} tok/s, "
            f"encode_batch_fast {t['fast_tokens_per_s']:,}, encode-corpus {workers} "
            f"{t['cmd_tokens_per_s']:,} (best of {args.repeats})"
        )
        rss = f"peak RSS bare {t['bare_peak_rss_mb']:.0f} MB, encode-corpus {t['cmd_peak_rss_mb']:.0f} MB"
        if t["cmd_worker_peak_rss_mb"]:
            rss += f" + {t['cmd_worker_peak_rss_mb']:.0f} MB per worker"
        print(
            f"  ratio encode-corpus / encode_batch {t['ratio']:.2f}x wall (goal >= 1.00), "
            f"{t['ratio_cpu']:.2f}x CPU; / encode_batch_fast {t['ratio_fast']:.2f}x wall; {rss}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
