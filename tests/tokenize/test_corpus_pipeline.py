"""encode-corpus's overlapped pipeline: the same bytes as the serial one it replaced, for 1 and 2
workers and both vocab formats, and the structure that makes it fast (reading ahead in a thread of
its own, the encoder called on whole batches, shards written behind in a thread of their own)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from shiptwo.tokenize._testing import train_byte_level, write_jsonl
from shiptwo.tokenize.corpus import encode_corpus
from shiptwo.tokenize.hexbpe import train_hex_bpe

# sha256 of shard names and bytes written by the serial pipeline (commit 1b8a910) for `_texts()`,
# shard_tokens=3000, batch_chars=4000: the overlapped pipeline must write the same bytes.
SERIAL_SHARDS = {
    "hex": ("70a255ce0a364ad6af83192839de8f11ff36e9ade2f0702a9f6bb3b21a488b41", 19),
    "byte-level": ("c01f4630d2dbb11530536380c3286c4faf01427194d060978c4d77d9d3483c61", 25),
}


def _texts() -> list[str]:
    """300 documents of 0 to 400 code-like words, non-ASCII and empty ones included."""
    rng = random.Random(13)
    words = ["def", "return", "x", "self", "import", "class", "for", "in", "if"]
    words += ["(", ")", ":", "\n", "é", "日本"]
    return [
        "".join(rng.choice(words) + rng.choice([" ", "", "\n"]) for _ in range(rng.randrange(0, 400)))
        for _ in range(300)
    ]


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vocabs")
    train_hex_bpe(_texts()[:50], vocab_size=400).save(d / "hex")
    return {"hex": d / "hex", "byte-level": train_byte_level(_texts()[:50], d / "bl", vocab_size=400)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "c.jsonl", _texts())


def _shards_sha(out: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    shards = sorted(out.glob("shard-*.bin"))
    for p in shards:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest(), len(shards)


def _manifest(out: Path) -> dict[str, Any]:
    m: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    m.pop("elapsed_seconds")
    return m


@pytest.mark.parametrize("fmt", ["hex", "byte-level"])
def test_one_and_two_workers_write_the_serial_pipelines_bytes(
    tmp_path: Path, vocabs: dict[str, Path], corpus: Path, fmt: str
) -> None:
    for workers in (1, 2):
        encode_corpus(
            vocabs[fmt],
            [corpus],
            tmp_path / f"w{workers}",
            shard_tokens=3000,
            batch_chars=4000,
            workers=workers,
            progress=False,
        )
    assert _shards_sha(tmp_path / "w1") == _shards_sha(tmp_path / "w2") == SERIAL_SHARDS[fmt]
    assert _manifest(tmp_path / "w1") == _manifest(tmp_path / "w2")
