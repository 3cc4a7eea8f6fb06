"""Benchmark: training tokens/s of shiptwo's trainer against a plain transformers training step.

Both sides start from the same random weights and run the same batches, interleaved: shiptwo's
`Trainer.train_batch` (forward, fp32 cross-entropy, backward, gradient clipping, the GATE-TRAIN-007
checks, AdamW) against transformers' Qwen2ForCausalLM with the same loss, clipping and AdamW.
Prints the best-step tokens/s for both and their ratio (goal >= 0.9). On CUDA (bf16 autocast on both sides)
it also prints model FLOPs utilisation: 6N + attention FLOPs per token x tokens/s / peak.

    .venv/bin/python benchmarks/bench_train.py [--layers 2] [--hidden 256] [--vocab 8192]
        [--batch 8] [--seq 128] [--steps 6] [--device cpu|cuda] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers

from shiptwo.qwen2.checkpoint import from_pretrained
from shiptwo.qwen2.model import flops_per_token
from shiptwo.qwen2.train import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    args = ap.parse_args()
    bf16 = args.device == "cuda"

    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        tie_word_embeddings=True,
    )
    peer = transformers.Qwen2ForCausalLM(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        peer.save_pretrained(tmp)
        ours = from_pretrained(tmp, device=args.device)
    peer = peer.to(args.device).train()
    trainer = Trainer(
        ours, TrainConfig(lr=1e-4, warmup_steps=0, autocast_bf16=bf16), total_steps=args.steps + 1
    )
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def peer_step(x: torch.Tensor, y: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
            logits = peer(x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, args.vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
        opt.step()
        return loss.item()

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(1)
    t_ours, t_peer = [], []
    for step in range(args.steps + 1):  # step 0 warms both up and is not timed
        ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g).to(args.device)
        x, y = ids[:, :-1], ids[:, 1:]
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
    print(
        f"config: {args.layers} layers, hidden {args.hidden}, {args.heads}/{args.kv_heads} heads, "
        f"vocab {args.vocab}; "
        f"batch {args.batch}x{args.seq} on {args.device}{' bf16 autocast' if bf16 else ' fp32'}, "
        f"torch threads {torch.get_num_threads()}; last losses {a:.4f} / {b:.4f}"
    )
    print(
        f"shiptwo      {ours_tps:10.0f} train tok/s  "
        f"(best of {args.steps} steps; median {tokens / statistics.median(t_ours):.0f})"
    )
    print(f"transformers {peer_tps:10.0f} train tok/s  (median {tokens / statistics.median(t_peer):.0f})")
    print(f"ratio shiptwo/transformers throughput: {ours_tps / peer_tps:.3f}x (goal >= 0.9x)")
    if args.device == "cuda":
        ours_cfg = ours.config
        mfu = flops_per_token(ours_cfg, args.seq) * ours_tps / (args.peak_tflops * 1e12)
        print(
            f"model FLOPs utilisation: {mfu * 100:.1f}% of {args.peak_tflops:.0f} TFLOP/s "
            f"({flops_per_token(ours_cfg, args.seq) / 1e6:.1f} MFLOP per token)"
        )


if __name__ == "__main__":
    main()
