"""`shiptwo train` for scripts and people: GATE-TRAIN-005's limits as options, JSON on an abort,
progress lines off a terminal, and a loss plot for every run, aborted or not."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shiptwo.cli import main
from shiptwo.qwen2.checkpoint import save_apr
from shiptwo.qwen2.model import Qwen2, Qwen2Config
from shiptwo.qwen2.plot import loss_figure
from shiptwo.qwen2.train import TrainConfig, TrainGateError, train

QWEN2_VOCAB = 151_936  # ln = 11.93 nats: a model trained from scratch starts there


def small(vocab: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=8,
        intermediate_size=32,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="module")
def scratch_apr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised model over Qwen2's vocab: its epoch-0 val_loss is about ln V > 10."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("scratch") / "scratch.apr"
    save_apr(Qwen2(small(QWEN2_VOCAB)), path)
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root of its own (its pyproject.toml decides [tool.shiptwo.train]) as the cwd."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_argv(init: Path, shards: tuple[Path, Path], run: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--init",
        str(init),
        "--shards",
        str(shards[0]),
        "--val-shards",
        str(shards[1]),
        "--steps",
        "2",
        "--lr",
        "1e-4",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
        "--eval-batches",
        "2",
        "--run-dir",
        str(run),
        "--output",
        str(run.parent / f"{run.name}-ckpt"),
        *extra,
    ]


def strict(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}"))


def test_a_from_scratch_qwen2_vocab_run_aborts_by_default_and_prints_json(
    scratch_apr: Path, shard_dirs: tuple[Path, Path], project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = project / "run"
    code = main(train_argv(scratch_apr, shard_dirs, run, "--no-progress", "--format", "json"))
    captured = capsys.readouterr()
    doc = strict(captured.out)
    assert code == 1 and doc["status"] == "aborted" and doc["run_dir"] == str(run)
    abort = doc["abort"]
    assert abort["gate"] == "GATE-TRAIN-005" and abort["step"] == 2 and abort["where"] == "epoch 0 evaluation"
    assert abort["values"]["epoch0_max"] == 10.0 and abort["values"]["val_loss"] > 11.5
    assert abort["message"].startswith("GATE-TRAIN-005 fired: epoch-0 val_loss 11.9")
    assert "--gate-val-loss-max" in abort["message"]  # the message names the way out
    assert captured.err == f"error: {abort['message']}\n"  # stderr keeps its one line
    assert (run / "loss.png").is_file()  # an aborted run is plotted too


def test_the_flag_lets_the_from_scratch_run_through(
    scratch_apr: Path, shard_dirs: tuple[Path, Path], project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = project / "run"
    argv = train_argv(
        scratch_apr, shard_dirs, run, "--no-progress", "--format", "json", "--gate-val-loss-max", "12.5"
    )
    assert main(argv) == 0
    doc = strict(capsys.readouterr().out)
    assert doc["status"] == "completed" and doc["steps"] == 2
    assert 11.5 < doc["final_val_loss"] < 12.5 and doc["ln_vocab"] == pytest.approx(math.log(QWEN2_VOCAB))
    config = json.loads((run / "config.json").read_text())["train"]
    assert config["gate_val_loss_max"] == 12.5 and config["gate_val_rise_factor"] == 2.0
    assert (run / "loss.png").is_file()


def test_the_pyproject_table_sets_the_limits_and_flags_override_it(
    scratch_apr: Path, shard_dirs: tuple[Path, Path], project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\n\n[tool.shiptwo.train]\nval_loss_max = 12.5\nval_rise_factor = 3\n'
    )
    assert main(train_argv(scratch_apr, shard_dirs, project / "a", "--no-progress")) == 0
    config = json.loads((project / "a" / "config.json").read_text())["train"]
    assert config["gate_val_loss_max"] == 12.5 and config["gate_val_rise_factor"] == 3.0
    capsys.readouterr()
    # The flag wins over the table: back to the seeds' ceiling, and the run aborts.
    argv = train_argv(scratch_apr, shard_dirs, project / "b", "--no-progress", "--gate-val-loss-max", "10")
    assert main(argv) == 1
    assert "GATE-TRAIN-005 fired: epoch-0 val_loss" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("table", "flags", "message"),
    [
        (
            "val_loss_maximum = 12.5",
            [],
            "[tool.shiptwo.train] key 'val_loss_maximum' is unknown; "
            "known keys: val_loss_max, val_rise_factor",
        ),
        (
            "val_rise_factor = 0.5",
            [],
            "[tool.shiptwo.train] val_rise_factor = 0.5: must be a finite number >= 1",
        ),
        ("val_loss_max = 'high'", [], "[tool.shiptwo.train] val_loss_max = 'high' must be a number"),
        (
            "",
            ["--gate-val-loss-max", "nan"],
            "error: --gate-val-loss-max nan: must be a finite number > 0 (nats)",
        ),
        (
            "",
            ["--gate-val-rise-factor", "-2"],
            "error: --gate-val-rise-factor -2.0: must be a finite number >= 1",
        ),
    ],
)
def test_bad_gate_limits_are_one_line_errors(
    table: str,
    flags: list[str],
    message: str,
    scratch_apr: Path,
    shard_dirs: tuple[Path, Path],
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (project / "pyproject.toml").write_text(f'[project]\nname = "p"\n\n[tool.shiptwo.train]\n{table}\n')
    assert main(train_argv(scratch_apr, shard_dirs, project / "run", *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    if table:
        assert f"{project / 'pyproject.toml'}: [tool.shiptwo.train]" in err  # where it came from
    assert not (project / "run").exists()  # refused before the model loaded


def test_train_config_refuses_bad_gate_limits() -> None:
    from shiptwo.errors import UsageError

    with pytest.raises(UsageError, match=r"gate_val_loss_max=0.0 must be a finite number > 0"):
        TrainConfig(gate_val_loss_max=0.0)
    with pytest.raises(UsageError, match=r"gate_val_rise_factor=inf must be a finite number >= 1"):
        TrainConfig(gate_val_rise_factor=math.inf)


def test_the_rise_factor_reaches_the_gate(tmp_path: Path) -> None:
    """A later-epoch rise of 2.5x aborts at the default factor and passes at 3."""
    from shiptwo.qwen2.train import check_val_gate

    with pytest.raises(TrainGateError, match=r"> 2.0 x previous 2.0000") as err:
        check_val_gate(1, 5.0, 2.0)
    assert err.value.values["ratio_max"] == 2.0
    check_val_gate(1, 5.0, 2.0, rise_factor=3.0)
    with pytest.raises(TrainGateError, match=r"epoch-0 val_loss 12.0000 nats > 11.0"):
        check_val_gate(0, 12.0, None, loss_max=11.0)


def test_progress_lines_on_stderr_off_a_terminal(
    shard_dirs: tuple[Path, Path], tmp_path: Path, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    save_apr(Qwen2(small(64)), tmp_path / "init.apr")
    assert main(train_argv(tmp_path / "init.apr", shard_dirs, project / "run", "--format", "json")) == 0
    captured = capsys.readouterr()  # stderr is captured here: not a terminal
    lines = captured.err.splitlines()
    assert lines[0].startswith("train: step 1/2 (50%) loss ") and lines[-1].startswith(
        "train: step 2/2 (100%)"
    )
    assert "\r" not in captured.err
    assert strict(captured.out)["status"] == "completed"  # stdout stays pure JSON
    assert main(train_argv(tmp_path / "init.apr", shard_dirs, project / "quiet", "--no-progress")) == 0
    assert capsys.readouterr().err == ""


def test_the_plot_of_an_aborted_run_draws_the_abort(tmp_path: Path) -> None:
    class Windows:
        def __init__(self, seed: int) -> None:
            self.rows = np.random.default_rng(seed).integers(0, 64, (32, 17))

        def __len__(self) -> int:
            return len(self.rows)

        def window(self, i: int) -> np.ndarray:
            return self.rows[i]

    torch.manual_seed(0)
    run = tmp_path / "run"
    cfg = TrainConfig(lr=10.0, warmup_steps=0, batch_size=8, seq_len=16, epochs=2)
    with pytest.raises(TrainGateError, match="GATE-TRAIN-005") as err:
        train(
            Qwen2(small(64)),
            train_reader=Windows(1),
            val_reader=Windows(2),
            config=cfg,
            run_dir=run,
            label="tiny",
        )
    assert err.value.abort is not None and err.value.abort["step"] == 4
    assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")

    records = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    fig = loss_figure(records, title="tiny", vocab_size=64, val_loss_max=10.0)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [
        "train loss (per step)",
        "val loss (per evaluation)",
        "ln(vocab) = 4.16 (uniform guess)",
        "GATE-TRAIN-005 epoch-0 ceiling 10",
        "abort: GATE-TRAIN-005 at step 4",
    ]
    abort_line = ax.get_lines()[-1]
    assert list(abort_line.get_xdata()) == [4, 4] and abort_line.get_color() == "tab:red"
    train_line = ax.get_lines()[0]
    assert list(train_line.get_xdata()) == [1, 2, 3, 4] and train_line.get_marker() == "."
    assert ax.get_lines()[1].get_marker() == "o"
    assert "GATE-TRAIN-005" in [t.get_text().split("\n")[0] for t in ax.texts]
    assert ax.get_title() == "tiny\n4 steps, aborted by GATE-TRAIN-005 at step 4"
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "cross-entropy (nats)"


def test_the_plot_of_a_completed_run_has_no_abort(tmp_path: Path) -> None:
    records = [
        {"event": "eval", "step": 0, "epoch": -1, "val_loss": 4.2},
        {"event": "step", "step": 1, "loss": 4.1},
        {"event": "step", "step": 2, "loss": 3.9},
        {"event": "eval", "step": 2, "epoch": 0, "val_loss": "nan"},  # non-finite: left out
    ]
    fig = loss_figure(records, title="run", vocab_size=None, val_loss_max=None)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "train loss (per step)",
        "val loss (per evaluation)",
    ]
    assert list(ax.get_lines()[1].get_xdata()) == [0]
    assert ax.get_title() == "run\n2 steps" and not ax.texts


def test_a_diverged_run_is_drawn_on_a_log_axis() -> None:
    records = [
        {"event": "eval", "step": 0, "epoch": -1, "val_loss": 4.2},
        {"event": "step", "step": 1, "loss": 4.1},
        {"event": "step", "step": 2, "loss": 1130.0},
    ]
    assert loss_figure(records, title="t", vocab_size=64, val_loss_max=10.0).axes[0].get_yscale() == "log"
    records[-1]["loss"] = 3.9
    assert loss_figure(records, title="t", vocab_size=64, val_loss_max=10.0).axes[0].get_yscale() == "linear"
