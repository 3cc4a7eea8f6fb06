"""encode-corpus's overlapped pipeline: the same bytes as the serial one it replaced, for 1 and 2
workers and both vocab formats, and the structure that makes it fast (reading ahead in a thread of
its own, the encoder called on whole batches, shards written behind in a thread of their own)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shiptwo.errors import FormatError
from shiptwo.tokenize import corpus as corpus_module
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


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("encode-corpus")]


def test_the_reader_parses_ahead_in_its_own_thread_within_its_bound(
    tmp_path: Path, vocabs: dict[str, Path], corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produced: list[str] = []  # the thread that produced each batch
    ahead = threading.Event()  # set once the reader is READ_AHEAD + 1 batches ahead of the encoder
    real_read, real_map = corpus_module.read_batches, corpus_module._Encoder.map

    def read_batches(*args: Any, **kwargs: Any) -> Iterator[list[Any]]:
        for batch in real_read(*args, **kwargs):
            produced.append(threading.current_thread().name)
            if len(produced) > corpus_module.READ_AHEAD:
                ahead.set()
            yield batch

    def map_waiting(self: Any, batches: Iterator[list[Any]]) -> Iterator[Any]:
        for k, item in enumerate(real_map(self, batches)):
            if k == 0:
                # A reader in the encoder's thread could not get ahead while the encoder waits here.
                assert ahead.wait(timeout=30), f"the reader did not run ahead: {len(produced)} batches"
                time.sleep(0.2)  # room for an unbounded reader to show itself
                assert len(produced) <= corpus_module.READ_AHEAD + 3  # queue + in hand + 2 in flight
            yield item

    monkeypatch.setattr(corpus_module, "read_batches", read_batches)
    monkeypatch.setattr(corpus_module._Encoder, "map", map_waiting)
    encode_corpus(vocabs["hex"], [corpus], tmp_path / "o", batch_chars=500, progress=False)
    assert len(produced) > 3 * corpus_module.READ_AHEAD  # the bound was met, not the end of input
    assert set(produced) == {"encode-corpus-reader"}
    assert _pipeline_threads() == []


@pytest.mark.parametrize("fmt", ["hex", "byte-level"])
def test_the_encoder_gets_whole_batches_and_the_writer_thread_writes(
    tmp_path: Path, vocabs: dict[str, Path], corpus: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from shiptwo.tokenize.bytelevel import ByteLevelTokenizer
    from shiptwo.tokenize.hexbpe import HexByteTokenizer

    cls: Any = HexByteTokenizer if fmt == "hex" else ByteLevelTokenizer
    calls: list[int] = []  # texts per encode_batch call
    writers: list[str] = []
    real_encode, real_write = cls.encode_batch, corpus_module._write_shard

    def encode_batch(self: Any, texts: list[str]) -> Any:
        calls.append(len(texts))
        return real_encode(self, texts)

    def write_shard(path: Path, ids: Any) -> str:
        writers.append(threading.current_thread().name)
        return real_write(path, ids)

    monkeypatch.setattr(cls, "encode_batch", encode_batch)
    monkeypatch.setattr(corpus_module, "_write_shard", write_shard)
    m = encode_corpus(
        vocabs[fmt], [corpus], tmp_path / "o", shard_tokens=3000, batch_chars=20_000, progress=False
    )
    chars = sum(map(len, _texts()))
    assert sum(calls) == m["total_documents"] == 300
    assert len(calls) <= chars // 20_000 + 1  # one call a batch, never one a document
    assert len(writers) == m["shard_count"] > 1 and set(writers) == {"encode-corpus-writer"}


def test_a_bad_line_from_the_reader_thread_stops_every_stage(tmp_path: Path, vocabs: dict[str, Path]) -> None:
    lines = [json.dumps({"content": t}) for t in _texts()]
    lines[250] = "{not json"
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        FormatError, match=r"c.jsonl:251: invalid JSON .*; fix the line or pass --on-bad-line skip"
    ):
        encode_corpus(
            vocabs["hex"], [path], tmp_path / "o", shard_tokens=3000, batch_chars=500, progress=False
        )
    progress = json.loads((tmp_path / "o" / "progress.json").read_text())
    assert progress["shards"] and progress["position"][2] < 251  # shards before the bad line are kept
    assert _pipeline_threads() == []


def test_worker_processes_get_their_share_of_the_cores(
    vocabs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shiptwo.tokenize import detect_format

    report = detect_format(vocabs["hex"])
    monkeypatch.setattr(corpus_module, "_worker_tokenizer", None)
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    corpus_module._worker_init(report, None, 3)
    assert os.environ["RAYON_NUM_THREADS"] == "3" and corpus_module._worker_tokenizer is not None
    monkeypatch.setenv("RAYON_NUM_THREADS", "5")  # the user's choice stands
    corpus_module._worker_init(report, None, 3)
    assert os.environ["RAYON_NUM_THREADS"] == "5"


def test_byte_tokens_by_lookup_count_the_models_vocab(vocabs: dict[str, Path]) -> None:
    from shiptwo.tokenize import load_tokenizer
    from shiptwo.tokenize.detect import count_byte_chars

    tok: Any = load_tokenizer(vocabs["byte-level"])
    whole = count_byte_chars(tok.tokenizer.get_vocab(with_added_tokens=False))
    assert corpus_module._byte_tokens(tok) == whole
    assert 0 < whole <= 256
