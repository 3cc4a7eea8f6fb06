"""The trainer: AdamW, warmup + cosine, gradient clipping, bf16 autocast on CUDA, two gates.

Loss is mean token cross-entropy in nats; uniform prediction scores ln(vocab). `eval_batch` is
a free function of the model and a batch only: it runs under `torch.inference_mode` in eval mode
and restores the previous mode, so nothing the optimizer or a training step holds can reach it
(the seeds' H1: val_loss 0.00081 at train_loss 1.20).

Gates (docs/aprender-interop.md, "Gates"), each raising `GateError` that names itself:
- GATE-TRAIN-007: NaN/Inf in train loss, grad norm, lr or val loss aborts - before the optimizer
  step, so a poisoned update is never applied or saved.
- GATE-TRAIN-005: epoch-0 val_loss non-finite or above 10.0, or a later val_loss more than twice
  the previous one, aborts the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shiptwo.errors import GateError, UsageError
from shiptwo.fileio import check_output_dir
from shiptwo.qwen2.distributed import DistContext, local_slice, mean_over_ranks
from shiptwo.qwen2.model import Qwen2

GATE_005_EPOCH0_MAX = 10.0
GATE_005_RATIO_MAX = 2.0
# aprender's per-epoch evidence file holds exactly these keys, in this order.
EPOCH_METADATA_KEYS = (
    "epoch",
    "train_loss",
    "val_loss",
    "train_ppl",
    "val_ppl",
    "optimizer_state_sha",
    "wall_seconds",
    "tokens_seen",
    "grad_norm_max",
)


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
        if problems:
            raise UsageError(f"TrainConfig: {'; '.join(problems)}")


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step did."""

    step: int
    loss: float
    grad_norm: float
    lr: float


@dataclass
class TrainResult:
    """The numbers a caller (or a falsifier) reads after a run."""

    step0_val_loss: float
    val_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    steps: int = 0
    tokens_seen: int = 0
    epoch_files: list[Path] = field(default_factory=list)


def lr_at(step: int, *, base_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio * base_lr` at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    kind = torch.device(device).type
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16)


def _unwrap(model: nn.Module) -> Qwen2:
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
    if not isinstance(inner, Qwen2):
        raise TypeError(f"expected a shiptwo Qwen2, got {type(inner).__name__}")
    return inner


def eval_batch(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, autocast_bf16: bool = False
) -> float:
    """Mean token cross-entropy (nats) of one batch, untouched by any training state.

    No grad (inference mode), eval mode for the call (the previous mode is restored), and no
    buffer survives between calls: the loss depends on the weights and the batch only.
    """
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        with torch.inference_mode(), _autocast(device, autocast_bf16):
            loss = net.loss(inputs.to(device), targets.to(device))
        return float(loss.item())
    finally:
        net.train(was_training)


class TrainGateError(GateError):
    """A gate fired; besides the message it carries the gate id, the numbers and where, for the run log."""

    def __init__(self, message: str, *, gate: str, values: dict[str, float], where: str) -> None:
        super().__init__(message)
        self.gate, self.values, self.where = gate, dict(values), where


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


def check_val_gate(epoch: int, val_loss: float, previous: float | None) -> None:
    """GATE-TRAIN-005 (and 007 for a non-finite val loss) on an epoch's val_loss."""
    where = f"epoch {epoch} evaluation"
    check_finite({"val_loss": val_loss}, where=where)
    if epoch == 0 and val_loss > GATE_005_EPOCH0_MAX:
        raise TrainGateError(
            f"GATE-TRAIN-005 fired: epoch-0 val_loss {val_loss:.4f} nats > "
            f"{GATE_005_EPOCH0_MAX}; the init or the learning rate is wrong, training aborted",
            gate="GATE-TRAIN-005",
            where=where,
            values={"val_loss": val_loss, "epoch0_max": GATE_005_EPOCH0_MAX},
        )
    if previous is not None and val_loss > GATE_005_RATIO_MAX * previous:
        raise TrainGateError(
            f"GATE-TRAIN-005 fired: epoch-{epoch} val_loss {val_loss:.4f} nats > "
            f"{GATE_005_RATIO_MAX} x previous {previous:.4f}; training diverged, aborted",
            gate="GATE-TRAIN-005",
            where=where,
            values={"val_loss": val_loss, "previous_val_loss": previous, "ratio_max": GATE_005_RATIO_MAX},
        )


def optimizer_state_sha(optimizer: torch.optim.Optimizer) -> str:
    """sha256 over the optimizer's state tensors and step counts, in parameter order."""
    h = hashlib.sha256()
    state = optimizer.state_dict()
    for idx in sorted(state["state"]):
        for key in sorted(state["state"][idx]):
            value = state["state"][idx][key]
            h.update(f"{idx}.{key}".encode())
            if isinstance(value, torch.Tensor):
                h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            else:
                h.update(repr(value).encode())
    return h.hexdigest()


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
        with _autocast(self.device, self.config.autocast_bf16):
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


def batches(
    reader: Any, *, batch_size: int, order: Sequence[int] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) int64 batches of `batch_size` windows; an incomplete last batch is dropped."""
    idx = list(order) if order is not None else list(range(len(reader)))
    for start in range(0, len(idx) - batch_size + 1, batch_size):
        windows = np.stack(
            [np.asarray(reader.window(i), dtype=np.int64) for i in idx[start : start + batch_size]]
        )
        w = torch.from_numpy(windows)  # (B, T + 1)
        yield w[:, :-1], w[:, 1:]


def evaluate(
    model: nn.Module,
    reader: Any,
    *,
    batch_size: int,
    max_batches: int | None = None,
    autocast_bf16: bool = False,
) -> float:
    """Mean eval loss (nats) over the reader's batches (all equal-sized, so the token mean)."""
    losses = []
    for i, (x, y) in enumerate(batches(reader, batch_size=batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        losses.append(eval_batch(model, x, y, autocast_bf16=autocast_bf16))
    if not losses:
        raise UsageError(
            f"no validation batch: {len(reader)} windows < batch size {batch_size}; "
            "give more validation text or a smaller --batch-size/--seq-len"
        )
    return float(sum(losses) / len(losses))


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


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
) -> TrainResult:
    """Train for `config.epochs` passes (or `config.max_steps` steps), evaluating at step 0 and
    after each epoch; rank 0 writes epoch-NNN.metadata.json + epoch-NNN.apr to `output_dir` and
    the per-step log and loss curve to `run_dir`. Raises GateError when a gate fires, after
    writing the abort (gate, numbers, step) to run_dir/steps.jsonl and a summary.json with
    status "aborted"; a finished run's summary.json says "completed"."""
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
    log = _StepLog(run_dir if ctx.is_main else None)
    start = time.monotonic()
    result = TrainResult(step0_val_loss=math.nan)
    bar = _progress(total, enabled=progress and ctx.is_main)
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
        log.write(
            {
                "event": "abort",
                "gate": exc.gate,
                "where": exc.where,
                "step": trainer.step,
                "values": {k: _json_number(v) for k, v in exc.values.items()},
                "message": str(exc),
            }
        )
        result.steps = trainer.step
        if ctx.is_main and run_dir is not None:
            _write_summary(
                run_dir,
                result,
                start,
                status="aborted",
                abort={
                    "gate": exc.gate,
                    "where": exc.where,
                    "step": trainer.step,
                    "values": {k: _json_number(v) for k, v in exc.values.items()},
                    "message": str(exc),
                },
            )
        raise
    finally:
        bar.close()
    result.steps = trainer.step
    if ctx.is_main and run_dir is not None:
        _write_summary(run_dir, result, start, status="completed")
        plot_loss_curve(run_dir / "steps.jsonl", run_dir / "loss.png")
    return result


def _run_epochs(
    trainer: Trainer,
    result: TrainResult,
    log: _StepLog,
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
    log.write({"event": "eval", "step": 0, "epoch": -1, "val_loss": _json_number(step0)})
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
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.4f}")
        val = run_eval()
        log.write({"event": "eval", "step": trainer.step, "epoch": epoch, "val_loss": _json_number(val)})
        check_val_gate(epoch, val, result.val_losses[-1] if result.val_losses else None)
        train_loss = float(sum(losses) / len(losses))
        result.val_losses.append(val)
        result.train_losses.append(train_loss)
        if is_main and (output_dir is not None or run_dir is not None):
            meta = dict(
                zip(
                    EPOCH_METADATA_KEYS,
                    (
                        epoch,
                        train_loss,
                        val,
                        _ppl(train_loss),
                        _ppl(val),
                        optimizer_state_sha(trainer.optimizer),
                        round(time.monotonic() - epoch_start, 3),
                        result.tokens_seen,
                        grad_max,
                    ),
                    strict=True,
                )
            )
            if output_dir is not None:
                result.epoch_files += write_epoch(trainer.model, meta, output_dir)
            if run_dir is not None and run_dir != output_dir:
                # The small evidence file also lives in the run dir; the checkpoint does not.
                (run_dir / f"epoch-{epoch:03d}.metadata.json").write_text(json.dumps(meta, indent=2) + "\n")


def _json_number(value: float) -> float | str:
    """A float JSON can hold: NaN and the infinities as strings (json.dumps would write bare NaN)."""
    return value if math.isfinite(value) else str(value)


def _write_summary(
    run_dir: Path, result: TrainResult, start: float, *, status: str, abort: dict[str, Any] | None = None
) -> None:
    summary: dict[str, Any] = {
        "status": status,
        "step0_val_loss": _json_number(result.step0_val_loss),
        "val_losses": [_json_number(v) for v in result.val_losses],
        "train_losses": [_json_number(v) for v in result.train_losses],
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "wall_seconds": round(time.monotonic() - start, 3),
    }
    if abort is not None:
        summary["abort"] = abort
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def write_epoch(model: Qwen2, meta: dict[str, Any], output_dir: Path) -> list[Path]:
    """epoch-NNN.metadata.json (exactly aprender's nine keys) and epoch-NNN.apr."""
    from shiptwo.qwen2.checkpoint import save_apr

    if tuple(meta) != EPOCH_METADATA_KEYS:
        raise ValueError(f"epoch metadata keys {list(meta)} != {list(EPOCH_METADATA_KEYS)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / f"epoch-{meta['epoch']:03d}"
    meta_path, apr_path = Path(f"{stem}.metadata.json"), Path(f"{stem}.apr")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    save_apr(
        model,
        apr_path,
        metadata={"source": "shiptwo train", "epoch": meta["epoch"], "val_loss": meta["val_loss"]},
    )
    return [meta_path, apr_path]


class _StepLog:
    """Appends one JSON line per event to run_dir/steps.jsonl (nothing without a run dir)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.path = None if run_dir is None else run_dir / "steps.jsonl"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def _progress(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="step", disable=not (enabled and sys.stderr.isatty()))


def plot_loss_curve(steps_jsonl: Path, png: Path) -> None:
    """Train loss per step and val loss per evaluation, in nats, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in steps_jsonl.read_text().splitlines() if line.strip()]
    train_pts = [(r["step"], r["loss"]) for r in records if r["event"] == "step"]
    val_pts = [(r["step"], r["val_loss"]) for r in records if r["event"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), label="train loss", linewidth=1)
    if val_pts:
        ax.plot(*zip(*val_pts, strict=True), "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def host_facts(ctx: DistContext | None = None) -> dict[str, Any]:
    """Python, torch, platform and device facts for a run directory."""
    ctx = ctx or DistContext()
    cuda = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_devices": cuda,
        "cpu_threads": torch.get_num_threads(),
        "world_size": ctx.world_size,
    }


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-ready copy of a TrainConfig."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
