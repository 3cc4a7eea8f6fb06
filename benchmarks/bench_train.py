"""Benchmark: training tokens/s of shiptwo's trainer against a plain transformers training step.

Both sides start from the same random weights and run the same batches, interleaved: shiptwo's
`Trainer.train_batch` (forward, fp32 cross-entropy, backward, gradient clipping, the GATE-TRAIN-007
checks, AdamW) against transformers' Qwen2ForCausalLM with the same loss, clipping and AdamW.
Prints the best-step tokens/s for both and their ratio (goal >= 0.9x).

On CUDA (bf16 autocast on both sides) it also prints model FLOPs utilisation, 6N + attention FLOPs
per token x tokens/s over the device's dense bf16 peak (from its name; `--peak-tflops` for a device
the table lacks), and CPU-vs-CUDA parity from the same weights and batch: the logits' relative
error and the loss difference of CUDA fp32 and CUDA bf16 autocast against CPU fp32.

`--preset qwen2.5-0.5b` is the real model's architecture (24 layers, 896 wide, 14/2 heads, FFN
4864, vocab 151,936, tied embeddings) with random weights: throughput and FLOPs do not depend on
the values, so MFU needs no model file on the GPU machine (issue 13.6: goal >= 40%).

    .venv/bin/python benchmarks/bench_train.py [--preset small|qwen2.5-0.5b] [--layers 2]
        [--hidden 256] [--vocab 8192] [--batch 8] [--seq 128] [--steps 6] [--device cpu|cuda]
        [--peak-tflops TFLOPS] [--no-parity] [--format text|json]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from typing import Any

import torch
import transformers

from shiptwo.jsonout import print_json
from shiptwo.qwen2.checkpoint import from_pretrained
from shiptwo.qwen2.config import Qwen2Config
from shiptwo.qwen2.model import Qwen2, flops_per_token, max_rel_err
from shiptwo.qwen2.train import TrainConfig, Trainer

MFU_GOAL = 0.40
THROUGHPUT_GOAL = 0.9
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched as
# whole words against `torch.cuda.get_device_name()` ("NVIDIA H100 80GB HBM3"); the first match
# wins, so a longer name comes before its prefix.
BF16_PEAK_TFLOPS = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("RTX 4090", 165.0),
)
# Parity compares logits in fp64 on the CPU: a slice of the batch keeps that to a few GB.
PARITY_TOKENS = (1, 256)


def device_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the CUDA device called `name`, or None for one the table lacks."""
    for key, peak in BF16_PEAK_TFLOPS:
        if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", name):
            return peak
    return None


def build_config(args: argparse.Namespace) -> transformers.Qwen2Config:
    if args.preset == "qwen2.5-0.5b":
        real = Qwen2Config()  # shiptwo's defaults are the real 0.5B architecture
        return transformers.Qwen2Config(
            vocab_size=real.vocab_size,
            hidden_size=real.hidden_size,
            intermediate_size=real.intermediate_size,
            num_hidden_layers=real.num_layers,
            num_attention_heads=real.num_heads,
            num_key_value_heads=real.num_kv_heads,
            rope_theta=real.rope_theta,
            rms_norm_eps=real.rms_norm_eps,
            max_position_embeddings=real.max_position_embeddings,
            tie_word_embeddings=real.tied_embeddings,
        )
    return transformers.Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        tie_word_embeddings=True,
    )


def parity(cpu_model: Qwen2, cuda_model: Qwen2, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """CUDA fp32 and CUDA bf16 autocast against CPU fp32, on the same weights and batch."""

    def loss(logits: torch.Tensor) -> float:
        return float(
            torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten().to(logits.device))
        )

    with torch.inference_mode():
        ref = cpu_model(x.cpu())
        fp32 = cuda_model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = cuda_model(x)
    base = loss(ref)
    return {
        "cpu_fp32_loss": base,
        "cuda_fp32_logits_rel_err": max_rel_err(fp32, ref),
        "cuda_fp32_loss_diff": abs(loss(fp32) - base),
        "cuda_bf16_logits_rel_err": max_rel_err(bf16, ref),
        "cuda_bf16_loss_diff": abs(loss(bf16) - base),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=("small", "qwen2.5-0.5b"), default="small")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak (default: from the device name)")
    ap.add_argument("--no-parity", action="store_true", help="skip the CPU-vs-CUDA comparison")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device on this machine", file=sys.stderr)
        return 2
    peak = args.peak_tflops
    if cuda and peak is None:
        peak = device_peak_tflops(torch.cuda.get_device_name())

    torch.manual_seed(0)
    cfg = build_config(args)
    peer = transformers.Qwen2ForCausalLM(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        peer.save_pretrained(tmp)
        ours = from_pretrained(tmp, device=args.device)
        reference = from_pretrained(tmp, device="cpu") if cuda and not args.no_parity else None
    peer = peer.to(args.device).train()
    trainer = Trainer(
        ours, TrainConfig(lr=1e-4, warmup_steps=0, autocast_bf16=cuda), total_steps=args.steps + 1
    )
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    vocab = cfg.vocab_size

    def peer_step(x: torch.Tensor, y: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=cuda):
            logits = peer(x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
        opt.step()
        return loss.item()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(1)
    figures: dict[str, Any] = {}
    t_ours, t_peer = [], []
    a = b = float("nan")
    for step in range(args.steps + 1):  # step 0 warms both up and is not timed
        ids = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=g).to(args.device)
        x, y = ids[:, :-1], ids[:, 1:]
        if step == 0 and reference is not None:  # before any update: the weights are still equal
            rows, cols = PARITY_TOKENS
            figures["parity"] = parity(reference, ours, x[:rows, :cols], y[:rows, :cols])
            del reference
        sync()
        t0 = time.perf_counter()
        a = trainer.train_batch(x, y).loss
        sync()
        t1 = time.perf_counter()
        b = peer_step(x, y)
        sync()
        t2 = time.perf_counter()
        if step:
            t_ours.append(t1 - t0)
            t_peer.append(t2 - t1)
    tokens = args.batch * args.seq
    # Best step on a shared machine: the least disturbed estimate of each side.
    ours_tps, peer_tps = tokens / min(t_ours), tokens / min(t_peer)
    flops = flops_per_token(ours.config, args.seq)
    figures.update(
        {
            "preset": args.preset,
            "layers": cfg.num_hidden_layers,
            "hidden": cfg.hidden_size,
            "vocab": vocab,
            "batch": args.batch,
            "seq": args.seq,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "precision": "bf16 autocast" if cuda else "fp32",
            "torch_threads": torch.get_num_threads(),
            "last_loss_ours": a,
            "last_loss_peer": b,
            "ours_tokens_per_s": ours_tps,
            "peer_tokens_per_s": peer_tps,
            "ours_median_tokens_per_s": tokens / statistics.median(t_ours),
            "peer_median_tokens_per_s": tokens / statistics.median(t_peer),
            "ratio": ours_tps / peer_tps,
            "goal_ratio": THROUGHPUT_GOAL,
            "flops_per_token": flops,
        }
    )
    if cuda:
        figures["peak_tflops"] = peak
        figures["mfu"] = flops * ours_tps / (peak * 1e12) if peak else None
        figures["peer_mfu"] = flops * peer_tps / (peak * 1e12) if peak else None
        figures["goal_mfu"] = MFU_GOAL
    if args.format == "json":
        print_json(figures, indent=2)
        return 0
    print(
        f"config: {args.preset}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads, vocab {vocab}; "
        f"batch {args.batch}x{args.seq} "
        f"on {figures['device']} {figures['precision']}, torch threads {torch.get_num_threads()}; "
        f"last losses {a:.4f} / {b:.4f}"
    )
    print(
        f"shiptwo      {ours_tps:10.0f} train tok/s  (best of {args.steps} steps; "
        f"median {figures['ours_median_tokens_per_s']:.0f})"
    )
    print(f"transformers {peer_tps:10.0f} train tok/s  (median {figures['peer_median_tokens_per_s']:.0f})")
    print(f"ratio shiptwo/transformers throughput: {figures['ratio']:.3f}x (goal >= {THROUGHPUT_GOAL}x)")
    if cuda:
        if peak:
            print(
                f"model FLOPs utilisation: {figures['mfu']:.1%} of {peak:.0f} TFLOP/s bf16 "
                f"(transformers {figures['peer_mfu']:.1%}; {flops / 1e6:.1f} MFLOP per token; "
                f"goal >= {MFU_GOAL:.0%})"
            )
        else:
            print(f"model FLOPs utilisation: unknown peak for {figures['device']}: pass --peak-tflops")
        if "parity" in figures:
            p = figures["parity"]
            print(
                f"CPU fp32 vs CUDA: fp32 logits rel err {p['cuda_fp32_logits_rel_err']:.2e}, loss diff "
                f"{p['cuda_fp32_loss_diff']:.2e}; bf16 autocast rel err {p['cuda_bf16_logits_rel_err']:.2e}, "
                f"loss diff {p['cuda_bf16_loss_diff']:.2e} (CPU loss {p['cpu_fp32_loss']:.4f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
