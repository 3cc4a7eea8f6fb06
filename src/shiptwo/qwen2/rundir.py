"""What a training run leaves behind: its result, the run directory's files and the epoch evidence.

The run directory holds steps.jsonl (one JSON line per step, evaluation or abort), summary.json
(status, losses, steps, tokens, and the abort when a gate fired) and loss.png (drawn by
`shiptwo.qwen2.plot`); the CLI adds
command.json, host.json and config.json. Each epoch writes aprender's evidence file,
epoch-NNN.metadata.json, beside its checkpoint epoch-NNN.apr in the output directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiptwo.harness.host import host_facts as run_record_host_facts
from shiptwo.jsonout import finite_json
from shiptwo.qwen2.distributed import DistContext
from shiptwo.qwen2.model import Qwen2

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


@dataclass
class TrainResult:
    """The numbers a caller (or a falsifier) reads after a run."""

    step0_val_loss: float
    val_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    steps: int = 0
    tokens_seen: int = 0
    epoch_files: list[Path] = field(default_factory=list)


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


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


def epoch_metadata(
    epoch: int,
    *,
    train_loss: float,
    val_loss: float,
    optimizer: torch.optim.Optimizer,
    started: float,
    tokens_seen: int,
    grad_norm_max: float,
) -> dict[str, Any]:
    """One epoch's evidence record: aprender's nine keys, in order; `started` is the epoch's
    `time.monotonic()` at its start (the wall seconds end here, after the optimizer hash)."""
    return dict(
        zip(
            EPOCH_METADATA_KEYS,
            (
                epoch,
                train_loss,
                val_loss,
                _ppl(train_loss),
                _ppl(val_loss),
                optimizer_state_sha(optimizer),
                round(time.monotonic() - started, 3),
                tokens_seen,
                grad_norm_max,
            ),
            strict=True,
        )
    )


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


class StepLog:
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


def json_number(value: float) -> float | str:
    """A float JSON can hold: NaN and the infinities as strings (json.dumps would write bare NaN),
    spelled as every `--format json` output spells them (`shiptwo.jsonout`)."""
    number: float | str = finite_json(value)
    return number


def write_summary(
    run_dir: Path, result: TrainResult, start: float, *, status: str, abort: dict[str, Any] | None = None
) -> None:
    """summary.json: the run's status ("completed" or "aborted"), its numbers, and the abort if any."""
    summary: dict[str, Any] = {
        "status": status,
        "step0_val_loss": json_number(result.step0_val_loss),
        "val_losses": [json_number(v) for v in result.val_losses],
        "train_losses": [json_number(v) for v in result.train_losses],
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "wall_seconds": round(time.monotonic() - start, 3),
    }
    if abort is not None:
        summary["abort"] = abort
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def host_facts(ctx: DistContext | None = None) -> dict[str, Any]:
    """host.json: the run record's host facts (`shiptwo.harness.host`), CPU threads and world size."""
    ctx = ctx or DistContext()
    return {**run_record_host_facts(), "cpu_threads": torch.get_num_threads(), "world_size": ctx.world_size}
