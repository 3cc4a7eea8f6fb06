"""Benchmark: shiptwo's Qwen2 forward pass against transformers' Qwen2ForCausalLM, same weights.

One random Qwen2 config (Qwen2.5-0.5B's layer shape: hidden 896, 14 heads, 2 KV heads, FFN 4864;
fewer layers and a smaller vocab so a CPU run takes seconds) is built in transformers, saved, and
loaded by `shiptwo.qwen2.checkpoint.from_pretrained`; both models run the same batch under
inference_mode, interleaved (alternating which goes first), and the best times are compared as a
ratio (goal <= 1.1x): on a shared machine the minimum is the least disturbed estimate.
transformers uses its default attention (sdpa), as shiptwo does.

    .venv/bin/python benchmarks/bench_forward.py [--layers 4] [--vocab 32768] [--batch 2] [--seq 256]
        [--device cpu|cuda] [--dtype fp32|bf16] [--repeats 5] [--format text|json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import transformers

from shiptwo.jsonout import print_json
from shiptwo.qwen2.checkpoint import from_pretrained
from shiptwo.qwen2.model import max_rel_err

GOAL = 1.1  # shiptwo's forward time within 1.1x of transformers'


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32_768)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--format", choices=("text", "json"), default="text")
    args = ap.parse_args(argv)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=args.layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
    )
    peer = transformers.Qwen2ForCausalLM(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        peer.save_pretrained(tmp)
        ours = from_pretrained(tmp, device=args.device, dtype=dtype)
    peer = peer.to(device=args.device, dtype=dtype)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=args.device)

    with torch.inference_mode():
        err = max_rel_err(ours(ids), peer(ids).logits)  # also the warm-up
        t_ours, t_peer = [], []
        for i in range(args.repeats):  # interleaved: drift in machine load hits both sides alike
            pair = [(t_ours, lambda: ours(ids)), (t_peer, lambda: peer(ids).logits)]
            for times, fn in pair if i % 2 == 0 else pair[::-1]:
                times.append(timed(fn, args.device))
    m_ours, m_peer = min(t_ours), min(t_peer)
    tokens = args.batch * args.seq
    if args.format == "json":
        print_json(
            {
                "layers": args.layers,
                "vocab": args.vocab,
                "batch": args.batch,
                "seq": args.seq,
                "device": args.device,
                "dtype": args.dtype,
                "logits_rel_err": err,
                "ours_best_s": m_ours,
                "peer_best_s": m_peer,
                "ratio_time": m_ours / m_peer,
                "goal_ratio_time": GOAL,
            },
            indent=2,
        )
        return 0
    print(
        f"config: {args.layers} layers, hidden 896, 14/2 heads, vocab {args.vocab}; "
        f"batch {args.batch}x{args.seq} on {args.device} {args.dtype}, "
        f"torch threads {torch.get_num_threads()}; logits rel err {err:.2e}"
    )
    print(
        f"shiptwo      {m_ours * 1e3:8.1f} ms  {tokens / m_ours:10.0f} tok/s  "
        f"(best of {args.repeats}; median {statistics.median(t_ours) * 1e3:.1f} ms)"
    )
    print(
        f"transformers {m_peer * 1e3:8.1f} ms  {tokens / m_peer:10.0f} tok/s  "
        f"(median {statistics.median(t_peer) * 1e3:.1f} ms)"
    )
    print(f"ratio shiptwo/transformers time: {m_ours / m_peer:.3f}x (goal <= {GOAL}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
