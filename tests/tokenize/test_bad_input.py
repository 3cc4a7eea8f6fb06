"""Bad input to the tokenize commands and readers: one line of error naming the file, field and fix.

Each test runs the CLI (or the reader) on one kind of bad input and checks the message itself.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from shiptwo.cli import main as shiptwo_main
from shiptwo.errors import FormatError, UsageError
from shiptwo.shards import ShardReader, load_manifest
from shiptwo.shards.format import BadLine
from shiptwo.tokenize._testing import write_jsonl
from shiptwo.tokenize.corpus import encode_corpus
from shiptwo.tokenize.hexbpe import train_hex_bpe
from shiptwo.tokenize.jsonl import read_documents

# A lone surrogate is a legal JSON escape but not Unicode text: no UTF-8 spelling exists.
SURROGATE_LINE = '{"content": "ok \\ud800 x"}\n'


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vocab")
    train_hex_bpe(["def f(x):\n    return x\n"] * 3, vocab_size=280).save(d)
    return d


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert shiptwo_main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


# -- 1. a shard path that is a file ------------------------------------------------------------


def test_shard_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["x"])
    for open_it in (load_manifest, lambda p: ShardReader(p, seq_len=4)):
        with pytest.raises(
            FormatError, match=r"c\.jsonl: not a directory; pass the shard dir holding manifest\.json"
        ):
            open_it(corpus)


def test_unreadable_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").mkdir()  # reading a directory raises IsADirectoryError
    with pytest.raises(
        FormatError, match=r"manifest\.json: cannot be read \(Is a directory\); check the path"
    ):
        load_manifest(tmp_path)


# -- 7. shard paths in a manifest must stay inside the shard dir ---------------------------------


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../outside.bin", "sub/shard-00000.bin", "..", "", "a\\b.bin"]
)
def test_manifest_shard_file_must_be_a_plain_name(tmp_path: Path, name: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\x00" * 8)
    shards = tmp_path / "shards"
    (shards / "sub").mkdir(parents=True)
    (shards / "sub" / "shard-00000.bin").write_bytes(b"\x00" * 8)
    manifest = {
        "schema": "pretokenize-bin-v1",
        "vocab_size": 10,
        "eos_policy": "none",
        "shard_count": 1,
        "total_tokens": 2,
        "total_documents": 1,
        "content_field": "content",
        "shards": [{"file": name}],
    }
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        FormatError,
        match=rf"shards\[0\]\.file {re.escape(repr(name))} is not a plain "
        r"file name inside the shard dir \(no directories, '\.\.' or absolute paths\)",
    ):
        load_manifest(shards)


# -- 2. --output that is an existing file ----------------------------------------------------------


def test_encode_corpus_output_that_is_a_file(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["def f(x):"])
    err = _error(
        capsys,
        [
            "tokenize",
            "encode-corpus",
            "--tokenizer",
            str(vocab),
            "--corpus",
            str(corpus),
            "--output",
            str(corpus),
            "--no-progress",
        ],
        2,
    )
    assert f"--output {corpus}: exists and is not a directory; choose a new or empty directory" in err


def test_train_output_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["abab"])
    err = _error(
        capsys,
        ["tokenize", "train", "--corpus", str(corpus), "--vocab-size", "270", "--output", str(corpus)],
        2,
    )
    assert f"--output {corpus}: exists and is not a directory; choose a directory for vocab.json" in err
    # The library says the same when called directly.
    with pytest.raises(
        UsageError, match=r"c\.jsonl: exists and is not a directory; .*choose a new or existing directory"
    ):
        train_hex_bpe(["abab"], vocab_size=270).save(corpus)


# -- 3. lone surrogates and text that is not UTF-8 ---------------------------------------------------


def test_encode_corpus_lone_surrogate_is_a_bad_line(tmp_path: Path, vocab: Path) -> None:
    corpus = tmp_path / "s.jsonl"
    corpus.write_text('{"content": "fine"}\n' + SURROGATE_LINE)
    with pytest.raises(
        FormatError,
        match=r"s\.jsonl:2: field 'content': character 3 is a lone surrogate '\\ud800', "
        r"not valid Unicode text; fix the line or pass --on-bad-line skip",
    ):
        encode_corpus(vocab, [corpus], tmp_path / "a", progress=False)
    m = encode_corpus(vocab, [corpus], tmp_path / "b", on_bad_line="skip", progress=False)
    assert m["total_documents"] == 1 and m["bad_lines"]["count"] == 1
    assert m["bad_lines"]["first"][0].endswith(
        "s.jsonl:2: field 'content': character 3 is a lone surrogate '\\ud800', not valid Unicode text"
    )


def test_train_lone_surrogate_is_a_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "s.jsonl"
    corpus.write_text('{"content": "abab abab"}\n' + SURROGATE_LINE)
    argv = [
        "tokenize",
        "train",
        "--corpus",
        str(corpus),
        "--vocab-size",
        "270",
        "--output",
        str(tmp_path / "t"),
    ]
    err = _error(capsys, argv, 1)
    assert (
        "s.jsonl:2: field 'content': character 3 is a lone surrogate" in err and "--on-bad-line skip" in err
    )
    assert shiptwo_main([*argv, "--on-bad-line", "skip"]) == 0
    assert "from 1 documents, 1 bad lines skipped" in capsys.readouterr().out


def test_encode_rejects_text_that_is_not_unicode(
    vocab: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Linux gives Python for the argument $'\xff\xfe' (undecodable bytes -> lone surrogates).
    arg = b"\xff\xfe".decode("utf-8", errors="surrogateescape")
    err = _error(capsys, ["tokenize", "encode", "--tokenizer", str(vocab), arg], 2)
    assert "text argument: character 0 is a lone surrogate '\\udcff'" in err and "pass UTF-8 text" in err

    monkeypatch.setattr("sys.stdin", type("Stdin", (), {"buffer": io.BytesIO(b"ok\xff\xfe")}))
    err = _error(capsys, ["tokenize", "encode", "--tokenizer", str(vocab)], 2)
    assert "stdin: not UTF-8 (byte 0xff at byte 2); pass UTF-8 text" in err


# -- 4. a corpus that is not UTF-8 -------------------------------------------------------------------


def test_train_non_utf8_corpus_names_file_and_line(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "latin1.jsonl"
    corpus.write_bytes('{"content": "abab"}\n{"content": "café"}\n'.encode("latin-1"))
    argv = [
        "tokenize",
        "train",
        "--corpus",
        str(corpus),
        "--vocab-size",
        "270",
        "--output",
        str(tmp_path / "t"),
    ]
    err = _error(capsys, argv, 1)
    assert "latin1.jsonl:2: not UTF-8 (byte 0xe9 at byte 16); re-encode the file as UTF-8" in err
    # encode-corpus calls the same line bad in the same words.
    with pytest.raises(FormatError, match=r"latin1\.jsonl:2: not UTF-8 \(byte 0xe9 at byte 16\)"):
        encode_corpus(vocab, [corpus], tmp_path / "o", progress=False)


def test_read_documents_yields_texts_and_bad_lines(tmp_path: Path) -> None:
    corpus = tmp_path / "m.jsonl"
    corpus.write_bytes(
        b'\xef\xbb\xbf{"content": "bom ok"}\n\n{"content": "caf\xe9"}\n' + SURROGATE_LINE.encode()
    )
    items = list(read_documents([corpus]))
    assert items[0] == "bom ok"  # a byte-order mark is tolerated at the start of a file
    assert [(b.line, b.reason.split(" (")[0]) for b in items[1:] if isinstance(b, BadLine)] == [
        (3, "not UTF-8"),
        (4, "field 'content': character 3 is a lone surrogate '\\ud800', not valid Unicode text"),
    ]


# -- 5. decode input that is not ids -------------------------------------------------------------


def test_decode_names_the_bad_token(
    vocab: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def stdin(data: bytes) -> None:
        monkeypatch.setattr("sys.stdin", type("Stdin", (), {"buffer": io.BytesIO(data)}))

    stdin(b"1 2 x\n")
    err = _error(capsys, ["tokenize", "decode", "--tokenizer", str(vocab)], 2)
    assert "stdin: token 3 is 'x', not an integer id; pass whitespace-separated ids" in err
    stdin(b"1 2 99999")
    err = _error(capsys, ["tokenize", "decode", "--tokenizer", str(vocab)], 2)
    assert f"id 99999 (token 3) is outside the vocab of {vocab} (0..279)" in err
    stdin(b"[1, true]")
    err = _error(capsys, ["tokenize", "decode", "--tokenizer", str(vocab)], 2)
    assert "stdin: the JSON list holds something other than integer ids" in err
    stdin(b"[1, 2")
    err = _error(capsys, ["tokenize", "decode", "--tokenizer", str(vocab)], 2)
    assert "stdin: not a JSON list of ids" in err
    # What `encode --format json` prints decodes back.
    stdin(json.dumps([5 + ord("a"), 5 + ord("b")]).encode())
    assert shiptwo_main(["tokenize", "decode", "--tokenizer", str(vocab)]) == 0
    assert capsys.readouterr().out == "ab"


# -- 6. the output dir: only own temp files deleted, foreign files refused without --force --------------


def test_encode_corpus_keeps_foreign_files_and_refuses_a_foreign_dir(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["def f(x):"] * 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".notes.tmp").write_text("mine")
    (out / "README").write_text("mine")
    argv = [
        "tokenize",
        "encode-corpus",
        "--tokenizer",
        str(vocab),
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--no-progress",
    ]
    err = _error(capsys, argv, 2)
    assert (
        f"--output {out}: not empty (2 entries, e.g. '.notes.tmp') and holds no encode-corpus run "
        "(progress.json or manifest.json); choose a new or empty directory, or pass --force"
    ) in err
    assert not (out / "manifest.json").exists()
    # --force writes beside them; the user's files, hidden .tmp included, survive.
    own = [
        out / ".shard-00000.bin.tmp",  # as shards were written before they went through shiptwo.fileio
        out / ".shard-00001.bin.k3x_9q.tmp",
        out / ".manifest.json.ab_12.tmp",
        out / ".progress.json.x9.tmp",
    ]
    for p in own:
        p.write_bytes(b"half")
    assert shiptwo_main([*argv, "--force"]) == 0
    assert (out / ".notes.tmp").read_text() == "mine" and (out / "README").read_text() == "mine"
    assert (out / "manifest.json").is_file() and not any(p.exists() for p in own)


def test_encode_corpus_help_documents_output_states(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        shiptwo_main(["tokenize", "encode-corpus", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a dir holding other files is refused unless --force" in text
    assert "only encode-corpus's own .shard-*.tmp / .*.json.*.tmp temp files are ever deleted" in text


# -- 8. training with nothing to train on, or a nonsense --min-frequency --------------------------------


def test_train_refuses_an_empty_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    argv = ["tokenize", "train", "--vocab-size", "270", "--output", str(tmp_path / "t"), "--corpus"]
    err = _error(capsys, [*argv, str(empty)], 2)
    assert (
        f"--corpus {empty}: no documents; there is nothing to train on: check the files and --content-field"
        in err
    )
    blank = write_jsonl(tmp_path / "blank.jsonl", ["", ""])
    err = _error(capsys, [*argv, str(blank)], 2)
    assert "2 documents, all empty; there is nothing to train on" in err
    wrong_field = write_jsonl(tmp_path / "text.jsonl", ["abab"], field="text")
    err = _error(capsys, [*argv, str(wrong_field), "--on-bad-line", "skip"], 2)
    assert "no documents (1 bad lines skipped, first: " in err and "field 'content' is missing" in err
    assert not (tmp_path / "t").exists()


def test_train_refuses_min_frequency_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["abab"])
    err = _error(
        capsys,
        [
            "tokenize",
            "train",
            "--corpus",
            str(corpus),
            "--vocab-size",
            "270",
            "--output",
            str(tmp_path / "t"),
            "--min-frequency",
            "-3",
        ],
        2,
    )
    assert "--min-frequency must be >= 1 (a pair must occur at least once to merge), got -3" in err
    with pytest.raises(UsageError, match="min_frequency must be >= 1 .*, got 0"):
        train_hex_bpe(["abab"], vocab_size=270, min_frequency=0)


# -- 9. the audit of a vocab with no unk id says so --------------------------------------------------


def test_audit_of_a_vocab_without_unk_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shiptwo.tokenize._testing import train_byte_level

    texts = ["def f(x):\n    return x\n", "héllo wörld"] * 3
    tok = train_byte_level(texts, tmp_path / "bl", vocab_size=300)
    corpus = write_jsonl(tmp_path / "c.jsonl", texts)
    assert (
        shiptwo_main(
            [
                "tokenize",
                "encode-corpus",
                "--tokenizer",
                str(tok / "tokenizer.json"),
                "--corpus",
                str(corpus),
                "--output",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "audit: no unk token: always 0; 256 of 256 bytes have a token of their own," in out
    audit = json.loads((tmp_path / "o" / "manifest.json").read_text())["audit"]
    assert audit["unk_token_id"] is None and audit["unk_ratio"] == 0.0 and audit["byte_tokens"] == 256


def test_audit_of_a_hex_vocab_keeps_the_unk_ratio(tmp_path: Path, vocab: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["def f(x):"])
    audit = encode_corpus(vocab, [corpus], tmp_path / "o", progress=False)["audit"]
    assert audit["unk_token_id"] == 0 and audit["byte_tokens"] == 256
    assert audit["unk_note"] == "ids equal to unk_token_id 0 (bytes or text the vocab cannot spell)"
