"""Fixtures shared by the real-model falsifiers: the snapshot, the model, real Python tokens.

Every real-model fixture is session-scoped: under `pytest -n 2` each worker loads the 0.5B model
once (about 5 s and 2 GB in fp32), and the tests that need it reuse it. A control never edits the
shared model: it plants its defect into a copy (`shiptwo.models.defects.plant_into_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shiptwo.harness.gates import check_gate
from shiptwo.models.evaltext import python_windows


def _gate_dir(gate: str) -> Path:
    result = check_gate(gate)
    if not result.ok:  # the plugin skips first when the contract names the gate; this guards the rest
        pytest.skip(f"host gate {gate!r} closed: {result.reason}")
    return result.artifacts[0].parent


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """The Qwen2 snapshot the `qwen-artifacts` gate opened on ($SHIPTWO_QWEN_DIR or the fetched one)."""
    return _gate_dir("qwen-artifacts")


@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    """The fetched GGUF the `qwen-gguf` gate opened on."""
    result = check_gate("qwen-gguf")
    if not result.ok:
        pytest.skip(f"host gate 'qwen-gguf' closed: {result.reason}")
    return result.artifacts[0]


@pytest.fixture(scope="session")
def qwen_model(qwen_dir: Path) -> Any:
    """The snapshot loaded in fp32 on the CPU, in eval mode; shared, so never modified by a test."""
    import torch

    from shiptwo.qwen2.checkpoint import from_pretrained

    return from_pretrained(qwen_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def qwen_batch(qwen_dir: Path) -> Any:
    """4 x 257 ids of CPython stdlib source, encoded with the snapshot's own tokenizer.json."""
    return python_windows(qwen_dir / "tokenizer.json")
