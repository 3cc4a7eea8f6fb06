"""Fixtures for the model area: tiny shard sets written by hand (flat little-endian u32 + manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def write_shards(directory: Path, tokens: np.ndarray, *, vocab_size: int) -> Path:
    """A one-shard pretokenize-bin-v1 dir holding `tokens`."""
    directory.mkdir(parents=True)
    tokens.astype("<u4").tofile(directory / "shard-00000.bin")
    (directory / "manifest.json").write_text(
        json.dumps(
            {
                "schema": "pretokenize-bin-v1",
                "vocab_size": vocab_size,
                "eos_policy": "none",
                "eos_token_id": 2,
                "shard_count": 1,
                "total_tokens": int(tokens.size),
                "total_documents": 1,
                "content_field": "content",
                "shards": [{"file": "shard-00000.bin", "tokens": int(tokens.size)}],
            }
        )
    )
    return directory


@pytest.fixture
def shard_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Train and val shards of a learnable token stream over a 64-id vocab."""
    rng = np.random.default_rng(0)
    stream = np.concatenate([np.arange(5, 40) for _ in range(120)]).astype(np.uint32)
    noise = rng.integers(5, 64, stream.size)
    stream = np.where(rng.random(stream.size) < 0.1, noise, stream).astype(np.uint32)
    cut = int(stream.size * 0.85)
    return (
        write_shards(tmp_path / "train", stream[:cut], vocab_size=64),
        write_shards(tmp_path / "val", stream[cut:], vocab_size=64),
    )
