"""Trainer pieces: schedule, steps, epoch evidence, and the train/eval CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from shiptwo.cli import main
from shiptwo.errors import UsageError
from shiptwo.qwen2.checkpoint import save_apr, save_hf
from shiptwo.qwen2.distributed import DistContext, local_slice
from shiptwo.qwen2.model import Qwen2, Qwen2Config
from shiptwo.qwen2.rundir import EPOCH_METADATA_KEYS, optimizer_state_sha, write_epoch
from shiptwo.qwen2.train import TrainConfig, Trainer, lr_at, train

CFG = Qwen2Config(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=48,
    max_position_embeddings=128,
)


def batch(seed: int, b: int = 4, t: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 64, (b, t + 1), generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:]


def test_warmup_then_cosine_to_the_floor() -> None:
    kw = {"base_lr": 1.0, "warmup": 4, "total": 14, "min_ratio": 0.1}
    assert [lr_at(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, **kw) == pytest.approx(1.0)
    assert lr_at(9, **kw) == pytest.approx(0.55)
    assert lr_at(14, **kw) == pytest.approx(0.1) and lr_at(99, **kw) == pytest.approx(0.1)


def test_train_batch_steps_and_changes_optimizer_state() -> None:
    torch.manual_seed(0)
    model = Qwen2(CFG)
    trainer = Trainer(model, TrainConfig(lr=1e-2, warmup_steps=0), total_steps=4)
    empty = optimizer_state_sha(trainer.optimizer)
    first = trainer.train_batch(*batch(1))
    sha = optimizer_state_sha(trainer.optimizer)
    assert first.step == 0 and trainer.step == 1 and sha != empty
    losses = [trainer.train_batch(*batch(1)).loss for _ in range(3)]
    assert losses[-1] < first.loss  # the same batch again: it must be learned
    assert trainer.eval_batch(*batch(1)) < first.loss and model.training


def test_bf16_autocast_step_runs_on_cpu() -> None:
    trainer = Trainer(Qwen2(CFG), TrainConfig(autocast_bf16=True), total_steps=1)
    stats = trainer.train_batch(*batch(2))
    assert math.isfinite(stats.loss) and next(trainer.model.parameters()).dtype == torch.float32


def test_epoch_metadata_must_have_exactly_the_nine_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epoch metadata keys"):
        write_epoch(Qwen2(CFG), {"epoch": 0}, tmp_path)
    assert len(EPOCH_METADATA_KEYS) == 9


def test_no_validation_batch_is_an_error() -> None:
    class Windows:
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

        def window(self, i: int) -> np.ndarray:
            return np.zeros(17, dtype=np.uint32)

    with pytest.raises(UsageError, match="no validation batch: 1 windows < batch size 4"):
        train(
            Qwen2(CFG),
            train_reader=Windows(8),
            val_reader=Windows(1),
            config=TrainConfig(batch_size=4, seq_len=16),
        )
    with pytest.raises(UsageError, match="no training batch: 3 windows < batch size 4"):
        train(
            Qwen2(CFG),
            train_reader=Windows(3),
            val_reader=Windows(8),
            config=TrainConfig(batch_size=4, seq_len=16),
        )


def test_batch_must_split_over_ranks() -> None:
    assert local_slice(8, DistContext(rank=1, world_size=2)) == slice(4, 8)
    with pytest.raises(UsageError, match="--batch-size 5 does not split over 2 processes"):
        local_slice(5, DistContext(rank=0, world_size=2))


@pytest.fixture
def init_apr(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_apr(Qwen2(CFG), tmp_path / "init.apr")
    return tmp_path / "init.apr"


def test_train_cli_writes_epochs_and_run_dir(
    init_apr: Path, shard_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_dir, val_dir = shard_dirs
    code = main(
        [
            "train",
            "--init",
            str(init_apr),
            "--shards",
            str(train_dir),
            "--val-shards",
            str(val_dir),
            "--epochs",
            "2",
            "--lr",
            "1e-2",
            "--batch-size",
            "8",
            "--seq-len",
            "32",
            "--run-dir",
            str(tmp_path / "run"),
            "--output",
            str(tmp_path / "ckpt"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "val_loss" in out and "ln(vocab) = 4.1589" in out
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "epoch-000.apr",
        "epoch-000.metadata.json",
        "epoch-001.apr",
        "epoch-001.metadata.json",
    ]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["model"]["vocab_size"] == 64
    assert json.loads((tmp_path / "run" / "command.json").read_text())["argv"][0] == "shiptwo"
    assert json.loads((tmp_path / "run" / "host.json").read_text())["world_size"] == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "run").glob("epoch-*")) == [
        "epoch-000.metadata.json",
        "epoch-001.metadata.json",
    ]  # evidence copies, no checkpoints


def test_train_cli_holds_out_validation_without_val_shards(
    init_apr: Path, shard_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--init",
            str(init_apr),
            "--shards",
            str(shard_dirs[0]),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--seq-len",
            "16",
            "--run-dir",
            str(tmp_path / "run"),
            "--output",
            str(tmp_path / "ckpt"),
            "--format",
            "json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert code == 0 and summary["steps"] == 2
    assert config["val_windows"] + config["train_windows"] == 3570 // 17 and config["val_windows"] == 21


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--val-fraction", "1.5"], "--val-fraction 1.5: must lie strictly between 0 and 1"),
        (["--lr", "0"], "--lr 0.0: must be a positive number"),
        (["--lr", "nan"], "--lr nan: must be a positive number"),
        (["--lr", "inf"], "--lr inf: must be finite"),
        (
            ["--grad-clip", "-1"],
            (
                "--grad-clip -1.0: must be a finite number > 0 (the max global gradient norm; "
                "a negative one would reverse every gradient)"
            ),
        ),
        (["--grad-clip", "0"], "--grad-clip 0.0: must be a finite number > 0"),
        (["--grad-clip", "nan"], "--grad-clip nan: must be a finite number > 0"),
        (["--warmup-steps", "-5"], "--warmup-steps -5: must be >= 0 (0 = no warmup)"),
        (
            ["--min-lr-ratio", "1.5"],
            "--min-lr-ratio 1.5: must lie in [0, 1] (the cosine floor as a share of --lr)",
        ),
        (["--min-lr-ratio", "-0.1"], "--min-lr-ratio -0.1: must lie in [0, 1]"),
        (["--min-lr-ratio", "nan"], "--min-lr-ratio nan: must lie in [0, 1]"),
        (["--weight-decay", "-0.1"], "--weight-decay -0.1: must be a finite number >= 0"),
        (["--weight-decay", "inf"], "--weight-decay inf: must be a finite number >= 0"),
        (["--seq-len", "120", "--val-fraction", "0.9"], "cannot give 4-sequence train and val batches"),
        (["--seq-len", "4000"], "--seq-len 4000 exceeds"),
    ],
)
def test_train_cli_bad_options(
    extra: list[str],
    needle: str,
    init_apr: Path,
    shard_dirs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "train",
            "--init",
            str(init_apr),
            "--shards",
            str(shard_dirs[0]),
            "--batch-size",
            "4",
            "--run-dir",
            str(tmp_path / "run"),
            "--output",
            str(tmp_path / "ckpt"),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1


@pytest.mark.parametrize("option", ["--output", "--run-dir"])
def test_train_cli_refuses_a_file_where_a_directory_goes(
    option: str,
    init_apr: Path,
    shard_dirs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    dirs = {"--output": str(tmp_path / "ckpt"), "--run-dir": str(tmp_path / "run")}
    for target, why in ((blocker, ""), (blocker / "sub", f" (its parent {blocker} is a file)")):
        code = main(
            [
                "train",
                "--init",
                str(init_apr),
                "--shards",
                str(shard_dirs[0]),
                "--batch-size",
                "4",
                "--steps",
                "1",
                "--no-progress",
                *(a for k, v in {**dirs, option: str(target)}.items() for a in (k, v)),
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and err == (
            f"error: {option} {target}: exists and is not a directory{why}; give a "
            "directory path (it is created when missing)\n"
        )


def test_train_config_refuses_bad_numbers_by_field() -> None:
    with pytest.raises(UsageError) as err:
        TrainConfig(lr=float("nan"), grad_clip=-1.0, warmup_steps=-5, min_lr_ratio=2.0, weight_decay=-1.0)
    assert str(err.value) == (
        "TrainConfig: lr=nan must be a finite number > 0; grad_clip=-1.0 must be a finite "
        "number > 0; warmup_steps=-5 must be >= 0; min_lr_ratio=2.0 must lie in [0, 1]; "
        "weight_decay=-1.0 must be a finite number >= 0"
    )


def test_a_gate_abort_is_written_to_the_run_dir(tmp_path: Path) -> None:
    from shiptwo.errors import GateError

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
    with pytest.raises(GateError, match="GATE-TRAIN-005 fired: epoch-0 val_loss") as err:
        train(Qwen2(CFG), train_reader=Windows(1), val_reader=Windows(2), config=cfg, run_dir=run)
    records = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    abort = records[-1]
    assert abort["event"] == "abort" and abort["gate"] == "GATE-TRAIN-005" and abort["step"] == 4
    assert abort["where"] == "epoch 0 evaluation" and abort["message"] == str(err.value)
    assert abort["values"]["val_loss"] > 10.0 and abort["values"]["epoch0_max"] == 10.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "aborted" and summary["abort"]["gate"] == "GATE-TRAIN-005"
    assert summary["steps"] == 4 and summary["val_losses"] == []


def test_a_nan_abort_is_valid_json_in_the_run_dir(tmp_path: Path) -> None:
    from shiptwo.errors import GateError

    class Windows:
        def __len__(self) -> int:
            return 16

        def window(self, i: int) -> np.ndarray:
            return np.arange(17) % 64

    model = Qwen2(CFG)
    model.lm_head.register_forward_hook(lambda _m, _i, out: out * float("nan"))
    with pytest.raises(GateError, match="GATE-TRAIN-007 fired at step 0 evaluation: val_loss=nan"):
        train(
            model,
            train_reader=Windows(),
            val_reader=Windows(),
            config=TrainConfig(batch_size=8, seq_len=16),
            run_dir=tmp_path / "run",
        )
    text = (tmp_path / "run" / "steps.jsonl").read_text()
    records = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in steps.jsonl"))
        for line in text.splitlines()
    ]
    assert records[-1]["gate"] == "GATE-TRAIN-007" and records[-1]["values"] == {"val_loss": "nan"}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "aborted" and summary["step0_val_loss"] == "nan"


def test_keep_freed_memory_is_harmless() -> None:
    from shiptwo.qwen2.cli import keep_freed_memory

    keep_freed_memory()
    keep_freed_memory()  # idempotent


def test_shards_with_a_bigger_vocab_than_the_model_are_refused(
    shard_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = Qwen2(Qwen2Config(**{**CFG.__dict__, "vocab_size": 32}))
    save_hf(small, tmp_path / "small")
    code = main(["eval", "--model", str(tmp_path / "small"), "--shards", str(shard_dirs[1])])
    assert code == 2 and "manifest vocab_size 64 exceeds the model's vocab 32" in capsys.readouterr().err


def test_eval_cli_prints_loss_perplexity_and_ln_vocab(
    init_apr: Path, shard_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "eval",
                "--model",
                str(init_apr),
                "--shards",
                str(shard_dirs[1]),
                "--seq-len",
                "16",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "nats" in text and "perplexity" in text and "ln(vocab) 4.1589 (uniform)" in text
    assert (
        main(
            [
                "eval",
                "--model",
                str(init_apr),
                "--shards",
                str(shard_dirs[1]),
                "--seq-len",
                "16",
                "--batch-size",
                "4",
                "--max-batches",
                "2",
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["batches"] == 2 and doc["tokens"] == 2 * 4 * 16
    assert doc["perplexity"] == pytest.approx(math.exp(doc["val_loss"]))
    assert abs(doc["val_loss"] - doc["ln_vocab"]) < 0.1  # a fresh model is near uniform


def test_cli_module_imports_no_torch() -> None:
    """`shiptwo pv validate` must not pay for torch because train/eval are registered."""
    import subprocess
    import sys

    code = "import sys, shiptwo.qwen2.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
