"""The seeds' loss- and eval-path defects, planted on purpose: controls of the eval and train falsifiers.

Each defect replaces one function of the real loss path the way the bug looked (see the seeds'
H1 eval findings), through a `patch.setattr(owner, name, value)` such as pytest's `monkeypatch`,
so it is undone when the test ends. Weight and config defects live in `shiptwo.models.defects`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from shiptwo.qwen2 import model as model_mod


class Patcher(Protocol):
    """What planting needs of pytest's `monkeypatch`: a `setattr` that is undone later."""

    def setattr(self, target: Any, name: str, value: Any) -> None: ...


def _divided_twice(patch: Patcher) -> None:
    real_ce = model_mod.chunked_cross_entropy

    def divided_twice(head: Any, hidden: torch.Tensor, targets: torch.Tensor, **kw: Any) -> torch.Tensor:
        return real_ce(head, hidden, targets, **kw) / hidden.shape[0]  # the mean, divided by N again

    patch.setattr(model_mod, "chunked_cross_entropy", divided_twice)


def _last_chunk_dropped(patch: Patcher) -> None:
    real_ce = model_mod.chunked_cross_entropy

    def last_chunk_dropped(
        head: Any, hidden: torch.Tensor, targets: torch.Tensor, *, chunk_rows: int | None = None
    ) -> torch.Tensor:
        n = hidden.shape[0]
        rows = chunk_rows or max(1, model_mod.LOSS_CHUNK_ELEMENTS // head.out_features)
        if n <= rows:
            return real_ce(head, hidden, targets, chunk_rows=rows)
        total = hidden.new_zeros(())
        for start in range(0, n - rows, rows):  # the off-by-one: the loop stops before the last chunk
            total = total + model_mod._ce_sum(
                head, hidden[start : start + rows], targets[start : start + rows]
            )
        return total / n

    patch.setattr(model_mod, "chunked_cross_entropy", last_chunk_dropped)


def _unshifted_eval_labels(patch: Patcher) -> None:
    # The seeds' H1C: the held-out batch's targets are its inputs, never shifted by one.
    real_loss = model_mod.Qwen2.loss
    patch.setattr(model_mod.Qwen2, "loss", lambda self, idx, targets: real_loss(self, idx, idx))


def _eval_reads_stale_training_logits(patch: Patcher) -> None:
    # The seeds' H1A: one logits buffer shared by training and eval; a training step writes it,
    # and eval, finding a buffer of the right size, reads it instead of its own logits.
    real_ce = model_mod.chunked_cross_entropy
    buffer: dict[str, torch.Tensor] = {}

    def shared_logits_buffer(
        head: Any, hidden: torch.Tensor, targets: torch.Tensor, **kw: Any
    ) -> torch.Tensor:
        if torch.is_grad_enabled():  # a training step
            buffer["logits"] = head(hidden).detach().float()
            return real_ce(head, hidden, targets, **kw)
        logits = buffer.get("logits")
        if logits is None or logits.shape[0] != hidden.shape[0]:
            logits = buffer["logits"] = head(hidden).float()
        return F.cross_entropy(logits, targets.long())

    patch.setattr(model_mod, "chunked_cross_entropy", shared_logits_buffer)


LOSS_DEFECTS: dict[str, Callable[[Patcher], None]] = {
    "loss-divided-twice": _divided_twice,
    "last-chunk-dropped": _last_chunk_dropped,
    "unshifted-eval-labels": _unshifted_eval_labels,
    "eval-reads-stale-training-logits": _eval_reads_stale_training_logits,
}


def plant_loss_defect(name: str, patch: Patcher) -> bool:
    """Plant loss-path defect `name` through `patch`; False when `name` is not a loss-path defect."""
    plant = LOSS_DEFECTS.get(name)
    if plant is None:
        return False
    plant(patch)
    return True
