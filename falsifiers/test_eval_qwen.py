"""FALSIFY-QWEN-STEP0-001: real Qwen2.5 weights score real Python far below uniform at step 0.

The seeds' step-1 val loss was 18.55 nats - above ln(151,936) = 11.93 - with "correct" weights.
Host gate `qwen-artifacts`: $SHIPTWO_QWEN_DIR names a Hugging Face Qwen2 snapshot (config.json,
tokenizer.json, *.safetensors). The text is CPython's own stdlib source, encoded with the
snapshot's tokenizer.json through Hugging Face `tokenizers`.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest
import torch

from shiptwo.checkpoint import from_pretrained
from shiptwo.train import eval_batch

MODULES = ("textwrap.py", "shlex.py", "fnmatch.py", "getopt.py")
SEQ = 256


@pytest.mark.falsifier("FALSIFY-QWEN-STEP0-001")
def test_qwen_step0_val_loss_on_python_source(record_measurement) -> None:
    from tokenizers import Tokenizer

    root = Path(os.environ["SHIPTWO_QWEN_DIR"])
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    rows = []
    for name in MODULES:  # one window from the start of each module: different files, real code
        ids = tok.encode((stdlib / name).read_text(encoding="utf-8")).ids
        if len(ids) <= SEQ:
            raise RuntimeError(f"{stdlib / name}: only {len(ids)} tokens, need {SEQ + 1}")
        rows.append(ids[: SEQ + 1])
    batch = torch.tensor(rows, dtype=torch.long)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = from_pretrained(root, device=device, dtype=torch.float32)
    loss = eval_batch(model, batch[:, :-1], batch[:, 1:])
    record_measurement("val_loss", loss)
