"""encode-corpus on hostile corpora (issue 14): every bad line skipped and counted under skip, a
resumed run passes them, a huge line is read past, a huge document is encoded in pieces that give
exactly the ids of the whole, and the encoder never sees more than its piece budget at once."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shiptwo.cli import main as shiptwo_main
from shiptwo.tokenize import corpus, load_tokenizer
from shiptwo.tokenize._testing import python_sources, train_byte_level
from shiptwo.tokenize.corpus import _cut_finder, _cuts, encode_corpus
from shiptwo.tokenize.hexbpe import train_hex_bpe

QWEN2 = Path.home() / ".cache" / "shiptwo" / "qwen2-tokenizer" / "tokenizer.json"
GOOD = '{"content": "def f(x):\\n    return x\\n"}\n'
# One line of every kind the issue found, each after a good line: (line, reason in the report).
BAD_LINES = [
    (
        "[" * 100_000 + "]" * 100_000 + "\n",
        "invalid JSON: arrays/objects nest more than 100 deep at column 101",
    ),
    ('{"content": "x", "n": ' + "9" * 5000 + "}\n", "invalid JSON: an integer of 5,000 digits"),
    ('{"content": "caf\xe9"}\n', "not UTF-8 (byte 0xe9 at byte 16)"),
    ("[1, 2]\n", "not a JSON object (list)"),
    ('{"content": "a", "content": "b"}\n', "invalid JSON: key 'content' appears twice"),
    (
        '{"content": "' + "y" * 400_000 + '"}\n',
        "a line of 400,016 bytes, longer than --max-document-bytes 300,000",
    ),
    ('{"content": "ok \\ud800"}\n', "lone surrogate"),
]


def _stdlib_text(chars: int) -> str:
    text = "".join(src for _, src in python_sources(400, max_bytes=200_000))
    return (text * (chars // len(text) + 1))[:chars]


@pytest.fixture(scope="module")
def hex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hex")
    train_hex_bpe([_stdlib_text(100_000)], vocab_size=600).save(d)
    return d


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_byte_level([_stdlib_text(200_000)], tmp_path_factory.mktemp("gpt2"), vocab_size=800)


def _corpus(tmp_path: Path) -> Path:
    lines = list(itertools.chain.from_iterable((GOOD, line) for line, _ in BAD_LINES)) + [GOOD]
    # The bad UTF-8 line needs a raw 0xe9 byte: written as latin-1 there.
    data = b"".join(line.encode("latin-1") if "caf" in line else line.encode("utf-8") for line in lines)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(data)
    return path


def test_every_bad_line_is_skipped_counted_and_named(tmp_path: Path, hex_dir: Path) -> None:
    path = _corpus(tmp_path)
    m = encode_corpus(
        hex_dir, [path], tmp_path / "out", on_bad_line="skip", max_document_bytes=300_000, progress=False
    )
    assert m["total_documents"] == len(BAD_LINES) + 1
    assert m["bad_lines"]["count"] == len(BAD_LINES)
    for k, (first, (_, reason)) in enumerate(zip(m["bad_lines"]["first"], BAD_LINES, strict=True)):
        assert first.startswith(f"{path}:{2 * k + 2}: ") and reason in first, first


@pytest.mark.parametrize("k", range(len(BAD_LINES)), ids=lambda k: BAD_LINES[k][1].split(" (")[0][:30])
def test_each_bad_line_stops_the_run_with_one_line(
    tmp_path: Path, hex_dir: Path, capsys: pytest.CaptureFixture[str], k: int
) -> None:
    line, reason = BAD_LINES[k]
    path = tmp_path / "c.jsonl"
    path.write_bytes(GOOD.encode() + (line.encode("latin-1") if "caf" in line else line.encode()))
    argv = ["tokenize", "encode-corpus", "--tokenizer", str(hex_dir), "--corpus", str(path)]
    argv += ["--output", str(tmp_path / "out"), "--max-document-bytes", "300000", "--no-progress"]
    assert shiptwo_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:2: ") and reason in err, err
    assert err.endswith("; fix the line or pass --on-bad-line skip\n") and err.count("\n") == 1


def test_a_resumed_run_passes_the_bad_lines_and_writes_the_same_bytes(
    tmp_path: Path, hex_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _corpus(tmp_path)
    options: dict[str, Any] = {
        "on_bad_line": "skip",
        "max_document_bytes": 300_000,
        "shard_tokens": 8,
        "batch_chars": 1,
        "progress": False,
    }
    whole = encode_corpus(hex_dir, [path], tmp_path / "whole", **options)
    assert whole["shard_count"] >= 4
    real_write = corpus._write_shard
    calls = itertools.count()

    def dies_on_the_third(out: Path, ids: np.ndarray) -> str:
        if next(calls) == 2:
            raise KeyboardInterrupt  # killed between shards
        return real_write(out, ids)

    monkeypatch.setattr(corpus, "_write_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(hex_dir, [path], tmp_path / "resumed", **options)
    progress = json.loads((tmp_path / "resumed" / "progress.json").read_text())
    assert progress["bad_line_count"] >= 1  # the interruption came after some bad line
    monkeypatch.setattr(corpus, "_write_shard", real_write)
    resumed = encode_corpus(hex_dir, [path], tmp_path / "resumed", resume=True, **options)
    assert resumed["shards"] == whole["shards"]
    assert (
        resumed["bad_lines"] == whole["bad_lines"] and resumed["total_documents"] == whole["total_documents"]
    )


def test_a_line_longer_than_the_limit_is_read_past_in_pieces(tmp_path: Path, hex_dir: Path) -> None:
    # 3 MB with no newline, then a good line: only the good line becomes a document.
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"content": "' + b"z" * 3_000_000 + b'"}\n' + GOOD.encode() + b'{"content": "end"}')
    m = encode_corpus(
        hex_dir, [path], tmp_path / "out", on_bad_line="skip", max_document_bytes=1000, progress=False
    )
    assert m["total_documents"] == 2 and m["bad_lines"]["first"] == [
        f"{path}:1: a line of 3,000,016 bytes, longer than --max-document-bytes 1,000; split the "
        "document or raise the limit"
    ]


def _tokenizers(hex_dir: Path, gpt2_dir: Path) -> list[tuple[str, Any]]:
    found = [
        ("hex-byte (tokenizers engine)", load_tokenizer(hex_dir)),
        ("gpt2 tokenizer.json", load_tokenizer(gpt2_dir / "tokenizer.json")),
        ("gpt2 vocab.json+merges.txt", load_tokenizer(gpt2_dir / "vocab.json")),
    ]
    python_engine = load_tokenizer(hex_dir)
    python_engine._engine_checked = True  # the Python encoder: the other half of the hex-byte rule
    found.append(("hex-byte (python engine)", python_engine))
    if QWEN2.is_file():
        found.append(("qwen2", load_tokenizer(QWEN2)))
    return found


def test_pieces_encode_to_the_ids_of_the_whole_text(hex_dir: Path, gpt2_dir: Path) -> None:
    # Many cuts in a text with code, prose, digits, CRLF, tabs and non-ASCII: ids must not change.
    text = _stdlib_text(150_000) + "Ünïcödé wörds, 日本語 123\r\n\tx  y\n" * 300 + _stdlib_text(20_000)
    for name, tok in _tokenizers(hex_dir, gpt2_dir):
        find = _cut_finder(tok)
        assert find is not None, name
        cuts = _cuts(text, find, piece_chars=2000)
        assert len(cuts) > 50, name
        pieces = tok.encode_batch([text[a:b] for a, b in itertools.pairwise(cuts)])
        assert list(itertools.chain.from_iterable(pieces)) == tok.encode(text), name


def test_a_few_mb_document_gives_the_ids_of_its_unsplit_encoding(
    tmp_path: Path, hex_dir: Path, gpt2_dir: Path
) -> None:
    text = _stdlib_text(3_000_000)  # three pieces of at most PIECE_CHARS
    cuts = _cuts(text, _cut_finder(load_tokenizer(gpt2_dir / "tokenizer.json")))  # type: ignore[arg-type]
    assert len(cuts) >= 4 and max(b - a for a, b in itertools.pairwise(cuts)) <= corpus.PIECE_CHARS
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"content": text}) + "\n")
    for tokenizer in (hex_dir, gpt2_dir / "tokenizer.json"):
        out = tmp_path / hashlib.sha256(str(tokenizer).encode()).hexdigest()[:8]
        encode_corpus(tokenizer, [path], out, eos_policy="none", max_unk_ratio=None, progress=False)
        ids = np.fromfile(out / "shard-00000.bin", dtype="<u4")
        assert ids.tolist() == load_tokenizer(tokenizer).encode(text)


def test_the_encoder_never_sees_more_than_its_budget(
    tmp_path: Path, gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "PIECE_CHARS", 4096)
    monkeypatch.setattr(corpus, "GROUP_CHARS", 16384)
    tok = load_tokenizer(gpt2_dir / "tokenizer.json")
    seen: list[int] = []
    real = tok.encode_batch

    def spy(texts: list[str]) -> list[list[int]]:
        seen.append(sum(map(len, texts)))
        return real(texts)

    monkeypatch.setattr(tok, "encode_batch", spy)
    docs = [_stdlib_text(300_000), "short", _stdlib_text(50_000)]
    flat, lengths = corpus._encode_flat(tok, docs)
    find = _cut_finder(tok)
    assert find is not None
    longest = max(b - a for d in docs for a, b in itertools.pairwise(_cuts(d, find, 4096)))
    assert longest < 30_000  # a piece outgrows the budget only where no cut exists nearby
    assert max(seen) < 16384 + longest and len(seen) > 15
    assert lengths.tolist() == [len(real([d])[0]) for d in docs]
    assert flat.tolist() == list(itertools.chain.from_iterable(real(docs)))


def test_an_unknown_pretokenizer_is_never_cut(tmp_path: Path, gpt2_dir: Path) -> None:
    doc = json.loads((gpt2_dir / "tokenizer.json").read_text())
    doc["pre_tokenizer"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": False,
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    assert _cut_finder(load_tokenizer(tmp_path / "tokenizer.json")) is None
    doc["pre_tokenizer"]["use_regex"] = True
    doc["pre_tokenizer"]["add_prefix_space"] = True  # a prefix space per piece would change ids
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    assert _cut_finder(load_tokenizer(tmp_path / "tokenizer.json")) is None


def test_a_max_document_bytes_below_one_is_a_usage_error(
    tmp_path: Path, hex_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(GOOD)
    argv = ["tokenize", "encode-corpus", "--tokenizer", str(hex_dir), "--corpus", str(path)]
    assert shiptwo_main([*argv, "--output", str(tmp_path / "out"), "--max-document-bytes", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-document-bytes must be >= 1, got 0\n"
