"""Benchmark: `train_hex_bpe` (what `shiptwo tokenize train` runs) against `tokenizers`' BpeTrainer.

Corpus: real Python, the standard library sources of this interpreter, up to --mb megabytes,
each file one document. The task is the same on both sides: each document is one word of its
bytes (the peer's ByteLevel pre-tokenizer without its regex split), merges counted over all
positions until --vocab ids or no pair occurs twice. The merges themselves are checked elsewhere
(tests/tokenize/test_hexbpe.py, against a literal reading of aprender's rule); tie-breaks differ,
so only their number is compared here.

Each side trains in a fresh process, with the documents already in memory before the clock
starts; the sides alternate, best of R. Reported: wall seconds, CPU seconds (the peer trains on
every core; shiptwo on one), and peak RSS above the process's size after loading the corpus, per
corpus byte. Goals: peak memory per corpus byte bounded (<= 40 B) and a throughput ratio >= 1.0.

    python benchmarks/bench_tokenize_train.py [--mb 5] [--vocab 2000] [--repeats 2] [--format json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from corpora import stdlib_sources

MEMORY_GOAL_B_PER_BYTE = 40.0


def corpus(mb: float) -> list[str]:
    """Stdlib sources, sorted by path, until `mb` megabytes of UTF-8."""
    texts: list[str] = []
    size = 0
    for text in stdlib_sources():
        texts.append(text)
        size += len(text.encode("utf-8"))
        if size >= mb * 1e6:
            break
    return texts


def _child(side: str, mb: float, vocab: int) -> dict[str, Any]:
    from shiptwo.tokenize.hexbpe import SPECIAL_TOKENS, train_hex_bpe

    texts = corpus(mb)
    size = sum(len(t.encode("utf-8")) for t in texts)
    if side == "shiptwo":
        import numpy  # noqa: F401  (the trainer's; loaded before the baseline, like the peer's library)

        def train() -> int:
            return len(train_hex_bpe(texts, vocab_size=vocab).merges)
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        def train() -> int:
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
            trainer = trainers.BpeTrainer(
                vocab_size=vocab,
                min_frequency=2,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                special_tokens=list(SPECIAL_TOKENS),
                show_progress=False,
            )
            tok.train_from_iterator(texts, trainer)
            return len(json.loads(tok.to_str())["model"]["merges"])

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall, cpu = time.perf_counter(), time.process_time()
    merges = train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "merges": merges,
        "bytes": size,
        "peak_b_per_byte": (peak - baseline) / size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="corpus size in megabytes (default 5)")
    parser.add_argument("--vocab", type=int, default=2000, help="ids to train to (default 2000)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the best counts")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--child", choices=("shiptwo", "tokenizers"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.mb, args.vocab)))
        return 0

    runs: dict[str, list[dict[str, Any]]] = {"shiptwo": [], "tokenizers": []}
    for r in range(args.repeats):
        for side in ("shiptwo", "tokenizers") if r % 2 == 0 else ("tokenizers", "shiptwo"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                side,
                "--mb",
                str(args.mb),
                "--vocab",
                str(args.vocab),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{side} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            runs[side].append(json.loads(proc.stdout))
            print(
                f"[bench_tokenize_train] {side} run {r + 1}: {runs[side][-1]['wall_s']:.1f} s",
                file=sys.stderr,
            )
    best = {side: min(rs, key=lambda x: x["wall_s"]) for side, rs in runs.items()}
    ours, peer = best["shiptwo"], best["tokenizers"]
    figures = {
        "corpus_bytes": ours["bytes"],
        "vocab": args.vocab,
        "shiptwo_wall_s": ours["wall_s"],
        "shiptwo_cpu_s": ours["cpu_s"],
        "shiptwo_merges": ours["merges"],
        "shiptwo_peak_b_per_byte": max(x["peak_b_per_byte"] for x in runs["shiptwo"]),
        "tokenizers_wall_s": peer["wall_s"],
        "tokenizers_cpu_s": peer["cpu_s"],
        "tokenizers_merges": peer["merges"],
        "tokenizers_peak_b_per_byte": max(x["peak_b_per_byte"] for x in runs["tokenizers"]),
        "throughput_ratio_wall": peer["wall_s"] / ours["wall_s"],
        "throughput_ratio_cpu": peer["cpu_s"] / ours["cpu_s"],
        "memory_goal_b_per_byte": MEMORY_GOAL_B_PER_BYTE,
    }
    if args.format == "json":
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"train to {args.vocab} ids on {ours['bytes'] / 1e6:.1f} MB of Python: "
        f"shiptwo {ours['wall_s']:.1f} s "
        f"({ours['merges']} merges), tokenizers BpeTrainer {peer['wall_s']:.1f} s ({peer['merges']} merges): "
        f"{figures['throughput_ratio_wall']:.2f}x throughput by wall time, "
        f"{figures['throughput_ratio_cpu']:.2f}x by CPU time (goal >= 1.0); best of {args.repeats}"
    )
    print(
        f"peak memory per corpus byte: shiptwo {figures['shiptwo_peak_b_per_byte']:.0f} B "
        f"(goal <= {MEMORY_GOAL_B_PER_BYTE:.0f}), tokenizers {figures['tokenizers_peak_b_per_byte']:.0f} B"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
