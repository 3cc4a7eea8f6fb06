"""FALSIFY-FINETUNE-005: `shiptwo train` on shards from encode-corpus lowers val_loss, plausibly.

The whole user path runs in-process through the CLI: a hex-byte BPE is trained on a few CPython
stdlib modules, `tokenize encode-corpus` writes train and validation shards (different modules),
a small random Qwen2 is saved as .apr, `shiptwo train` fine-tunes it, and `shiptwo eval` re-scores
the last checkpoint. The plausible range (contract) flags a drop no model of this size could
reach on held-out text - the seeds' val_loss 0.00081.

A falling val_loss is not enough: a trainer that never zeroes its gradients, or clips by the
lm_head's norm alone, still lowers it. So the first two logged steps are replayed by plain torch
from init.apr (`replay_first_steps`), and the final val_loss is recomputed from the saved
checkpoint's logits (`plain_val_loss`); neither goes through shiptwo's trainer, loss or eval.
Controls plant the seeds' trainer and eval defects into the real code (`plant`); the loss runs
in chunks, as it does for the real vocab (`chunked_loss`).
"""

from __future__ import annotations

import json
import math
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shiptwo.qwen2.model as model_mod
import shiptwo.qwen2.train as train_mod
from shiptwo.cli import main
from shiptwo.qwen2.checkpoint import from_pretrained, save_apr
from shiptwo.qwen2.defects import plant_loss_defect
from shiptwo.qwen2.model import Qwen2, Qwen2Config
from shiptwo.qwen2.train import EPOCH_METADATA_KEYS
from shiptwo.shards import ShardReader

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAIN_MODULES = ("shlex.py", "fnmatch.py", "bisect.py")  # about 9,500 tokens: two short epochs
VAL_MODULES = ("getopt.py", "keyword.py")
VOCAB = 512
BATCH, SEQ, LR, CLIP = 8, 32, 1e-2, 1.0  # the run's --batch-size, --seq-len, --lr and the default --grad-clip
CHUNK_ROWS = 96  # a batch's 256 rows take three loss chunks, as a batch of the real vocab takes several


@pytest.fixture(autouse=True)
def chunked_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_mod, "LOSS_CHUNK_ELEMENTS", VOCAB * CHUNK_ROWS)


def plant(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the control's defect into the real trainer, loss or eval (nothing on the real run)."""
    if control is None or plant_loss_defect(control.id, monkeypatch):
        return
    real_init = train_mod.Trainer.__init__
    if control == "gradients-never-zeroed":

        def never_zeroed(self: Any, *args: Any, **kwargs: Any) -> None:
            real_init(self, *args, **kwargs)
            self.optimizer.zero_grad = lambda set_to_none=True: None  # each step's grads add to the last's

        monkeypatch.setattr(train_mod.Trainer, "__init__", never_zeroed)
    elif control == "clip-from-lm-head-alone":
        trainers: list[Any] = []

        def remembered(self: Any, *args: Any, **kwargs: Any) -> None:
            real_init(self, *args, **kwargs)
            trainers.append(self)

        real_clip = torch.nn.utils.clip_grad_norm_

        def clip_by_head(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
            # clip_grad_norm_(self.model.lm_head.parameters(), ...): the norm, and the clip, of the head alone
            return real_clip(trainers[-1].model.lm_head.parameters(), max_norm, *args, **kwargs)

        monkeypatch.setattr(train_mod.Trainer, "__init__", remembered)
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_by_head)
    else:
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


def _batch(reader: ShardReader, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.from_numpy(np.stack([reader.window(i) for i in indices]).astype(np.int64))
    return w[:, :-1], w[:, 1:]


def replay_first_steps(
    init: Path, train_shards: Path, logged: list[dict[str, Any]]
) -> list[tuple[float, float]]:
    """(train loss, grad norm) of the run's first steps, redone in plain torch from init.apr.

    The documented recipe: the epoch-0 order is numpy's permutation seeded with --seed (0), batches
    of --batch-size windows; grads zeroed, whole-logits cross-entropy, the global norm over every
    parameter clipped to --grad-clip, AdamW (weight decay 0.1 on matrices only, betas 0.9/0.95) at
    the lr the run logged for the step.
    """
    torch.manual_seed(0)
    model = from_pretrained(init).train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(0.9, 0.95),
    )
    reader = ShardReader(train_shards, seq_len=SEQ)
    order = np.random.default_rng(0).permutation(len(reader)).tolist()
    out = []
    for step, record in enumerate(logged):
        x, y = _batch(reader, order[step * BATCH : (step + 1) * BATCH])
        for p in params:
            p.grad = None
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        loss.backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None))
        scale = min(1.0, CLIP / (float(norm) + 1e-6))
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        for group in optimizer.param_groups:
            group["lr"] = record["lr"]
        optimizer.step()
        out.append((float(loss.detach()), float(norm)))
    return out


def plain_val_loss(checkpoint: Path, val_shards: Path) -> float:
    """Mean over the val set's full batches of F.cross_entropy on the checkpoint's whole logits."""
    model = from_pretrained(checkpoint)
    reader = ShardReader(val_shards, seq_len=SEQ)
    losses = []
    with torch.no_grad():
        for b in range(len(reader) // BATCH):
            x, y = _batch(reader, list(range(b * BATCH, (b + 1) * BATCH)))
            logits = model(x)
            losses.append(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))))
    return sum(losses) / len(losses)


def _jsonl(path: Path, modules: tuple[str, ...]) -> Path:
    path.write_text(
        "".join(json.dumps({"content": (STDLIB / m).read_text(encoding="utf-8")}) + "\n" for m in modules),
        encoding="utf-8",
    )
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, f"shiptwo {' '.join(argv)} exited {code}: {err.strip()}"
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    train, val = _jsonl(root / "train.jsonl", TRAIN_MODULES), _jsonl(root / "val.jsonl", VAL_MODULES)
    for argv in (
        [
            "tokenize",
            "train",
            "--corpus",
            str(train),
            "--vocab-size",
            str(VOCAB),
            "--output",
            str(root / "tok"),
        ],
        [
            "tokenize",
            "encode-corpus",
            "--tokenizer",
            str(root / "tok"),
            "--corpus",
            str(train),
            "--output",
            str(root / "train"),
            "--no-progress",
        ],
        [
            "tokenize",
            "encode-corpus",
            "--tokenizer",
            str(root / "tok"),
            "--corpus",
            str(val),
            "--output",
            str(root / "val"),
            "--no-progress",
        ],
    ):
        if main(argv) != 0:
            raise RuntimeError(f"shiptwo {' '.join(argv)} failed")
    torch.manual_seed(0)
    save_apr(
        Qwen2(
            Qwen2Config(
                vocab_size=VOCAB,
                hidden_size=64,
                num_layers=2,
                num_heads=4,
                num_kv_heads=2,
                head_dim=16,
                intermediate_size=128,
                max_position_embeddings=256,
            )
        ),
        root / "init.apr",
    )
    return root


@pytest.mark.falsifier("FALSIFY-FINETUNE-005")
def test_shiptwo_train_lowers_val_loss(
    shards: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record_measurement,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant(falsifier_control, monkeypatch)
    run = tmp_path / "run"
    out = _cli(
        capsys,
        "train",
        "--init",
        str(shards / "init.apr"),
        "--shards",
        str(shards / "train"),
        "--val-shards",
        str(shards / "val"),
        "--epochs",
        "2",
        "--lr",
        str(LR),
        "--batch-size",
        str(BATCH),
        "--seq-len",
        str(SEQ),
        "--run-dir",
        str(run),
        "--output",
        str(tmp_path / "ckpt"),
        "--no-progress",
        "--format",
        "json",
    )
    summary = json.loads(out)
    assert summary["step0_val_loss"] == pytest.approx(math.log(VOCAB), rel=0.05)  # a fresh model is uniform
    assert summary["final_val_loss"] < summary["step0_val_loss"]

    # The evidence a run must leave behind.
    for name in ("command.json", "host.json", "config.json", "steps.jsonl", "loss.png", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "step" for r in steps) == summary["steps"]
    metas = sorted(run.glob("epoch-*.metadata.json"))
    assert [p.name for p in metas] == ["epoch-000.metadata.json", "epoch-001.metadata.json"]
    for p in metas:
        assert tuple(json.loads(p.read_text())) == EPOCH_METADATA_KEYS
    last = json.loads(metas[-1].read_text())
    assert last["val_loss"] == summary["final_val_loss"]
    assert last["tokens_seen"] == summary["steps"] * 8 * 32

    # `shiptwo eval` on the saved checkpoint reproduces the trainer's final val_loss.
    last_apr = tmp_path / "ckpt" / "epoch-001.apr"
    assert json.loads((tmp_path / "ckpt" / "epoch-001.metadata.json").read_text()) == last
    scored = json.loads(
        _cli(
            capsys,
            "eval",
            "--model",
            str(last_apr),
            "--shards",
            str(shards / "val"),
            "--batch-size",
            "8",
            "--seq-len",
            "32",
            "--format",
            "json",
        )
    )
    assert scored["val_loss"] == pytest.approx(summary["final_val_loss"], abs=1e-5)
    assert scored["ln_vocab"] == pytest.approx(math.log(VOCAB))
    assert from_pretrained(last_apr).config.vocab_size == VOCAB
    record_measurement("val_loss_drop_fraction", summary["val_loss_drop_fraction"])

    # The numbers are the model's, not the trainer's: its first two steps replayed by plain torch,
    # and its final val_loss recomputed from the saved checkpoint's logits.
    logged = [r for r in steps if r["event"] == "step"][:2]
    replayed = replay_first_steps(shards / "init.apr", shards / "train", logged)
    pairs = list(zip(logged, replayed, strict=True))
    record_measurement("replay_train_loss_abs_diff", max(abs(r["loss"] - loss) for r, (loss, _) in pairs))
    record_measurement(
        "replay_grad_norm_rel_diff", max(abs(r["grad_norm"] - norm) / norm for r, (_, norm) in pairs)
    )
    record_measurement(
        "final_val_loss_abs_diff_plain",
        abs(summary["final_val_loss"] - plain_val_loss(last_apr, shards / "val")),
    )
