"""FALSIFY-PRETRAINED-001: what a model learned survives saving, reloading and evaluation.

A small Qwen2 is trained to fit a low-entropy corpus, saved as .apr and as a Hugging Face dir,
reloaded, and evaluated: its val loss must sit far below ln(vocab), and transformers'
Qwen2ForCausalLM on the saved weights must give the same loss on the same batch (the seeds'
step-1 val loss of 18.55 nats, above uniform, with "correct" weights).

Controls plant the seeds' suspects for that number into the real reload and eval path (`plant`):
the tied head or a square projection mis-loaded, labels left unshifted, a loss chunk dropped.
The loss runs in chunks, as it does for the real vocab (`chunked_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import shiptwo.qwen2.model as model_mod
from shiptwo.models.defects import DEFECTS
from shiptwo.qwen2 import checkpoint
from shiptwo.qwen2.checkpoint import from_pretrained, save_apr, save_hf
from shiptwo.qwen2.defects import plant_loss_defect
from shiptwo.qwen2.model import Qwen2, Qwen2Config
from shiptwo.qwen2.train import TrainConfig, eval_batch, train
from shiptwo.shards import ArrayWindows

transformers = pytest.importorskip("transformers")

CFG = Qwen2Config(
    vocab_size=256,
    hidden_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=12,
    intermediate_size=96,
    tied_embeddings=True,
)
SEQ = 32
CHUNK_ROWS = 48  # an 8 x 32 eval batch takes six loss chunks, as a batch of the real vocab takes several


@pytest.fixture(scope="module", autouse=True)
def chunked_loss() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_mod, "LOSS_CHUNK_ELEMENTS", CFG.vocab_size * CHUNK_ROWS)
        yield


def plant(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the control's defect into the real loader or eval path (nothing on the real run)."""
    if control is None or plant_loss_defect(control.id, monkeypatch):
        return
    real_load_state = checkpoint.load_state
    if control == "tied-head-random-on-load":
        # H4A: populate fills the embedding; the tied head falls through to a fresh random init.
        def head_left_random(model: Any, tensors: Any, *, source: str) -> None:
            real_load_state(model, tensors, source=source)
            emb = model.tok_embeddings.weight
            fresh = torch.randn(emb.shape, generator=torch.Generator().manual_seed(1234)) * 0.02
            model.lm_head.weight = torch.nn.Parameter(fresh.to(emb.dtype))

        monkeypatch.setattr(checkpoint, "load_state", head_left_random)
    elif control == "transpose-square-on-load":
        # H4B: the loader installs q_proj and o_proj transposed; their square shapes pass every check.
        def transposed(model: Any, tensors: Any, *, source: str) -> None:
            tensors = dict(tensors)
            DEFECTS["transpose-square"].plant(tensors, model.config.to_hf())
            real_load_state(model, tensors, source=source)

        monkeypatch.setattr(checkpoint, "load_state", transposed)
    else:
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


def corpus(seed: int, n_tokens: int) -> np.ndarray:
    """Sentences drawn from eight fixed 'phrases' in random order: learnable, not memorisable."""
    phrases = [np.random.default_rng(100 + k).integers(5, CFG.vocab_size, 11) for k in range(8)]
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n_tokens:
        out += [2, *phrases[rng.integers(0, 8)]]  # 2 = a document separator
    return np.asarray(out[:n_tokens], dtype=np.uint32)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ArrayWindows]:
    torch.manual_seed(0)
    model = Qwen2(CFG)
    val = ArrayWindows(corpus(2, 16 * (SEQ + 1)), seq_len=SEQ)
    train(
        model,
        train_reader=ArrayWindows(corpus(1, 128 * (SEQ + 1)), seq_len=SEQ),
        val_reader=val,
        config=TrainConfig(lr=1e-2, batch_size=16, seq_len=SEQ, epochs=3),
    )
    root = tmp_path_factory.mktemp("fitted")
    save_apr(model, root / "model.apr")
    save_hf(model, root / "hf")
    return root / "model.apr", root / "hf", val


@pytest.mark.falsifier("FALSIFY-PRETRAINED-001")
@pytest.mark.parametrize("fmt", ["apr", "hf"])
def test_reloaded_model_beats_uniform_and_matches_transformers(
    fmt: str,
    fitted: tuple[Path, Path, ArrayWindows],
    record_measurement,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apr_path, hf_dir, val = fitted
    plant(falsifier_control, monkeypatch)
    model = from_pretrained(apr_path if fmt == "apr" else hf_dir)
    window = torch.from_numpy(np.stack([val.window(i) for i in range(8)]).astype(np.int64))
    x, y = window[:, :-1], window[:, 1:]
    loss = eval_batch(model, x, y)
    ref = transformers.Qwen2ForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        logits = ref(x).logits
    ref_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    record_measurement("val_loss_over_ln_vocab", loss / math.log(CFG.vocab_size))
    record_measurement("loss_abs_diff_vs_transformers", abs(loss - ref_loss))
