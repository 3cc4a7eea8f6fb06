"""Benchmark: one training step of the real Qwen2.5-Coder-0.5B, shiptwo against transformers.

Needs `shiptwo models fetch` (or $SHIPTWO_QWEN_DIR). Both sides load the same HF snapshot in fp32
and take optimizer steps on the same --batch x --seq tokens of CPython source: shiptwo's
`Trainer.train_batch` (chunked fp32 cross-entropy, backward, clipping to 1.0, the GATE-TRAIN-007
checks, AdamW) against transformers' Qwen2ForCausalLM with the same loss, clipping and AdamW
(weight decay on matrices only, as the Trainer groups it). A step is forward + backward + update.

A training step of the 0.5B model peaks near 10 GB, so each side runs in a subprocess of its own,
one at a time (never both models' weights, gradients and AdamW moments at once). The rounds
alternate which side goes first; each subprocess warms up with one step, then times --steps.
Prints the best step time of each side (the least disturbed estimate on a shared machine), their
ratio (goal >= 1.0x) and both first-step losses (same weights and batch: they must agree).
--bf16 runs both sides under CPU bf16 autocast (fp32 weights and AdamW state, bf16 matmuls), for
CPUs with AVX512-BF16 or AMX.

    .venv/bin/python benchmarks/bench_real_train.py [--batch 1] [--seq 256] [--rounds 2] [--steps 2]
        [--threads 2] [--bf16] [--format text|json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

LR = 1e-4  # small enough that the timed steps barely move the weights


def run_side(side: str, *, batch: int, seq: int, steps: int, threads: int, bf16: bool) -> dict[str, Any]:
    """Load one side, take 1 + `steps` optimizer steps; the first step's loss and every timed step."""
    import torch

    from shiptwo.harness.gates import check_gate
    from shiptwo.models.evaltext import python_windows

    torch.set_num_threads(threads)
    gate = check_gate("qwen-artifacts")
    if not gate.ok:
        raise SystemExit(f"needs the real model: {gate.reason}")
    snapshot = gate.artifacts[0].parent
    ids = python_windows(snapshot / "tokenizer.json", rows=batch, seq=seq)
    x, y = ids[:, :-1], ids[:, 1:]

    if side == "shiptwo":
        from shiptwo.qwen2.checkpoint import from_pretrained
        from shiptwo.qwen2.train import TrainConfig, Trainer

        ours = from_pretrained(snapshot, dtype=torch.float32)
        trainer = Trainer(ours, TrainConfig(lr=LR, warmup_steps=0, autocast_bf16=bf16), total_steps=steps + 2)

        def step() -> float:
            return trainer.train_batch(x, y).loss

    else:
        import transformers

        peer = transformers.AutoModelForCausalLM.from_pretrained(str(snapshot), dtype=torch.float32).train()
        decay = [p for p in peer.parameters() if p.dim() >= 2]
        no_decay = [p for p in peer.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=LR,
            betas=(0.9, 0.95),
        )

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = peer(x).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
            opt.step()
            return float(loss.item())

    first_loss = step()  # the warm-up step: allocates AdamW's moments, not timed
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"first_loss": first_loss, "step_s": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2, help="subprocess pairs, alternating who goes first")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per subprocess (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    ap.add_argument("--side", choices=("shiptwo", "transformers"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = {"batch": args.batch, "seq": args.seq, "steps": args.steps, "threads": args.threads}
    if args.side:  # a child: one side, figures as JSON on stdout
        print(json.dumps(run_side(args.side, **sizes, bf16=args.bf16)))
        return

    results: dict[str, list[dict[str, Any]]] = {"shiptwo": [], "transformers": []}
    for r in range(args.rounds):
        order = ["shiptwo", "transformers"] if r % 2 == 0 else ["transformers", "shiptwo"]
        for side in order:
            cmd = [sys.executable, __file__, "--side", side, *(f"--{k}={v}" for k, v in sizes.items())]
            cmd += ["--bf16"] if args.bf16 else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[side].append(json.loads(out.strip().splitlines()[-1]))
    best = {side: min(t for run in runs for t in run["step_s"]) for side, runs in results.items()}
    tokens = args.batch * args.seq
    ratio = best["transformers"] / best["shiptwo"]
    figures = {
        **sizes,
        "rounds": args.rounds,
        "dtype": "bf16 autocast" if args.bf16 else "fp32",
        "shiptwo_step_s": best["shiptwo"],
        "transformers_step_s": best["transformers"],
        "shiptwo_tok_s": tokens / best["shiptwo"],
        "transformers_tok_s": tokens / best["transformers"],
        "step_speed_ratio": ratio,
        "first_loss_shiptwo": results["shiptwo"][0]["first_loss"],
        "first_loss_transformers": results["transformers"][0]["first_loss"],
    }
    if args.format == "json":
        print(json.dumps(figures, indent=2))
        return
    print(
        f"train step {args.batch}x{args.seq} {figures['dtype']}, {args.threads} threads, best of "
        f"{args.rounds * args.steps}: shiptwo {best['shiptwo']:.2f} s, transformers "
        f"{best['transformers']:.2f} s -> speed ratio {ratio:.3f}x (goal >= 1.0x); first-step loss "
        f"{figures['first_loss_shiptwo']:.4f} vs {figures['first_loss_transformers']:.4f} nats"
    )


if __name__ == "__main__":
    main()
