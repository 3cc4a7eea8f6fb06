"""The trainer: AdamW, warmup + cosine, gradient clipping, bf16 autocast on CUDA, two gates.

Loss is mean token cross-entropy in nats. Evaluation (`eval_batch`, `evaluate`) lives in
`shiptwo.qwen2.evaluate`, out of reach of anything the optimizer or a training step holds; what
a run writes (step log, summary, epoch evidence and checkpoints) in `shiptwo.qwen2.rundir`.

Gates (docs/aprender-interop.md, "Gates"), each raising `GateError` that names itself:
- GATE-TRAIN-007: NaN/Inf in train loss, grad norm, lr or val loss aborts - before the optimizer
  step, so a poisoned update is never applied or saved.
- GATE-TRAIN-005: epoch-0 val_loss non-finite or above 10.0, or a later val_loss more than twice
  the previous one, aborts the run. Both limits are the seeds' defaults and TrainConfig fields
  (`gate_val_loss_max`, `gate_val_rise_factor`): a from-scratch model of Qwen2's 151,936-token
  vocab starts near ln V = 11.93 nats and needs a higher epoch-0 ceiling.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shiptwo.errors import GateError, UsageError
from shiptwo.fileio import check_output_dir
from shiptwo.progress import progress as progress_display
from shiptwo.qwen2.distributed import DistContext, local_slice, mean_over_ranks
from shiptwo.qwen2.evaluate import autocast, batches, eval_batch, evaluate
from shiptwo.qwen2.gates import GATE_005_EPOCH0_MAX, GATE_005_RATIO_MAX
from shiptwo.qwen2.model import Qwen2
from shiptwo.qwen2.rundir import (
    EPOCH_METADATA_KEYS,
    StepLog,
    TrainResult,
    epoch_metadata,
    json_number,
    optimizer_state_sha,
    write_epoch,
    write_summary,
)

__all__ = [
    "EPOCH_METADATA_KEYS",
    "GATE_005_EPOCH0_MAX",
    "GATE_005_RATIO_MAX",
    "StepStats",
    "TrainConfig",
    "TrainGateError",
    "TrainResult",
    "Trainer",
    "batches",
    "check_finite",
    "check_val_gate",
    "config_dict",
    "eval_batch",
    "evaluate",
    "lr_at",
    "optimizer_state_sha",
    "train",
    "write_epoch",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; `batch_size` is the global batch in sequences of `seq_len` tokens."""

    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # None: 5% of the run
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    batch_size: int = 8
    seq_len: int = 128
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps in total
    eval_batches: int | None = None  # None: the whole validation set
    seed: int = 0
    autocast_bf16: bool = False  # bf16 autocast; the CLI turns it on for CUDA
    gate_val_loss_max: float = GATE_005_EPOCH0_MAX  # GATE-TRAIN-005: epoch-0 val_loss ceiling (nats)
    gate_val_rise_factor: float = GATE_005_RATIO_MAX  # GATE-TRAIN-005: max val_loss / previous one

    def __post_init__(self) -> None:
        # The CLI checks the same with option names; this guards callers of the library API.
        problems = []
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr={self.lr} must be a finite number > 0")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            problems.append(f"grad_clip={self.grad_clip} must be a finite number > 0")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            problems.append(f"warmup_steps={self.warmup_steps} must be >= 0")
        if not (math.isfinite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1):
            problems.append(f"min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay={self.weight_decay} must be a finite number >= 0")
        if not (math.isfinite(self.gate_val_loss_max) and self.gate_val_loss_max > 0):
            problems.append(f"gate_val_loss_max={self.gate_val_loss_max} must be a finite number > 0")
        if not (math.isfinite(self.gate_val_rise_factor) and self.gate_val_rise_factor >= 1):
            problems.append(
                f"gate_val_rise_factor={self.gate_val_rise_factor} must be a finite number >= 1 "
                "(below 1 a run aborts whenever val_loss fails to shrink by that factor)"
            )
        if problems:
            raise UsageError(f"TrainConfig: {'; '.join(problems)}")


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step did."""

    step: int
    loss: float
    grad_norm: float
    lr: float


def lr_at(step: int, *, base_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio * base_lr` at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class TrainGateError(GateError):
    """A gate fired; besides the message it carries the gate id, the numbers and where, for the run log."""

    def __init__(self, message: str, *, gate: str, values: dict[str, float], where: str) -> None:
        super().__init__(message)
        self.gate, self.values, self.where = gate, dict(values), where
        # Set by `train` once it knows the step: the abort record it wrote to the run directory.
        self.abort: dict[str, Any] | None = None


def check_finite(gate_values: dict[str, float], *, where: str) -> None:
    """GATE-TRAIN-007: every named value must be finite."""
    bad = {k: v for k, v in gate_values.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainGateError(
            f"GATE-TRAIN-007 fired at {where}: {shown} is not finite; training aborted "
            "before the update was applied (lower --lr or check the data)",
            gate="GATE-TRAIN-007",
            values=gate_values,
            where=where,
        )


def check_val_gate(
    epoch: int,
    val_loss: float,
    previous: float | None,
    *,
    loss_max: float = GATE_005_EPOCH0_MAX,
    rise_factor: float = GATE_005_RATIO_MAX,
) -> None:
    """GATE-TRAIN-005 (and 007 for a non-finite val loss) on an epoch's val_loss.

    `loss_max` is the epoch-0 ceiling in nats, `rise_factor` how many times the previous val_loss
    a later one may reach (TrainConfig.gate_val_loss_max / gate_val_rise_factor).
    """
    where = f"epoch {epoch} evaluation"
    check_finite({"val_loss": val_loss}, where=where)
    if epoch == 0 and val_loss > loss_max:
        raise TrainGateError(
            f"GATE-TRAIN-005 fired: epoch-0 val_loss {val_loss:.4f} nats > "
            f"{loss_max}; the init or the learning rate is wrong, training aborted (a model trained "
            "from scratch starts near ln(vocab) nats: above the ceiling, raise it with --gate-val-loss-max)",
            gate="GATE-TRAIN-005",
            where=where,
            values={"val_loss": val_loss, "epoch0_max": loss_max},
        )
    if previous is not None and val_loss > rise_factor * previous:
        raise TrainGateError(
            f"GATE-TRAIN-005 fired: epoch-{epoch} val_loss {val_loss:.4f} nats > "
            f"{rise_factor} x previous {previous:.4f}; training diverged, aborted",
            gate="GATE-TRAIN-005",
            where=where,
            values={"val_loss": val_loss, "previous_val_loss": previous, "ratio_max": rise_factor},
        )


class Trainer:
    """Owns the optimizer and the schedule; `train_batch` runs one step on one global batch."""

    def __init__(
        self, model: Qwen2, config: TrainConfig, *, total_steps: int, ctx: DistContext | None = None
    ) -> None:
        self.config, self.ctx = config, ctx or DistContext()
        self.model = model
        self.total_steps = max(1, total_steps)
        self.warmup = config.warmup_steps if config.warmup_steps is not None else int(0.05 * self.total_steps)
        # Weight decay on matrices only; biases and norm gains are not regularised toward 0.
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            betas=config.betas,
        )
        self.net: nn.Module = model
        if self.ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.ctx.local_rank] if self.ctx.device.startswith("cuda") else None
            self.net = DistributedDataParallel(model, device_ids=device_ids)
        self.step = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def lr(self) -> float:
        c = self.config
        return lr_at(
            self.step, base_lr=c.lr, warmup=self.warmup, total=self.total_steps, min_ratio=c.min_lr_ratio
        )

    def eval_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The module-level `eval_batch` on this trainer's model: it never sees the optimizer."""
        return eval_batch(self.model, inputs, targets, autocast_bf16=self.config.autocast_bf16)

    def train_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepStats:
        """One optimizer step on a global batch (B, T); each rank trains on its own rows.

        Gates GATE-TRAIN-007 on loss, grad norm and lr before the update is applied.
        """
        rows = local_slice(inputs.shape[0], self.ctx)
        x, y = inputs[rows].to(self.device), targets[rows].to(self.device)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.autocast_bf16):
            # Through the DDP wrapper, so gradients are averaged; the model computes the loss in
            # vocab chunks (fp32 cross-entropy) rather than materialising (B, T, V) logits.
            loss = self.net(x, y)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        lr = self.lr()
        global_loss = float(mean_over_ranks(loss.detach(), self.ctx).item())
        stats = StepStats(step=self.step, loss=global_loss, grad_norm=float(grad_norm.item()), lr=lr)
        check_finite(
            {"train_loss": stats.loss, "grad_norm": stats.grad_norm, "lr": lr}, where=f"step {self.step}"
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        return stats


def train(
    model: Qwen2,
    *,
    train_reader: Any,
    val_reader: Any,
    config: TrainConfig,
    output_dir: Path | None = None,
    run_dir: Path | None = None,
    ctx: DistContext | None = None,
    progress: bool = False,
    label: str | None = None,
) -> TrainResult:
    """Train for `config.epochs` passes (or `config.max_steps` steps), evaluating at step 0 and
    after each epoch; rank 0 writes epoch-NNN.metadata.json + epoch-NNN.apr to `output_dir` and
    the per-step log and loss curve (loss.png, titled with `label`, e.g. the init model) to
    `run_dir`. Raises TrainGateError when a gate fires, after writing the abort (gate, numbers,
    step; also on the exception as `.abort`) to run_dir/steps.jsonl, a summary.json with status
    "aborted" and the loss curve with the abort drawn; a finished run's summary.json says
    "completed". `progress` shows steps on stderr (`shiptwo.progress`)."""
    ctx = ctx or DistContext()
    per_epoch = len(train_reader) // config.batch_size
    if per_epoch == 0:
        raise UsageError(f"no training batch: {len(train_reader)} windows < batch size {config.batch_size}")
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    trainer = Trainer(model, config, total_steps=total, ctx=ctx)

    def run_eval() -> float:
        return evaluate(
            model,
            val_reader,
            batch_size=config.batch_size,
            max_batches=config.eval_batches,
            autocast_bf16=config.autocast_bf16,
        )

    if output_dir is not None:
        check_output_dir("output_dir", output_dir)
    if run_dir is not None:
        check_output_dir("run_dir", run_dir)
    log = StepLog(run_dir if ctx.is_main else None)
    start = time.monotonic()
    result = TrainResult(step0_val_loss=math.nan)
    bar = progress_display(total=total, desc="train", unit="step", enabled=progress and ctx.is_main)
    try:
        _run_epochs(
            trainer,
            result,
            log,
            bar,
            config=config,
            train_reader=train_reader,
            total=total,
            run_eval=run_eval,
            output_dir=output_dir,
            run_dir=run_dir,
            is_main=ctx.is_main,
            start=start,
        )
    except TrainGateError as exc:
        # The run directory must say why it stopped: the abort goes to steps.jsonl and summary.json.
        abort = {
            "gate": exc.gate,
            "where": exc.where,
            "step": trainer.step,
            "values": {k: json_number(v) for k, v in exc.values.items()},
            "message": str(exc),
        }
        exc.abort = abort
        log.write({"event": "abort", **abort})
        result.steps = trainer.step
        if ctx.is_main and run_dir is not None:
            write_summary(run_dir, result, start, status="aborted", abort=abort)
            _plot(run_dir, model, config, label)
        raise
    finally:
        bar.close()
    result.steps = trainer.step
    if ctx.is_main and run_dir is not None:
        write_summary(run_dir, result, start, status="completed")
        _plot(run_dir, model, config, label)
    return result


def _plot(run_dir: Path, model: Qwen2, config: TrainConfig, label: str | None) -> None:
    """run_dir/loss.png from run_dir/steps.jsonl, with ln(vocab) and the GATE-TRAIN-005 ceiling."""
    from shiptwo.qwen2.plot import plot_loss_curve

    plot_loss_curve(
        run_dir / "steps.jsonl",
        run_dir / "loss.png",
        title=f"{label or 'Qwen2'}, run dir {run_dir}",
        vocab_size=model.config.vocab_size,
        val_loss_max=config.gate_val_loss_max,
    )


def _run_epochs(
    trainer: Trainer,
    result: TrainResult,
    log: StepLog,
    bar: Any,
    *,
    config: TrainConfig,
    train_reader: Any,
    total: int,
    run_eval: Callable[[], float],
    output_dir: Path | None,
    run_dir: Path | None,
    is_main: bool,
    start: float,
) -> None:
    """The step-0 evaluation and the epoch loop of `train`; gates raise TrainGateError out of it."""
    step0 = run_eval()
    log.write({"event": "eval", "step": 0, "epoch": -1, "val_loss": json_number(step0)})
    result.step0_val_loss = step0
    check_finite({"val_loss": step0}, where="step 0 evaluation")
    tokens_per_step = config.batch_size * config.seq_len
    for epoch in range(config.epochs):
        if trainer.step >= total:
            break
        epoch_start = time.monotonic()
        order = np.random.default_rng(config.seed + epoch).permutation(len(train_reader)).tolist()
        losses, grad_max = [], 0.0
        for x, y in batches(train_reader, batch_size=config.batch_size, order=order):
            if trainer.step >= total:
                break
            stats = trainer.train_batch(x, y)
            losses.append(stats.loss)
            grad_max = max(grad_max, stats.grad_norm)
            result.tokens_seen += tokens_per_step
            log.write(
                {
                    "event": "step",
                    "step": stats.step + 1,
                    "epoch": epoch,
                    "loss": stats.loss,
                    "grad_norm": stats.grad_norm,
                    "lr": stats.lr,
                    "tokens_seen": result.tokens_seen,
                    "elapsed_s": round(time.monotonic() - start, 4),
                }
            )
            bar.set_postfix_str(f"loss {stats.loss:.4f}")
            bar.update(1)
        val = run_eval()
        log.write({"event": "eval", "step": trainer.step, "epoch": epoch, "val_loss": json_number(val)})
        check_val_gate(
            epoch,
            val,
            result.val_losses[-1] if result.val_losses else None,
            loss_max=config.gate_val_loss_max,
            rise_factor=config.gate_val_rise_factor,
        )
        train_loss = float(sum(losses) / len(losses))
        result.val_losses.append(val)
        result.train_losses.append(train_loss)
        if is_main and (output_dir is not None or run_dir is not None):
            meta = epoch_metadata(
                epoch,
                train_loss=train_loss,
                val_loss=val,
                optimizer=trainer.optimizer,
                started=epoch_start,
                tokens_seen=result.tokens_seen,
                grad_norm_max=grad_max,
            )
            if output_dir is not None:
                result.epoch_files += write_epoch(trainer.model, meta, output_dir)
            if run_dir is not None and run_dir != output_dir:
                # The small evidence file also lives in the run dir; the checkpoint does not.
                (run_dir / f"epoch-{epoch:03d}.metadata.json").write_text(json.dumps(meta, indent=2) + "\n")


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-ready copy of a TrainConfig."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
