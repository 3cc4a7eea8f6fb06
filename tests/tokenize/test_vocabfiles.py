"""The one reader of merges.txt and of tiktoken ranks, as both vocab formats and detection use it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shiptwo.errors import FormatError
from shiptwo.tokenize import bytes_to_unicode, detect_format, load_tokenizer
from shiptwo.tokenize.vocabfiles import merges_text, read_merges, read_tiktoken_ranks


def test_merges_round_trip_with_the_header(tmp_path: Path) -> None:
    merges = [("61", "62"), ("6162", "63")]
    path = tmp_path / "merges.txt"
    path.write_text(merges_text(merges))
    assert path.read_bytes() == b"#version: 0.2\n61 62\n6162 63\n"
    vocab = {t: i for i, t in enumerate(["61", "62", "63", "6162", "616263"])}
    assert read_merges(path, vocab, comment="#") == merges


def test_comment_lines_by_format(tmp_path: Path) -> None:
    # In a byte-level vocab `#` is a token: a merge line may start with it. Only the header is skipped.
    vocab = {"#": 0, "a": 1, "##": 2, "#a": 3}
    path = tmp_path / "merges.txt"
    path.write_bytes(b"#version: 0.2\r\n# #\r\n\r\n# a\r\n")  # CRLF line ends too
    assert read_merges(path, vocab, comment="#version") == [("#", "#"), ("#", "a")]
    assert read_merges(path, vocab, comment="#") == []  # aprender's hex-byte rule: every `#` line


def test_merge_refusals_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "merges.txt"
    vocab = {"a": 0, "b": 1, "ab": 2}
    for text, message in [
        ("a b c\n", r"merges\.txt:1: expected 'left right', got 'a b c'"),
        ("a \n", r"merges\.txt:1: expected 'left right', got 'a '"),
        (
            "#version: 0.2\nb a\n",
            r"merges\.txt:2: merge 'b' \+ 'a': 'ba' is not in vocab\.json \(orphan merge\)",
        ),
    ]:
        path.write_text(text)
        with pytest.raises(FormatError, match=message):
            read_merges(path, vocab, comment="#version")
    path.unlink()
    with pytest.raises(FormatError, match="merges.txt not found beside vocab.json"):
        read_merges(path, vocab, comment="#")


def test_a_byte_level_pair_with_a_hash_merge_loads(tmp_path: Path) -> None:
    table = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(table[b] for b in range(256))}
    vocab["##"] = 256
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text(merges_text([("#", "#")]))
    tok = load_tokenizer(tmp_path / "vocab.json", pretokenizer="gpt2")
    assert tok.encode("##") == [256]


def test_detection_and_loading_parse_tiktoken_alike(tmp_path: Path) -> None:
    path = tmp_path / "x.tiktoken"
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    path.write_text("\n".join([*lines, "bm90LWEtcmFuaw== x"]) + "\n")
    for read in (read_tiktoken_ranks, detect_format):
        with pytest.raises(
            FormatError, match=r"x\.tiktoken:257: not a tiktoken ranks line 'base64\(token\) rank'"
        ):
            read(path)
    path.write_text("\n".join([*lines, lines[0].split()[0] + " 256"]) + "\n")
    for read in (read_tiktoken_ranks, detect_format):
        with pytest.raises(FormatError, match=r"x\.tiktoken:257: token b'\\x00' appears twice"):
            read(path)
