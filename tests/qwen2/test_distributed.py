"""`torchrun --nproc_per_node 2 -m shiptwo train` (gloo, CPU) follows the one-process loss trajectory.

Both runs see the same global batches; DDP's gradient average over two equal halves is the
gradient of the global mean loss, so per-step losses agree to float rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shiptwo.qwen2.checkpoint import save_apr
from shiptwo.qwen2.model import Qwen2, Qwen2Config

CFG = Qwen2Config(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=48,
    max_position_embeddings=64,
)


def _run(launcher: list[str], args: list[str], run_dir: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            *launcher,
            "-m",
            "shiptwo",
            "train",
            *args,
            "--run-dir",
            str(run_dir),
            "--output",
            str(run_dir / "ckpt"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(shard_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_apr(Qwen2(CFG), tmp_path / "init.apr")
    args = [
        "--init",
        str(tmp_path / "init.apr"),
        "--shards",
        str(shard_dirs[0]),
        "--val-shards",
        str(shard_dirs[1]),
        "--steps",
        "5",
        "--lr",
        "1e-2",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
        "--eval-batches",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    ]
    one = _run([sys.executable], args, tmp_path / "one")
    two = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
        args,
        tmp_path / "two",
    )
    assert json.loads((tmp_path / "two" / "host.json").read_text())["world_size"] == 2
    assert [r["event"] for r in one] == [r["event"] for r in two]
    for a, b in zip(one, two, strict=True):
        key = "loss" if a["event"] == "step" else "val_loss"
        assert b[key] == pytest.approx(a[key], abs=1e-4), (
            f"step {a['step']}: one process {a[key]}, two {b[key]}"
        )
        if a["event"] == "step":
            assert b["tokens_seen"] == a["tokens_seen"] and b["grad_norm"] == pytest.approx(
                a["grad_norm"], rel=1e-3
            )
