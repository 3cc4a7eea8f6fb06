"""Benchmark: the real Qwen2.5-Coder-0.5B-Instruct, shiptwo against its peers, in one run.

Needs `shiptwo models fetch` (or $SHIPTWO_QWEN_DIR / $SHIPTWO_QWEN_GGUF). Prints three groups of
ratios, each against the peer measured in the same run:

- load: shiptwo `from_pretrained` of the HF snapshot (BF16 -> fp32), of the APR file and of the
  GGUF, against transformers `from_pretrained` of the same snapshot (best of --repeats);
- eval: mean-loss forward over the same --batch x --seq tokens of CPython source, shiptwo against
  transformers on the same snapshot (interleaved, best of --repeats), as tokens/s and a ratio
  (goal >= 1.0x throughput);
- bf16: both models' weights cast to bf16 (where this CPU gains from it: AVX512-BF16 or AMX),
  shiptwo against transformers again (interleaved), and shiptwo's bf16 against its own fp32.

Torch runs --threads threads (2 unless told) on both sides. --skip-load loads each model once
instead of timing the loaders; --format json prints the figures as JSON instead of lines.

    .venv/bin/python benchmarks/bench_real_model.py [--batch 4] [--seq 256] [--repeats 3] [--threads 2]
        [--skip-load] [--format text|json] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from shiptwo.harness.gates import check_gate
from shiptwo.models.evaltext import python_windows
from shiptwo.models.fetch import model_root
from shiptwo.models.registry import DEFAULT_QWEN2, MODELS
from shiptwo.qwen2.checkpoint import from_pretrained
from shiptwo.qwen2.evaluate import eval_batch


def best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def peer_loss(model: Any, batch: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = model(batch[:, :-1]).logits.float()
        return float(
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        )


def interleaved(
    ours: Callable[[], float], peer: Callable[[], float], repeats: int
) -> tuple[float, float, float, float]:
    """Best times and last losses of two evals run alternately (who goes first alternates too)."""
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    losses = {"ours": 0.0, "peer": 0.0}
    for i in range(repeats + 1):  # the first pair is the warm-up
        pair = [("ours", ours), ("peer", peer)]
        for who, fn in pair if i % 2 == 0 else pair[::-1]:
            gc.collect()
            start = time.perf_counter()
            losses[who] = fn()
            elapsed = time.perf_counter() - start
            if i:
                times[who].append(elapsed)
    return min(times["ours"]), min(times["peer"]), losses["ours"], losses["peer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--skip-load", action="store_true", help="load each model once, untimed")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    say = print if args.format == "text" else (lambda *_: None)
    snapshot_gate, gguf_gate = check_gate("qwen-artifacts"), check_gate("qwen-gguf")
    if not (snapshot_gate.ok and gguf_gate.ok):
        raise SystemExit(f"needs the real model: {snapshot_gate.reason}; {gguf_gate.reason}")
    snapshot, gguf = snapshot_gate.artifacts[0].parent, gguf_gate.artifacts[0]
    apr_file = model_root(MODELS[DEFAULT_QWEN2]) / "model.apr"
    batch = python_windows(snapshot / "tokenizer.json", rows=args.batch, seq=args.seq)
    figures: dict[str, Any] = {"batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads()}

    loads = 1 if args.skip_load else args.repeats
    t_peer_load, peer = best(
        lambda: transformers.AutoModelForCausalLM.from_pretrained(str(snapshot), dtype=torch.float32).eval(),
        loads,
    )
    t_hf, ours = best(lambda: from_pretrained(snapshot, dtype=torch.float32), loads)
    if not args.skip_load:
        t_apr, _ = best(lambda: from_pretrained(apr_file, dtype=torch.float32), args.repeats)
        t_gguf, _ = best(lambda: from_pretrained(gguf, dtype=torch.float32), args.repeats)
        gc.collect()
        figures["load_s"] = {
            "transformers_snapshot": t_peer_load,
            "shiptwo_snapshot": t_hf,
            "shiptwo_apr": t_apr,
            "shiptwo_gguf": t_gguf,
        }
        say(
            f"load (fp32, best of {args.repeats}): transformers snapshot {t_peer_load:.2f} s | shiptwo "
            f"snapshot {t_hf:.2f} s ({t_hf / t_peer_load:.2f}x) | APR {t_apr:.2f} s "
            f"({t_apr / t_peer_load:.2f}x) | GGUF {t_gguf:.2f} s ({t_gguf / t_peer_load:.2f}x)"
        )

    tokens = args.batch * args.seq
    x, y = batch[:, :-1], batch[:, 1:]
    t_ours, t_peer, loss_ours, loss_peer = interleaved(
        lambda: eval_batch(ours, x, y), lambda: peer_loss(peer, batch), args.repeats
    )
    figures["eval"] = {
        "shiptwo_tok_s": tokens / t_ours,
        "transformers_tok_s": tokens / t_peer,
        "throughput_ratio": t_peer / t_ours,
        "loss_shiptwo": loss_ours,
        "loss_transformers": loss_peer,
    }
    say(
        f"eval {args.batch}x{args.seq} fp32, {args.threads} threads: shiptwo {tokens / t_ours:.0f} tok/s, "
        f"transformers {tokens / t_peer:.0f} tok/s -> throughput ratio {t_peer / t_ours:.3f}x "
        f"(goal >= 1.0x); loss {loss_ours:.4f} vs {loss_peer:.4f} nats"
    )

    # Cast in place, one model after the other: never a third copy of the weights.
    ours, peer = ours.to(torch.bfloat16), peer.to(torch.bfloat16)
    gc.collect()
    t_bf16, t_peer_bf16, loss_bf16, loss_peer_bf16 = interleaved(
        lambda: eval_batch(ours, x, y), lambda: peer_loss(peer, batch), args.repeats
    )
    figures["bf16"] = {
        "tok_s": tokens / t_bf16,
        "transformers_tok_s": tokens / t_peer_bf16,
        "throughput_ratio": t_peer_bf16 / t_bf16,
        "speedup_vs_fp32": t_ours / t_bf16,
        "loss": loss_bf16,
        "loss_transformers": loss_peer_bf16,
    }
    say(
        f"eval bf16 weights: shiptwo {tokens / t_bf16:.0f} tok/s, transformers {tokens / t_peer_bf16:.0f} "
        f"tok/s -> throughput ratio {t_peer_bf16 / t_bf16:.3f}x; shiptwo bf16 = {t_ours / t_bf16:.2f}x "
        f"its fp32 throughput; loss {loss_bf16:.4f} vs {loss_peer_bf16:.4f} nats"
    )
    if args.format == "json":
        print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
