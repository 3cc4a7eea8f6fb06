"""FALSIFY-EVAL-SANITY-001 and FALSIFY-EVAL-POLLUTION-001: the eval path measures what it says.

A fresh random model predicts nearly uniformly, so its mean token cross-entropy must sit near
ln(vocab); one training step on another batch must not collapse a held-out batch's eval loss
(the seeds' H1/H1A: val_loss 0.00081 at train_loss 1.20).

The loss runs in chunks here (`chunked_loss`), as it does for the real 151,936-entry vocab, so the
controls' defects in the chunked cross-entropy are on the path under test (`plant`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import shiptwo.qwen2.model as model_mod
from shiptwo.qwen2.checkpoint import save_hf
from shiptwo.qwen2.defects import plant_loss_defect
from shiptwo.qwen2.model import Qwen2, Qwen2Config
from shiptwo.qwen2.train import TrainConfig, Trainer, eval_batch

CFG = Qwen2Config(
    vocab_size=384,
    hidden_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=12,
    intermediate_size=96,
    tied_embeddings=True,
)
# Rows of logits per loss chunk: a 4 x 32 batch takes three chunks (48, 48, 32), as a batch of the
# real vocab takes several of 220 rows. Left at the default, this small vocab never chunks.
CHUNK_ROWS = 48


@pytest.fixture(autouse=True)
def chunked_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_mod, "LOSS_CHUNK_ELEMENTS", CFG.vocab_size * CHUNK_ROWS)


def plant(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the control's defect into the real loss or eval path (nothing on the real run)."""
    if control is not None and not plant_loss_defect(control.id, monkeypatch):
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


def batch(seed: int, *, b: int = 4, t: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, CFG.vocab_size, (b, t + 1), generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.falsifier("FALSIFY-EVAL-SANITY-001")
def test_fresh_model_scores_near_ln_vocab(
    record_measurement, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = Qwen2(CFG)
    x, y = batch(1)
    with torch.no_grad():
        logits = model(x)  # (B, T, V): the whole logits, no chunking, no eval path
    plain = F.cross_entropy(logits.reshape(-1, CFG.vocab_size), y.reshape(-1)).item()
    plant(falsifier_control, monkeypatch)
    loss = eval_batch(model, x, y)
    ratio = loss / math.log(CFG.vocab_size)
    record_measurement("eval_loss", loss)
    record_measurement("eval_loss_over_ln_vocab", ratio)
    # Near ln(vocab) is not enough: a loss missing a chunk, or scored against unshifted labels,
    # stays near it on a fresh model. The eval must be the mean token cross-entropy itself.
    record_measurement("eval_vs_plain_ce_abs_diff", abs(loss - plain))


def reference_loss(model: Qwen2, inputs: torch.Tensor, targets: torch.Tensor, directory: Path) -> float:
    """The held-out loss by an independent forward: transformers on the same weights, fresh process state."""
    transformers = pytest.importorskip("transformers")
    save_hf(model, directory)
    ref = transformers.Qwen2ForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    )
    ref.eval()
    with torch.no_grad():
        logits = ref(inputs).logits
    return float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)).item())


@pytest.mark.falsifier("FALSIFY-EVAL-POLLUTION-001")
def test_one_train_step_does_not_collapse_heldout_eval(
    record_measurement, tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(falsifier_control, monkeypatch)
    torch.manual_seed(0)
    model = Qwen2(CFG)
    heldout = batch(10)
    before = eval_batch(model, *heldout)
    assert eval_batch(model, *heldout) == before, "eval is not a pure function of weights and batch"
    # A large step on a different batch: the trainer's state is as hot as it will ever be.
    trainer = Trainer(model, TrainConfig(lr=1e-2, warmup_steps=0), total_steps=1)
    trainer.train_batch(*batch(11))
    assert model.training, "eval must not leave the model in a different mode"
    after = eval_batch(model, *heldout)
    record_measurement("eval_loss_drop_fraction", (before - after) / before)
    # A polluted eval can also return a normal-looking number (a stale buffer, the last train
    # loss): only an independent forward on the same weights can tell.
    reference = reference_loss(model, *heldout, tmp_path / "hf")
    record_measurement(
        "eval_vs_reference_abs_diff",
        max(abs(after - reference), abs(trainer.eval_batch(*heldout) - reference)),
    )


def test_eval_batch_makes_no_graph_and_restores_mode() -> None:
    model = Qwen2(CFG).train()
    x, y = batch(3)
    for p in model.parameters():
        p.grad = None
    eval_batch(model, x, y)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    eval_batch(model, x, y)
    assert not model.training
