"""Benchmark: the real Qwen2.5-Coder-0.5B-Instruct, shiptwo against its peers, in one run.

Needs `shiptwo models fetch` (or $SHIPTWO_QWEN_DIR / $SHIPTWO_QWEN_GGUF). Prints three groups of
ratios, each against the peer measured in the same run:

- load: shiptwo `from_pretrained` of the HF snapshot (BF16 -> fp32), of the APR file and of the
  GGUF, against transformers `from_pretrained` of the same snapshot (best of --repeats);
- eval: mean-loss forward over the same --batch x --seq tokens of CPython source, shiptwo against
  transformers on the same snapshot (interleaved, best of --repeats), as tokens/s and a ratio
  (goal >= 1.0x throughput);
- bf16: shiptwo's eval in bf16 weights against its own fp32, where this CPU gains from it.

    .venv/bin/python benchmarks/bench_real_model.py [--batch 4] [--seq 256] [--repeats 3] [--json OUT]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    snapshot_gate, gguf_gate = check_gate("qwen-artifacts"), check_gate("qwen-gguf")
    if not (snapshot_gate.ok and gguf_gate.ok):
        raise SystemExit(f"needs the real model: {snapshot_gate.reason}; {gguf_gate.reason}")
    snapshot, gguf = snapshot_gate.artifacts[0].parent, gguf_gate.artifacts[0]
    apr_file = model_root(MODELS[DEFAULT_QWEN2]) / "model.apr"
    batch = python_windows(snapshot / "tokenizer.json", rows=args.batch, seq=args.seq)
    figures: dict[str, Any] = {"batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads()}

    t_peer_load, peer = best(
        lambda: transformers.AutoModelForCausalLM.from_pretrained(str(snapshot), dtype=torch.float32).eval(),
        args.repeats,
    )
    t_hf, ours = best(lambda: from_pretrained(snapshot, dtype=torch.float32), args.repeats)
    t_apr, _ = best(lambda: from_pretrained(apr_file, dtype=torch.float32), args.repeats)
    t_gguf, _ = best(lambda: from_pretrained(gguf, dtype=torch.float32), args.repeats)
    gc.collect()
    figures["load_s"] = {
        "transformers_snapshot": t_peer_load,
        "shiptwo_snapshot": t_hf,
        "shiptwo_apr": t_apr,
        "shiptwo_gguf": t_gguf,
    }
    print(
        f"load (fp32, best of {args.repeats}): transformers snapshot {t_peer_load:.2f} s | shiptwo snapshot "
        f"{t_hf:.2f} s ({t_hf / t_peer_load:.2f}x) | APR {t_apr:.2f} s ({t_apr / t_peer_load:.2f}x) | GGUF "
        f"{t_gguf:.2f} s ({t_gguf / t_peer_load:.2f}x)"
    )

    tokens = args.batch * args.seq
    ours_times, peer_times, loss_ours, loss_peer = [], [], 0.0, 0.0
    for i in range(args.repeats + 1):  # interleaved; the first pair is the warm-up
        pair = [
            ("ours", lambda: eval_batch(ours, batch[:, :-1], batch[:, 1:])),
            ("peer", lambda: peer_loss(peer, batch)),
        ]
        for who, fn in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            value = fn()
            elapsed = time.perf_counter() - start
            if i:
                (ours_times if who == "ours" else peer_times).append(elapsed)
            if who == "ours":
                loss_ours = value
            else:
                loss_peer = value
    t_ours, t_peer = min(ours_times), min(peer_times)
    figures["eval"] = {
        "shiptwo_tok_s": tokens / t_ours,
        "transformers_tok_s": tokens / t_peer,
        "throughput_ratio": t_peer / t_ours,
        "loss_shiptwo": loss_ours,
        "loss_transformers": loss_peer,
    }
    print(
        f"eval {args.batch}x{args.seq} fp32: shiptwo {tokens / t_ours:.0f} tok/s, "
        f"transformers {tokens / t_peer:.0f} tok/s -> throughput ratio {t_peer / t_ours:.3f}x "
        f"(goal >= 1.0x); loss {loss_ours:.4f} vs {loss_peer:.4f} nats"
    )
    peer = None  # free its 2 GB before the bf16 copy
    gc.collect()

    bf16 = ours.to(torch.bfloat16)
    t_bf16, loss_bf16 = best(lambda: eval_batch(bf16, batch[:, :-1], batch[:, 1:]), args.repeats)
    figures["bf16"] = {"tok_s": tokens / t_bf16, "speedup_vs_fp32": t_ours / t_bf16, "loss": loss_bf16}
    print(
        f"eval bf16 weights: {tokens / t_bf16:.0f} tok/s = {t_ours / t_bf16:.2f}x fp32 throughput; "
        f"loss {loss_bf16:.4f} nats"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
