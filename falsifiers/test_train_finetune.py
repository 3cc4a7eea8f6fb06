"""FALSIFY-FINETUNE-005: `shiptwo train` on shards from encode-corpus lowers val_loss, plausibly.

The whole user path runs in-process through the CLI: a hex-byte BPE is trained on a few CPython
stdlib modules, `tokenize encode-corpus` writes train and validation shards (different modules),
a small random Qwen2 is saved as .apr, `shiptwo train` fine-tunes it, and `shiptwo eval` re-scores
the last checkpoint. The plausible range (contract) flags a drop no model of this size could
reach on held-out text - the seeds' val_loss 0.00081.
"""

from __future__ import annotations

import json
import math
import sysconfig
from pathlib import Path

import pytest
import torch

from shiptwo.checkpoint import from_pretrained, save_apr
from shiptwo.cli import main
from shiptwo.model import Qwen2, Qwen2Config
from shiptwo.train import EPOCH_METADATA_KEYS

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAIN_MODULES = ("shlex.py", "fnmatch.py", "bisect.py")  # about 9,500 tokens: two short epochs
VAL_MODULES = ("getopt.py", "keyword.py")
VOCAB = 512


def _jsonl(path: Path, modules: tuple[str, ...]) -> Path:
    path.write_text("".join(json.dumps({"content": (STDLIB / m).read_text(encoding="utf-8")}) + "\n"
                            for m in modules), encoding="utf-8")
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
    for argv in (["tokenize", "train", "--corpus", str(train), "--vocab-size", str(VOCAB), "--output", str(root / "tok")],
                 ["tokenize", "encode-corpus", "--tokenizer", str(root / "tok"), "--corpus", str(train),
                  "--output", str(root / "train"), "--no-progress"],
                 ["tokenize", "encode-corpus", "--tokenizer", str(root / "tok"), "--corpus", str(val),
                  "--output", str(root / "val"), "--no-progress"]):
        if main(argv) != 0:
            raise RuntimeError(f"shiptwo {' '.join(argv)} failed")
    torch.manual_seed(0)
    save_apr(Qwen2(Qwen2Config(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                               head_dim=16, intermediate_size=128, max_position_embeddings=256)), root / "init.apr")
    return root


@pytest.mark.falsifier("FALSIFY-FINETUNE-005")
def test_shiptwo_train_lowers_val_loss(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       record_measurement) -> None:
    run = tmp_path / "run"
    out = _cli(capsys, "train", "--init", str(shards / "init.apr"), "--shards", str(shards / "train"),
               "--val-shards", str(shards / "val"), "--epochs", "2", "--lr", "1e-2",
               "--batch-size", "8", "--seq-len", "32", "--run-dir", str(run), "--output", str(tmp_path / "ckpt"),
               "--no-progress", "--format", "json")
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
    scored = json.loads(_cli(capsys, "eval", "--model", str(last_apr), "--shards", str(shards / "val"),
                             "--batch-size", "8", "--seq-len", "32", "--format", "json"))
    assert scored["val_loss"] == pytest.approx(summary["final_val_loss"], abs=1e-5)
    assert scored["ln_vocab"] == pytest.approx(math.log(VOCAB))
    assert from_pretrained(last_apr).config.vocab_size == VOCAB
    record_measurement("val_loss_drop_fraction", summary["val_loss_drop_fraction"])
