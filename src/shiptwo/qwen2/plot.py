"""loss.png: a training run's loss curve, drawn from its steps.jsonl.

What a person needs to judge a run at a glance: train loss per step and val loss per evaluation
(in nats), ln(vocab) as the loss of a uniform guess (a model above it has learned nothing), the
GATE-TRAIN-005 epoch-0 ceiling, and, when a gate stopped the run, a red line at the step it fired.
matplotlib loads only here, and only its object API (no pyplot state, no backend switch).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shiptwo.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ABORT_COLOR = "tab:red"
CEILING_COLOR = "tab:purple"
# Above this ratio of the largest to the smallest value drawn, the y axis turns logarithmic: a
# diverged run's loss of 1,000 nats would otherwise flatten ln(vocab) and the ceiling onto 0.
LOG_SCALE_RATIO = 50.0


def read_steps(steps_jsonl: Path) -> list[dict[str, Any]]:
    """The records of a steps.jsonl (step, eval and abort events), in order."""
    return [json.loads(line) for line in steps_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]


def _finite(value: Any) -> bool:
    # steps.jsonl holds a non-finite loss as the string "nan"/"inf" (rundir.json_number).
    return isinstance(value, int | float) and math.isfinite(value)


def loss_figure(
    records: Sequence[dict[str, Any]],
    *,
    title: str,
    vocab_size: int | None = None,
    val_loss_max: float | None = None,
) -> Figure:
    """The loss curve of a run's step records as a matplotlib Figure (not saved).

    Draws whatever the records hold: train and val curves with markers, a dashed ln(vocab) line
    when `vocab_size` is given, the GATE-TRAIN-005 ceiling when `val_loss_max` is given, and a
    red vertical line labelled with the gate for an abort record. Non-finite losses are left out
    of the curves; the abort line says what stopped the run.
    """
    from matplotlib.figure import Figure

    train_pts = [(r["step"], r["loss"]) for r in records if r["event"] == "step" and _finite(r["loss"])]
    val_pts = [(r["step"], r["val_loss"]) for r in records if r["event"] == "eval" and _finite(r["val_loss"])]
    abort = next((r for r in records if r["event"] == "abort"), None)
    steps = max((r["step"] for r in records if r["event"] == "step"), default=0)

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), ".-", markersize=3, linewidth=1, label="train loss (per step)")
    if val_pts:
        ax.plot(
            *zip(*val_pts, strict=True), "o-", markersize=6, linewidth=1.5, label="val loss (per evaluation)"
        )
    if vocab_size:
        ln_v = math.log(vocab_size)
        ax.axhline(
            ln_v, linestyle="--", color="0.4", linewidth=1, label=f"ln(vocab) = {ln_v:.2f} (uniform guess)"
        )
    if val_loss_max is not None:
        ax.axhline(
            val_loss_max,
            linestyle=":",
            color=CEILING_COLOR,
            linewidth=1.5,
            label=f"GATE-TRAIN-005 epoch-0 ceiling {val_loss_max:g}",
        )
    status = f"{steps} steps"
    if abort is not None:
        gate, at = abort["gate"], abort["step"]
        ax.axvline(at, color=ABORT_COLOR, linewidth=2, label=f"abort: {gate} at step {at}")
        ax.annotate(  # left of the line: the abort is the last step, the axes end right after it
            f"{gate}\n{abort.get('where', '')}",
            xy=(at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            color=ABORT_COLOR,
            fontsize=9,
        )
        status += f", aborted by {gate} at step {at}"
    drawn = [y for _, y in train_pts + val_pts] + ([math.log(vocab_size)] if vocab_size else [])
    drawn += [val_loss_max] if val_loss_max is not None else []
    if drawn and min(drawn) > 0 and max(drawn) / min(drawn) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
    ax.set_title(f"{title}\n{status}", fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_loss_curve(
    steps_jsonl: Path,
    png: Path,
    *,
    title: str | None = None,
    vocab_size: int | None = None,
    val_loss_max: float | None = None,
) -> Path:
    """Write `loss_figure` of `steps_jsonl` to `png` (atomically); returns `png`."""
    fig = loss_figure(
        read_steps(steps_jsonl),
        title=title or str(steps_jsonl.parent),
        vocab_size=vocab_size,
        val_loss_max=val_loss_max,
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(png, buffer.getvalue())
    return png
