"""Falsifiers of bpe-format-v1 that need no real vocab: loader refusal, detection, hex layout, round trips.

Each falsifier's controls (contracts/bpe-format-v1.yaml) plant the defect its `if_fails` names
into the real code, through monkeypatch, and run the same prediction.
"""

from __future__ import annotations

import heapq
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiptwo.errors import FormatError
from shiptwo.tokenize import VocabFormat, detect, detect_format, hexbpe, load_tokenizer
from shiptwo.tokenize._common import HEX_BYTE_KEYS
from shiptwo.tokenize._testing import naive_hex_encode, python_sources, train_byte_level
from shiptwo.tokenize.detect import FormatReport
from shiptwo.tokenize.hexbpe import HexByteTokenizer, train_hex_bpe
from shiptwo.tokenize.qwen2 import find_qwen2_tokenizer_dir


@pytest.fixture(scope="module")
def sources() -> list[str]:
    return [text for _, text in python_sources(30, max_bytes=12_000)]


@pytest.fixture(scope="module")
def hex_dir(tmp_path_factory: pytest.TempPathFactory, sources: list[str]) -> Path:
    d = tmp_path_factory.mktemp("hex")
    train_hex_bpe(sources, vocab_size=700).save(d)
    return d


@pytest.fixture(scope="module")
def byte_level_dir(tmp_path_factory: pytest.TempPathFactory, sources: list[str]) -> Path:
    return train_byte_level(sources, tmp_path_factory.mktemp("bytelevel"), vocab_size=700)


@pytest.fixture(scope="module")
def hex_tok(hex_dir: Path) -> HexByteTokenizer:
    return HexByteTokenizer.load(hex_dir)


@pytest.fixture(scope="module")
def byte_level_tok(byte_level_dir: Path) -> Any:
    return load_tokenizer(byte_level_dir)


def _skip_hex_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """aprender before PR #1585: the hex loader checks structure only, never the hex-key count."""
    monkeypatch.setattr(hexbpe, "HEX_BYTE_THRESHOLD", 0)


@pytest.mark.falsifier("FALSIFY-BPE-FORMAT-MISMATCH-001")
def test_hex_loader_refuses_byte_level_vocab(
    byte_level_dir: Path, sources: list[str], falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if falsifier_control == "hex-fail-fast-skipped":
        _skip_hex_fail_fast(monkeypatch)
    vocab = json.loads((byte_level_dir / "vocab.json").read_text())
    hex_keys = sum(1 for b in range(256) if f"{b:02x}" in vocab)
    assert hex_keys < 200
    with pytest.raises(FormatError) as info:
        HexByteTokenizer.load(byte_level_dir)
    message = str(info.value)
    assert str(byte_level_dir / "vocab.json") in message
    assert f"{hex_keys} of 256 hex-byte keys" in message
    assert "load_tokenizer" in message and "\n" not in message
    # The dispatching loader picks the byte-level path and encodes Python with no <unk> at all.
    tok = load_tokenizer(byte_level_dir / "vocab.json")
    assert tok.format is VocabFormat.BYTE_LEVEL
    ids = tok.encode(sources[0])
    assert tok.unk_id is None or tok.unk_id not in ids
    assert tok.decode(ids) == sources[0]


def _plant_detect_defect(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the classification inside detect_format with the dispatch the control names."""

    def counted(
        path: Path, vocab: dict[str, Any], layout: Any, files: Any, fmt: VocabFormat, why: str
    ) -> FormatReport:
        hex_keys = detect.count_hex_keys(vocab)
        byte_chars = detect.count_byte_chars(vocab)
        reason = f"{hex_keys} of 256 hex-byte keys present: {why}"
        return FormatReport(fmt, layout, path, files, len(vocab), hex_keys, byte_chars, reason)

    if control == "try-hex-first":
        # PR #1596: hand the vocab to the hex loader and fall through to byte-level only when it
        # refuses; with PR #1585 still open, the hex loader refused nothing by count.
        _skip_hex_fail_fast(monkeypatch)

        def classify(
            path: Path, vocab: dict[str, Any], *, layout: Any, files: Any, exempt: Any
        ) -> FormatReport:
            try:
                HexByteTokenizer.load(path)
            except FormatError:
                return counted(
                    path, vocab, layout, files, VocabFormat.BYTE_LEVEL, "the hex loader refused it"
                )
            return counted(path, vocab, layout, files, VocabFormat.HEX_BYTE, "the hex loader took it")

    elif control == "below-threshold-is-byte-level":
        # The seeds' rule read literally: "any vocab without them is byte-level format".
        def classify(
            path: Path, vocab: dict[str, Any], *, layout: Any, files: Any, exempt: Any
        ) -> FormatReport:
            if detect.count_hex_keys(vocab) >= detect.HEX_BYTE_THRESHOLD:
                return counted(path, vocab, layout, files, VocabFormat.HEX_BYTE, "hex-byte")
            return counted(path, vocab, layout, files, VocabFormat.BYTE_LEVEL, "fewer than 200: byte-level")

    else:
        return
    monkeypatch.setattr(detect, "_classify", classify)


@pytest.mark.falsifier("FALSIFY-BPE-DETECT-001")
def test_detect_hex_vocab_has_256_keys(
    hex_dir: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if falsifier_control is not None:
        pytest.skip(
            f"a hex-byte vocab is hex-byte under {falsifier_control.id} too; the other two tests catch it"
        )
    report = detect_format(hex_dir)
    assert report.format is VocabFormat.HEX_BYTE
    assert report.hex_keys == 256
    assert "256 of 256 hex-byte keys" in report.reason


@pytest.mark.falsifier("FALSIFY-BPE-DETECT-001")
def test_detect_real_qwen2_vocab_is_byte_level_36_of_256(
    falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if falsifier_control == "below-threshold-is-byte-level":
        pytest.skip(
            "the real Qwen2 vocab is byte-level under that rule too; the unknown-format test catches it"
        )
    _plant_detect_defect(falsifier_control, monkeypatch)
    qwen = find_qwen2_tokenizer_dir()
    assert qwen is not None
    for path in (qwen, qwen / "vocab.json"):
        report = detect_format(path)
        assert report.format is VocabFormat.BYTE_LEVEL
        assert report.hex_keys == 36
        assert report.vocab_entries == 151_643
        assert "36 of 256 hex-byte keys" in report.reason
    # The seeds' exact case: the hex loader, handed the real Qwen2 vocab, refuses it by count.
    with pytest.raises(FormatError, match=r"vocab\.json: 36 of 256 hex-byte keys"):
        HexByteTokenizer.load(qwen)


@pytest.mark.falsifier("FALSIFY-BPE-DETECT-001")
def test_detect_refuses_unknown_formats(
    tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant_detect_defect(falsifier_control, monkeypatch)
    # A SentencePiece-style vocab: neither hex keys nor the byte-level alphabet.
    sp = {"<unk>": 0, "▁the": 1, "▁a": 2, **{chr(0x4E00 + i): 3 + i for i in range(300)}}
    (tmp_path / "vocab.json").write_text(json.dumps(sp))
    with pytest.raises(FormatError, match=r"unknown vocab format: 0 of 256 hex-byte keys"):
        detect_format(tmp_path)
    with pytest.raises(FormatError, match="unknown vocab format"):
        load_tokenizer(tmp_path)
    # A WordPiece tokenizer.json is refused by model type, not guessed.
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(FormatError, match="model.type is 'WordPiece'"):
        detect_format(tmp_path)


class _MaxHeapOfWholeTuples:
    """`heapq` as a trainer turned into a max-heap by negating the whole (count, left, right) key
    sees it: the most frequent pair still comes first, but ties go to the largest id pair."""

    def __getattr__(self, name: str) -> Any:
        return getattr(heapq, name)

    @staticmethod
    def _key(item: Any) -> Any:
        return (
            (item[0], -item[1], -item[2]) if len(item) == 3 else item
        )  # the encoder's 4-tuples pass as they are

    def heapify(self, heap: list[Any]) -> None:
        heap[:] = [self._key(x) for x in heap]
        heapq.heapify(heap)

    def heappush(self, heap: list[Any], item: Any) -> None:
        heapq.heappush(heap, self._key(item))

    def heappop(self, heap: list[Any]) -> Any:
        return self._key(heapq.heappop(heap))


def _plant_hex_training_defect(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if control == "no-mask-token":
        # Four specials, no <mask>: every byte id and merge id is one below aprender's.
        monkeypatch.setattr(hexbpe, "SPECIAL_TOKENS", ("<unk>", "<s>", "</s>", "<pad>"))
    elif control == "ties-to-largest-pair":
        monkeypatch.setattr(hexbpe, "heapq", _MaxHeapOfWholeTuples())


@pytest.mark.falsifier("FALSIFY-BPE-HEX-COMPAT-001")
def test_hex_layout_merge_order_and_reload(
    hex_dir: Path, sources: list[str], tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if falsifier_control == "ties-to-largest-pair":
        pytest.skip("any tie order gives a self-consistent layout; the tie-break golden test catches it")
    if falsifier_control is not None:
        # The files a trainer with the control's defect writes, from the same sources.
        _plant_hex_training_defect(falsifier_control, monkeypatch)
        hex_dir = tmp_path / "hex"
        train_hex_bpe(sources, vocab_size=700).save(hex_dir)
    vocab = json.loads((hex_dir / "vocab.json").read_text())
    lines = (hex_dir / "merges.txt").read_text().splitlines()
    assert lines[0] == "#version: 0.2"
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:5] == [
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
        "<mask>",
    ]
    assert all(vocab[f"{b:02x}"] == 5 + b for b in range(256))
    # Merge k creates id 261 + k (in file order) unless its string already existed.
    next_id = 261
    for line in lines[1:]:
        left, right = line.split(" ")
        if vocab[left + right] >= next_id:
            assert vocab[left + right] == next_id
            next_id += 1
    assert next_id == max(vocab.values()) + 1
    # Oracle: aprender's rule read literally (one pass per merge line), on real Python and on text
    # with multi-byte characters; the Rust and the Python encoders must both give its ids.
    loaded = HexByteTokenizer.load(hex_dir)
    python = HexByteTokenizer(loaded.vocab, loaded.merges, engine=False)
    assert loaded.engine == "tokenizers"
    merges = [tuple(line.split(" ")) for line in lines[1:]]
    for text in [sources[0][:2000], sources[1][:2000], "naïve café — 日本語 😀 \r\n\t"]:
        expected = naive_hex_encode(vocab, merges, text)
        assert loaded.encode(text) == python.encode(text) == expected
    assert loaded.encode_batch(sources) == python.encode_batch(sources)
    # Save -> load -> save is byte-identical.
    again = hex_dir.parent / "again"
    loaded.save(again)
    assert (again / "vocab.json").read_bytes() == (hex_dir / "vocab.json").read_bytes()
    assert (again / "merges.txt").read_bytes() == (hex_dir / "merges.txt").read_bytes()


@pytest.mark.falsifier("FALSIFY-BPE-HEX-COMPAT-001")
def test_hex_training_ties_break_by_smallest_id_pair_golden(
    tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant_hex_training_defect(falsifier_control, monkeypatch)
    # "ab" and "cd" both occur twice: (0x61,0x62) has the smaller ids, so it is merged first.
    train_hex_bpe(["abab", "cdcd"], vocab_size=300, min_frequency=1).save(tmp_path)
    assert (tmp_path / "merges.txt").read_bytes() == b"#version: 0.2\n61 62\n63 64\n6162 6162\n6364 6364\n"
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert [vocab[t] for t in ("6162", "6364", "61626162", "63646364")] == [261, 262, 263, 264]
    assert HexByteTokenizer.load(tmp_path).encode("ababcd") == [263, 262]


text_strategy = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@pytest.fixture
def hex_roundtrip_subject(
    hex_tok: HexByteTokenizer, tmp_path: Path, falsifier_control: Any
) -> HexByteTokenizer:
    """The trained hex tokenizer; under `hex-bytes-missing`, its files written without the keys of
    bytes 0xd0..0xff (208 of 256 keys: still hex-byte by count, so every loader takes it)."""
    if falsifier_control is None:
        return hex_tok
    if falsifier_control != "hex-bytes-missing":
        pytest.skip("a byte-level defect; test_roundtrip_byte_level catches it")
    dropped = {HEX_BYTE_KEYS[b] for b in range(0xD0, 0x100)}
    vocab = {
        t: i
        for t, i in hex_tok.vocab.items()
        if not any(t[j : j + 2] in dropped for j in range(0, len(t), 2))
    }
    merges = [(a, b) for a, b in hex_tok.merges if a + b in vocab]
    HexByteTokenizer(vocab, merges).save(tmp_path / "hex")
    return HexByteTokenizer.load(tmp_path / "hex")


@pytest.fixture
def byte_level_roundtrip_subject(byte_level_dir: Path, byte_level_tok: Any, falsifier_control: Any) -> Any:
    """The trained byte-level tokenizer; under `no-byte-level-mapping`, a fresh load of it whose
    pre-tokenizer has lost its ByteLevel step, so text is looked up as raw characters."""
    if falsifier_control is None:
        return byte_level_tok
    if falsifier_control != "no-byte-level-mapping":
        pytest.skip("a hex-byte defect; test_roundtrip_hex catches it")
    tok: Any = load_tokenizer(byte_level_dir)
    tok.tokenizer.pre_tokenizer = None  # its only step was ByteLevel
    return tok


@pytest.mark.falsifier("FALSIFY-BPE-ROUNDTRIP-001")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy)
def test_roundtrip_hex(hex_roundtrip_subject: HexByteTokenizer, text: str) -> None:
    tok = hex_roundtrip_subject
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.falsifier("FALSIFY-BPE-ROUNDTRIP-001")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy)
def test_roundtrip_byte_level(byte_level_roundtrip_subject: Any, text: str) -> None:
    # No normalizer in this vocab, so the text comes back exactly (Qwen2's NFC is tested with Qwen2).
    tok = byte_level_roundtrip_subject
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(unicodedata.normalize("NFD", text))) == unicodedata.normalize("NFD", text)
