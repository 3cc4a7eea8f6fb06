"""`--format json` of `tokenize train` and `tokenize decode`: what a script reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.tokenize.hexbpe import HexByteTokenizer


@pytest.fixture
def trained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, object]]:
    corpus = tmp_path / "c.jsonl"
    lines = [json.dumps({"content": "def f(): pass\n"})] * 3 + ['{"text": "no content field"}']
    corpus.write_text("\n".join(lines) + "\n")
    argv = [
        "tokenize",
        "train",
        "--corpus",
        str(corpus),
        "--vocab-size",
        "270",
        "--output",
        str(tmp_path / "v"),
    ]
    assert main([*argv, "--on-bad-line", "skip", "--format", "json"]) == 0
    return tmp_path / "v", json.loads(capsys.readouterr().out)


def test_train_json(trained: tuple[Path, dict[str, object]]) -> None:
    out, doc = trained
    tok = HexByteTokenizer.load(out)
    assert doc == {
        "output": str(out),
        "files": [str(out / "vocab.json"), str(out / "merges.txt")],
        "vocab_size": 270,
        "merges": len(tok.merges),
        "documents": 3,
        "bad_lines": 1,
    }


def test_decode_json(trained: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = trained
    ids = HexByteTokenizer.load(out).encode("def f()\n")
    assert main(["tokenize", "decode", "--tokenizer", str(out), *map(str, ids), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"text": "def f()\n", "tokens": len(ids)}
    assert main(["tokenize", "decode", "--tokenizer", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "def f()\n"  # text stays the bare text
