"""FALSIFY-TRAIN-DIVERGENCE-001: a diverging run aborts, naming the gate and the numbers.

Forced divergences: a huge learning rate, and a NaN injected into the loss. Either must stop
the run with GATE-TRAIN-005 or GATE-TRAIN-007 before any checkpoint of a diverged model is written.

Controls disable each gate in the real trainer (`plant`); every test is bound to the gate it
expects to fire and skips the other gate's control.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import shiptwo.qwen2.train as train_mod
from shiptwo.errors import GateError
from shiptwo.qwen2.model import Qwen2, Qwen2Config
from shiptwo.qwen2.train import TrainConfig, train
from shiptwo.shards import ArrayWindows

# The gate each control disables.
CONTROL_GATE = {"divergence-gate-disabled": "GATE-TRAIN-005", "nonfinite-gate-disabled": "GATE-TRAIN-007"}


def plant(control: Any, monkeypatch: pytest.MonkeyPatch, *, expected_gate: str) -> None:
    """Disable the control's gate in shiptwo.qwen2.train; skip when this test expects the other gate."""
    if control is None:
        return
    if CONTROL_GATE[control.id] != expected_gate:
        pytest.skip(
            f"{control.id} disables {CONTROL_GATE[control.id]}; this test expects {expected_gate} to fire"
        )
    if control == "divergence-gate-disabled":
        # GATE-TRAIN-005 switched off: only the finiteness check of the val loss is left.
        def val_gate_without_005(
            epoch: int, val_loss: float, previous: float | None, **limits: float
        ) -> None:
            train_mod.check_finite({"val_loss": val_loss}, where=f"epoch {epoch} evaluation")

        monkeypatch.setattr(train_mod, "check_val_gate", val_gate_without_005)
    elif control == "nonfinite-gate-disabled":
        # GATE-TRAIN-007 switched off: NaN/Inf in loss, grad norm, lr or val loss pass unchecked.
        monkeypatch.setattr(train_mod, "check_finite", lambda values, *, where: None)
    else:
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


CFG = Qwen2Config(
    vocab_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
)
SEQ = 16


def aborts_at_a_gate(expected: str, run: Any) -> None:
    """`run()` must stop with a GateError matching `expected`; stopping otherwise refutes the prediction."""
    try:
        run()
    except GateError as exc:
        assert re.search(expected, str(exc)), f"{str(exc)!r} does not match {expected!r}"
    except Exception as exc:  # noqa: BLE001 - any other way out means the gates let the divergence through
        pytest.fail(
            f"the diverged run was not stopped by a gate: it ran on until {type(exc).__name__}: {exc}"
        )
    else:
        pytest.fail(f"the diverged run finished: no gate fired ({expected!r} expected)")


def data(seed: int) -> ArrayWindows:
    tokens = np.random.default_rng(seed).integers(0, CFG.vocab_size, 64 * (SEQ + 1), dtype=np.uint32)
    return ArrayWindows(tokens, seq_len=SEQ)


@pytest.mark.falsifier("FALSIFY-TRAIN-DIVERGENCE-001")
@pytest.mark.parametrize(
    ("lr", "clip", "expected"),
    [
        (10.0, 1.0, r"GATE-TRAIN-005 fired: epoch-0 val_loss \d+\.\d+ nats > 10\.0"),  # weights blow up
        (50.0, 1e9, r"GATE-TRAIN-007 fired at step \d+: grad_norm=nan"),  # arithmetic overflows
    ],
)
def test_huge_learning_rate_aborts(
    lr: float,
    clip: float,
    expected: str,
    tmp_path: Path,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant(falsifier_control, monkeypatch, expected_gate=expected[:14])
    torch.manual_seed(0)
    cfg = TrainConfig(lr=lr, warmup_steps=0, grad_clip=clip, batch_size=8, seq_len=SEQ, epochs=3)
    aborts_at_a_gate(
        expected,
        lambda: train(
            Qwen2(CFG), train_reader=data(1), val_reader=data(2), config=cfg, output_dir=tmp_path / "out"
        ),
    )
    assert not list(tmp_path.glob("out/epoch-*")), "a diverged run wrote a checkpoint"


@pytest.mark.falsifier("FALSIFY-TRAIN-DIVERGENCE-001")
def test_nan_in_loss_aborts_with_gate_007(
    tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(falsifier_control, monkeypatch, expected_gate="GATE-TRAIN-007")
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
    aborts_at_a_gate(
        r"GATE-TRAIN-007 fired at step \d+: train_loss=nan",
        lambda: train(
            model, train_reader=data(1), val_reader=data(2), config=cfg, output_dir=tmp_path / "out"
        ),
    )
    assert not (tmp_path / "out").exists(), "a diverged run wrote a checkpoint"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()), "the NaN update was applied"
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # earlier steps ran


@pytest.mark.falsifier("FALSIFY-TRAIN-DIVERGENCE-001")
@pytest.mark.parametrize(
    ("epoch", "val", "prev", "needle"),
    [
        (0, 12.5, None, "GATE-TRAIN-005 fired: epoch-0 val_loss 12.5000 nats > 10.0"),
        (0, float("nan"), None, "GATE-TRAIN-007 fired at epoch 0 evaluation: val_loss=nan"),
        (3, 5.0, 2.4, "GATE-TRAIN-005 fired: epoch-3 val_loss 5.0000 nats > 2.0 x previous 2.4000"),
        (2, float("inf"), 2.0, "GATE-TRAIN-007 fired at epoch 2 evaluation: val_loss=inf"),
    ],
)
def test_val_gate_numbers(
    epoch: int,
    val: float,
    prev: float | None,
    needle: str,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant(falsifier_control, monkeypatch, expected_gate=needle[:14])
    with pytest.raises(GateError) as err:
        train_mod.check_val_gate(epoch, val, prev)  # as the trainer calls it
    assert needle in str(err.value)


def test_val_gate_passes_healthy_values() -> None:
    train_mod.check_val_gate(0, 9.99, None)
    train_mod.check_val_gate(1, 4.8, 2.4)  # exactly 2x is allowed: the gate is "more than twice"
