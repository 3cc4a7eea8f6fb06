"""FALSIFY-TRAIN-DIVERGENCE-001: a diverging run aborts, naming the gate and the numbers.

Forced divergences: a huge learning rate, and a NaN injected into the loss. Either must stop
the run with GATE-TRAIN-005 or GATE-TRAIN-007 before any checkpoint of a diverged model is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shiptwo.errors import GateError
from shiptwo.model import Qwen2, Qwen2Config
from shiptwo.tokenize.shards import ArrayWindows
from shiptwo.train import TrainConfig, check_val_gate, train

CFG = Qwen2Config(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  intermediate_size=64)
SEQ = 16


def data(seed: int) -> ArrayWindows:
    tokens = np.random.default_rng(seed).integers(0, CFG.vocab_size, 64 * (SEQ + 1), dtype=np.uint32)
    return ArrayWindows(tokens, seq_len=SEQ)


@pytest.mark.falsifier("FALSIFY-TRAIN-DIVERGENCE-001")
@pytest.mark.parametrize(("lr", "clip", "expected"), [
    (10.0, 1.0, r"GATE-TRAIN-005 fired: epoch-0 val_loss \d+\.\d+ nats > 10\.0"),  # weights blow up
    (50.0, 1e9, r"GATE-TRAIN-007 fired at step \d+: grad_norm=nan"),  # arithmetic overflows
])
def test_huge_learning_rate_aborts(lr: float, clip: float, expected: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(lr=lr, warmup_steps=0, grad_clip=clip, batch_size=8, seq_len=SEQ, epochs=3)
    with pytest.raises(GateError, match=expected):
        train(Qwen2(CFG), train_reader=data(1), val_reader=data(2), config=cfg, output_dir=tmp_path / "out")
    assert not list(tmp_path.glob("out/epoch-*")), "a diverged run wrote a checkpoint"


@pytest.mark.falsifier("FALSIFY-TRAIN-DIVERGENCE-001")
def test_nan_in_loss_aborts_with_gate_007(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Qwen2(CFG)
    calls = {"n": 0}

    def poison(_mod: torch.nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
        if not model.training:
            return out
        calls["n"] += 1
        return out * float("nan") if calls["n"] > 3 else out  # three clean steps, then poison

    model.lm_head.register_forward_hook(poison)
    cfg = TrainConfig(lr=1e-3, batch_size=8, seq_len=SEQ, epochs=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GateError, match=r"GATE-TRAIN-007 fired at step \d+: train_loss=nan"):
        train(model, train_reader=data(1), val_reader=data(2), config=cfg, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a diverged run wrote a checkpoint"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()), "the NaN update was applied"
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # earlier steps ran


@pytest.mark.falsifier("FALSIFY-TRAIN-DIVERGENCE-001")
@pytest.mark.parametrize(("epoch", "val", "prev", "needle"), [
    (0, 12.5, None, "GATE-TRAIN-005 fired: epoch-0 val_loss 12.5000 nats > 10.0"),
    (0, float("nan"), None, "GATE-TRAIN-007 fired at epoch 0 evaluation: val_loss=nan"),
    (3, 5.0, 2.4, "GATE-TRAIN-005 fired: epoch-3 val_loss 5.0000 nats > 2.0 x previous 2.4000"),
    (2, float("inf"), 2.0, "GATE-TRAIN-007 fired at epoch 2 evaluation: val_loss=inf"),
])
def test_val_gate_numbers(epoch: int, val: float, prev: float | None, needle: str) -> None:
    with pytest.raises(GateError) as err:
        check_val_gate(epoch, val, prev)
    assert needle in str(err.value)


def test_val_gate_passes_healthy_values() -> None:
    check_val_gate(0, 9.99, None)
    check_val_gate(1, 4.8, 2.4)  # exactly 2x is allowed: the gate is "more than twice"
