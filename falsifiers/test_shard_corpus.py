"""Falsifiers of pretokenize-bin-v1: shard format and EOS placement, unk refusal, entropy, determinism,
resume.

Each falsifier's controls (contracts/pretokenize-bin-v1.yaml) plant the defect its `if_fails`
names into shiptwo.tokenize.corpus, through monkeypatch, and run the same prediction.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shiptwo.cli import main as shiptwo_main
from shiptwo.shards import ShardReader, load_manifest
from shiptwo.tokenize import corpus as corpus_module
from shiptwo.tokenize import load_tokenizer
from shiptwo.tokenize._testing import python_sources, write_jsonl
from shiptwo.tokenize.corpus import encode_corpus
from shiptwo.tokenize.hexbpe import HexByteTokenizer, train_hex_bpe
from shiptwo.tokenize.qwen2 import find_qwen2_tokenizer_dir


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [text for _, text in python_sources(30, max_bytes=6_000)] + ["", "x"]


@pytest.fixture(scope="module")
def hex_dir(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    d = tmp_path_factory.mktemp("hexvocab")
    train_hex_bpe(texts, vocab_size=600).save(d)
    return d


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> list[Path]:
    d = tmp_path_factory.mktemp("corpus")
    return [write_jsonl(d / "a.jsonl", texts[:20]), write_jsonl(d / "b.jsonl", texts[20:])]


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.bin"))}


def _manifest_sans_timing(out: Path) -> dict[str, Any]:
    m = json.loads((out / "manifest.json").read_text())
    m.pop("elapsed_seconds")
    return m


def _write_shard_int64(path: Path, ids: np.ndarray) -> str:
    """corpus._write_shard with numpy's default integer: 8 bytes an id, not little-endian u32."""
    data = ids.astype(np.int64).tobytes()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.falsifier("FALSIFY-SHARD-FORMAT-001")
@pytest.mark.parametrize("policy", ["between", "after", "none"])
def test_shards_hold_documents_whole_with_eos_by_policy(
    tmp_path: Path,
    hex_dir: Path,
    corpus_files: list[Path],
    texts: list[str],
    policy: str,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if falsifier_control == "eos-never-placed":
        if policy == "none":
            pytest.skip("policy none places no EOS: the defect changes nothing here")
        monkeypatch.setattr(
            corpus_module, "_place_eos", lambda flat, lengths, eos, eos_id, *, first_document: (flat, lengths)
        )
    elif falsifier_control == "ids-as-int64":
        monkeypatch.setattr(corpus_module, "_write_shard", _write_shard_int64)
    out = tmp_path / "shards"
    manifest = encode_corpus(hex_dir, corpus_files, out, eos_policy=policy, shard_tokens=3000, progress=False)
    tok = HexByteTokenizer.load(hex_dir)
    eos = tok.eos_id
    assert eos == 2 and manifest["eos_token_id"] == (None if policy == "none" else 2)
    # The expected stream, built document by document with the plain single-text encoder.
    docs = []
    for k, text in enumerate(texts):
        ids = tok.encode(text)
        if policy == "between" and k > 0:
            ids = [eos, *ids]
        elif policy == "after":
            ids = [*ids, eos]
        docs.append(ids)
    files = sorted(out.glob("shard-*.bin"))
    assert [f.name for f in files] == [f"shard-{i:05d}.bin" for i in range(manifest["shard_count"])]
    k = 0
    for shard, record in zip(files, manifest["shards"], strict=True):
        data = shard.read_bytes()
        assert len(data) % 4 == 0
        ids = np.frombuffer(data, dtype="<u4")
        assert ids.size == record["tokens"] and (ids.size == 0 or int(ids.max()) < manifest["vocab_size"])
        expected = [i for doc in docs[k : k + record["documents"]] for i in doc]
        assert ids.tolist() == expected  # whole documents, EOS exactly where the policy puts it
        # Closed after the first document that reached shard_tokens, never earlier.
        lengths = [len(d) for d in docs[k : k + record["documents"]]]
        assert sum(lengths[:-1]) < 3000
        k += record["documents"]
    assert k == len(texts) == manifest["total_documents"]
    assert sum(r["tokens"] for r in manifest["shards"]) == manifest["total_tokens"] == sum(map(len, docs))
    assert [f["documents"] for f in manifest["input_files"]] == [20, len(texts) - 20]
    for key in (
        "tokenizer_sha256",
        "producer",
        "vocab_size",
        "content_field",
        "elapsed_seconds",
        "eos_policy",
    ):
        assert key in manifest
    # Every input named with its own sha256; the corpus sum covers all input bytes in order.
    assert [(f["path"], f["sha256"]) for f in manifest["input_files"]] == [
        (str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in corpus_files
    ]
    assert (
        manifest["corpus_sha256"]
        == hashlib.sha256(b"".join(p.read_bytes() for p in corpus_files)).hexdigest()
    )
    assert (
        manifest["tokenizer_sha256"]
        == hashlib.sha256(
            (hex_dir / "vocab.json").read_bytes() + (hex_dir / "merges.txt").read_bytes()
        ).hexdigest()
    )
    # The reader agrees: windows of seq_len + 1 over each shard, tails dropped.
    reader = ShardReader(out, seq_len=63)
    assert len(reader) == sum(r["tokens"] // 64 for r in manifest["shards"])
    first = np.frombuffer(files[0].read_bytes(), dtype="<u4")
    assert np.array_equal(reader.window(0), first[:64]) and load_manifest(out)["shard_count"] == len(files)


def _refusing_hex_vocab(hex_dir: Path, dest: Path) -> Path:
    # A hex vocab without the keys of bytes 0xd0..0xff (208 of 256 keys: still hex-byte by count):
    # Cyrillic and CJK text has no spelling in it.
    vocab = json.loads((hex_dir / "vocab.json").read_text())
    dropped = {f"{b:02x}" for b in range(0xD0, 0x100)}
    kept = {
        t: i
        for t, i in vocab.items()
        if t not in dropped and not any(t[j : j + 2] in dropped for j in range(0, len(t), 2))
    }
    merges = [
        m
        for m in (hex_dir / "merges.txt").read_text().splitlines()[1:]
        if all(p in kept for p in m.split(" ")) and "".join(m.split(" ")) in kept
    ]
    dest.mkdir()
    (dest / "vocab.json").write_text(json.dumps(kept))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{m}\n" for m in merges))
    return dest


@pytest.mark.falsifier("FALSIFY-SHARD-UNK-REFUSAL-001")
def test_encode_corpus_refuses_unk_heavy_corpus(
    tmp_path: Path,
    hex_dir: Path,
    capsys: pytest.CaptureFixture[str],
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if falsifier_control == "no-unk-threshold":
        # encode-corpus as aprender had it: the audit is computed, but no threshold is ever applied.
        real_encode = corpus_module.encode_corpus

        def no_threshold(*args: Any, **kwargs: Any) -> dict[str, Any]:
            kwargs["max_unk_ratio"] = None
            return real_encode(*args, **kwargs)

        monkeypatch.setattr(corpus_module, "encode_corpus", no_threshold)
    vocab_dir = _refusing_hex_vocab(hex_dir, tmp_path / "vocab")
    corpus = write_jsonl(
        tmp_path / "ru.jsonl", ["Привет, мир! " * 20, "def f():\n    return 'данные'\n", "你好世界"]
    )
    out = tmp_path / "out"
    code = shiptwo_main(
        [
            "tokenize",
            "encode-corpus",
            "--tokenizer",
            str(vocab_dir),
            "--corpus",
            str(corpus),
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert not (out / "manifest.json").exists()
    assert "unk ratio" in err and "exceeds the threshold 1.00%" in err and "--allow-unk" in err
    ratio = float(err.split("unk ratio ")[1].split("%")[0]) / 100
    assert ratio > 0.01
    # Told otherwise, it finishes and the audit still carries the ratio.
    code = shiptwo_main(
        [
            "tokenize",
            "encode-corpus",
            "--tokenizer",
            str(vocab_dir),
            "--corpus",
            str(corpus),
            "--output",
            str(tmp_path / "ok"),
            "--allow-unk",
            "--no-progress",
        ]
    )
    assert code == 0
    audit = json.loads((tmp_path / "ok" / "manifest.json").read_text())["audit"]
    assert audit["unk_ratio"] == pytest.approx(ratio, abs=1e-6) and audit["max_unk_ratio"] is None


class _NumpyWithNaturalLog:
    """numpy as corpus.py sees it when its audit takes np.log where np.log2 was meant."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    log2 = staticmethod(np.log)


@pytest.mark.falsifier("FALSIFY-SHARD-ENTROPY-001")
def test_real_python_with_real_qwen2_has_no_unk_and_real_entropy(
    tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch, record_measurement: Any
) -> None:
    if falsifier_control == "entropy-in-nats":
        monkeypatch.setattr(corpus_module, "np", _NumpyWithNaturalLog())
    qwen = find_qwen2_tokenizer_dir()
    assert qwen is not None
    sources = [text for _, text in python_sources(60, max_bytes=40_000)]
    corpus = write_jsonl(tmp_path / "py.jsonl", sources)
    manifest = encode_corpus(qwen, [corpus], tmp_path / "out", shard_tokens=100_000, progress=False)
    audit = manifest["audit"]
    # Cross-check the audit against a histogram computed here from the shards themselves.
    ids = np.concatenate(
        [np.fromfile(p, dtype="<u4") for p in sorted((tmp_path / "out").glob("shard-*.bin"))]
    )
    counts = np.bincount(ids)
    p = counts[counts > 0] / ids.size
    entropy = float(-(p * np.log2(p)).sum())
    assert audit["entropy_bits"] == pytest.approx(entropy, abs=1e-5)
    assert audit["distinct_tokens"] == int((counts > 0).sum())
    assert audit["max_entropy_bits"] == pytest.approx(math.log2(151_665), abs=1e-5)
    tok = load_tokenizer(qwen)
    assert int(ids.max()) < tok.vocab_size
    # Qwen2 has no unk id: the audit must say so instead of passing off a 0 that cannot be anything
    # else. The check that can fail: split the shards back into documents at EOS and decode each.
    assert audit["unk_token_id"] is None and audit["unk_ratio"] == 0.0
    assert audit["byte_tokens"] == 256 and audit["unk_note"].startswith("no unk token")
    eos = manifest["eos_token_id"]
    assert manifest["eos_policy"] == "between" and eos == tok.eos_id
    cuts = np.flatnonzero(ids == eos)
    documents = np.split(ids, cuts)
    assert len(documents) == len(sources)
    mismatched = sum(
        tok.decode(doc[1:] if k else doc) != unicodedata.normalize("NFC", text)
        for k, (doc, text) in enumerate(zip(documents, sources, strict=True))
    )
    record_measurement("roundtrip_mismatched_documents", mismatched)
    record_measurement("entropy_bits", entropy)


def _plant_results_by_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker pipeline deals batches round-robin to the workers and hands on each worker's
    results in turn (all of worker 0's, then worker 1's, ...): order depends on the worker count."""
    real_map = corpus_module._Encoder.map

    def by_worker(
        self: Any, batches: Iterator[list[Any]]
    ) -> Iterator[tuple[list[Any], np.ndarray, np.ndarray]]:
        if self.pool is None:
            yield from real_map(self, batches)
            return
        dealt = list(batches)
        for k in range(self.workers):
            mine = dealt[k :: self.workers]
            texts = [[d.text for d in b if isinstance(d, corpus_module._Doc)] for b in mine]
            results = [self.pool.apply_async(corpus_module._worker_encode, (t,)) for t in texts]
            for batch, result in zip(mine, results, strict=True):
                yield batch, *result.get()

    monkeypatch.setattr(corpus_module._Encoder, "map", by_worker)


@pytest.mark.falsifier("FALSIFY-SHARD-DETERMINISM-001")
def test_worker_counts_write_identical_shards_and_manifests(
    tmp_path: Path,
    hex_dir: Path,
    corpus_files: list[Path],
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if falsifier_control == "results-by-worker":
        _plant_results_by_worker(monkeypatch)
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        encode_corpus(
            hex_dir, corpus_files, out, shard_tokens=2500, workers=workers, batch_chars=8_000, progress=False
        )
        runs[workers] = (_shards(out), _manifest_sans_timing(out))
    assert len(runs[1][0]) >= 3
    assert runs[1] == runs[2] == runs[3]


@pytest.mark.falsifier("FALSIFY-SHARD-RESUME-001")
def test_resume_after_interruption_is_byte_identical(
    tmp_path: Path,
    hex_dir: Path,
    corpus_files: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    falsifier_control: Any,
) -> None:
    if falsifier_control == "resume-reads-from-start":
        # Resuming reloads the finished shards and their counts but reads the input from its start.
        real_prepare = corpus_module._prepare_output

        def from_start(out: Path, settings: dict[str, Any], resume: bool, *args: Any, **kwargs: Any) -> Any:
            state, histogram = real_prepare(out, settings, resume, *args, **kwargs)
            if resume:
                state.position = (0, 0, 0)
            return state, histogram

        monkeypatch.setattr(corpus_module, "_prepare_output", from_start)
    ref = tmp_path / "ref"
    encode_corpus(hex_dir, corpus_files, ref, shard_tokens=2500, progress=False)
    assert len(_shards(ref)) >= 4

    real_write = corpus_module._write_shard
    calls = {"n": 0}

    def dying_write(path: Path, ids: np.ndarray) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            # Killed mid-write: half a shard under the temp name, nothing under the final one.
            path.with_name(f".{path.name}.tmp").write_bytes(ids.astype("<u4").tobytes()[: ids.size * 2])
            raise KeyboardInterrupt
        return real_write(path, ids)

    out = tmp_path / "out"
    monkeypatch.setattr(corpus_module, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(hex_dir, corpus_files, out, shard_tokens=2500, progress=False)
    monkeypatch.setattr(corpus_module, "_write_shard", real_write)
    assert not (out / "manifest.json").exists()
    # Every shard under a final name is complete: it is exactly the reference shard.
    partial = _shards(out)
    assert list(partial) == ["shard-00000.bin", "shard-00001.bin"]
    assert all(partial[name] == _shards(ref)[name] for name in partial)
    # A shard renamed into place just before the crash, with no progress record yet, is redone.
    (out / "shard-00002.bin").write_bytes(b"\x00" * 12)
    with pytest.raises(Exception, match="pass --resume"):
        encode_corpus(hex_dir, corpus_files, out, shard_tokens=2500, progress=False)
    encode_corpus(hex_dir, corpus_files, out, shard_tokens=2500, resume=True, progress=False)
    assert _shards(out) == _shards(ref)
    assert _manifest_sans_timing(out) == _manifest_sans_timing(ref)
    assert not list(out.glob(".*.tmp")) and not (out / "progress.json").exists()
