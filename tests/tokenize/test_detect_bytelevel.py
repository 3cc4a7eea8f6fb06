"""Format detection and the byte-level load paths: every refusal names the file and the fix."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shiptwo.cli import main as shiptwo_main
from shiptwo.errors import FormatError, UsageError
from shiptwo.tokenize import VocabFormat, VocabLayout, bytes_to_unicode, detect_format, load_tokenizer
from shiptwo.tokenize._testing import python_sources, train_byte_level
from shiptwo.tokenize.bytelevel import load_vocab_merges, merges_from_ranks
from shiptwo.tokenize.vocabfiles import read_tiktoken_ranks


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [t for _, t in python_sources(12, max_bytes=8_000)]


@pytest.fixture(scope="module")
def bl_dir(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return train_byte_level(texts, tmp_path_factory.mktemp("bl"), vocab_size=600)


def test_bytes_to_unicode_is_gpt2s_table() -> None:
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert (table[ord(" ")], table[ord("\n")], table[ord("A")]) == ("Ġ", "Ċ", "A")


def test_detect_reports_layouts(bl_dir: Path) -> None:
    assert detect_format(bl_dir).layout is VocabLayout.TOKENIZER_JSON
    report = detect_format(bl_dir / "vocab.json")
    assert report.layout is VocabLayout.VOCAB_MERGES and report.format is VocabFormat.BYTE_LEVEL
    assert report.files == (bl_dir / "vocab.json", bl_dir / "merges.txt")
    assert detect_format(bl_dir / "merges.txt").path == bl_dir / "vocab.json"


def test_detect_refusals_name_the_file(tmp_path: Path, bl_dir: Path) -> None:
    with pytest.raises(FormatError, match=f"{tmp_path}: no tokenizer.json, vocab.json or single"):
        detect_format(tmp_path)
    with pytest.raises(FormatError, match="no such file or directory"):
        detect_format(tmp_path / "nope.json")
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="vocab.json: not an object of token -> integer id"):
        detect_format(tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(
        FormatError, match=r"vocab.json: not valid JSON \(vocab file\): invalid JSON at line 1 column 2"
    ):
        detect_format(tmp_path / "vocab.json")
    vocab = json.loads((bl_dir / "vocab.json").read_text())
    vocab["▁the"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(
        FormatError, match=r"1 keys use characters outside the byte-level alphabet \(first: '▁the'\)"
    ):
        detect_format(tmp_path / "vocab.json")
    doc = json.loads((bl_dir / "tokenizer.json").read_text())
    doc["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="pre_tokenizer has no ByteLevel step"):
        detect_format(tmp_path / "tokenizer.json")


def test_pair_without_pretokenizer_is_refused_not_whitespace_split(tmp_path: Path, bl_dir: Path) -> None:
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((bl_dir / name).read_bytes())
    with pytest.raises(FormatError, match="never falls back to a whitespace split"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    with pytest.raises(FormatError, match="tokenizer_class 'LlamaTokenizer' has no known pre-tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(UsageError, match="unknown pre-tokenizer 'bert'"):
        load_vocab_merges(tmp_path / "vocab.json", pretokenizer="bert")


def test_pair_and_tokenizer_json_agree_on_a_gpt2_style_vocab(bl_dir: Path, texts: list[str]) -> None:
    a = load_tokenizer(bl_dir)
    b = load_tokenizer(bl_dir / "vocab.json")  # gpt2 from tokenizer_config.json
    assert a.encode_batch(texts) == b.encode_batch(texts)
    assert a.eos_id == b.eos_id == 0 and a.unk_id is None


def test_tiktoken_ranks_recover_the_trained_merges(tmp_path: Path, bl_dir: Path, texts: list[str]) -> None:
    # Oracle: a BPE trained by Hugging Face; its ids (minus the one special) are tiktoken ranks.
    vocab = json.loads((bl_dir / "vocab.json").read_text())
    inverse = {c: b for b, c in bytes_to_unicode().items()}
    lines = [
        f"{base64.b64encode(bytes(inverse[c] for c in tok)).decode()} {i - 1}\n"
        for tok, i in sorted(vocab.items(), key=lambda kv: kv[1])
        if i > 0
    ]
    (tmp_path / "small.tiktoken").write_text("".join(lines))
    assert detect_format(tmp_path / "small.tiktoken").layout is VocabLayout.TIKTOKEN
    with pytest.raises(FormatError, match="does not say its pre-tokenizer"):
        load_tokenizer(tmp_path / "small.tiktoken")
    tik = load_tokenizer(tmp_path / "small.tiktoken", pretokenizer="gpt2")
    ref = load_tokenizer(bl_dir)
    for text in texts[:4]:
        assert [i + 1 for i in tik.encode(text)] == ref.encode(text)


def test_tiktoken_refusals(tmp_path: Path) -> None:
    f = tmp_path / "x.tiktoken"
    f.write_text("IQ== 0\nnot-base64! 1\n")
    with pytest.raises(FormatError, match=r"x.tiktoken:2: not a tiktoken ranks line 'base64\(token\) rank'"):
        read_tiktoken_ranks(f)
    f.write_text("IQ== 0\nIQ== 1\n")
    with pytest.raises(FormatError, match="appears twice"):
        read_tiktoken_ranks(f)
    f.write_text("IQ== 0\nIg== 5\n")
    with pytest.raises(FormatError, match=r"ranks are not exactly 0..1"):
        read_tiktoken_ranks(f)
    with pytest.raises(FormatError, match=r"b'abc' \(rank 3\) is not one merge of lower-ranked tokens"):
        merges_from_ranks({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


def test_cli_detect_text_json_and_refusal(
    bl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shiptwo_main(["tokenize", "detect", str(bl_dir)]) == 0
    assert "byte-level (tokenizer.json)" in capsys.readouterr().out
    assert shiptwo_main(["tokenize", "detect", str(bl_dir / "vocab.json"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "byte-level"
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}))
    assert shiptwo_main(["tokenize", "detect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown vocab format" in err and err.count("\n") == 1


def test_cli_encode_decode(bl_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        shiptwo_main(["tokenize", "encode", "--tokenizer", str(bl_dir), "--format", "json", "def f(x):"]) == 0
    )
    ids = json.loads(capsys.readouterr().out)
    assert shiptwo_main(["tokenize", "decode", "--tokenizer", str(bl_dir), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "def f(x):"


def test_light_imports() -> None:
    code = (
        "import sys, shiptwo.tokenize, shiptwo.tokenize.cli, shiptwo.tokenize.qwen2;"
        "shiptwo.tokenize.qwen2.find_qwen2_tokenizer_dir();"
        "heavy = [m for m in ('tokenizers', 'numpy', 'torch', 'transformers') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
