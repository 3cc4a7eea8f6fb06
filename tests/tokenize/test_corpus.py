"""encode-corpus: bad lines, inputs, output-dir states, CLI messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiptwo.cli import main as shiptwo_main
from shiptwo.errors import FormatError, UsageError
from shiptwo.tokenize._testing import write_jsonl
from shiptwo.tokenize.corpus import encode_corpus
from shiptwo.tokenize.hexbpe import train_hex_bpe


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vocab")
    train_hex_bpe(["def f(x):\n    return x\n"] * 3, vocab_size=280).save(d)
    return d


BAD = (
    '{"content": "ok one"}\n'
    "{not json\n"
    "[1, 2]\n"
    '{"text": "no content field"}\n'
    '{"content": 42}\n'
    "\n"
    '{"content": "ok two"}\n'
)


def test_bad_line_error_names_file_and_line(tmp_path: Path, vocab: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(BAD)
    with pytest.raises(
        FormatError, match=r"bad.jsonl:2: invalid JSON .*; fix the line or pass --on-bad-line skip"
    ):
        encode_corpus(vocab, [corpus], tmp_path / "out", progress=False)


def test_bad_lines_skipped_are_counted_with_file_and_line(tmp_path: Path, vocab: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(BAD)
    m = encode_corpus(vocab, [corpus], tmp_path / "out", on_bad_line="skip", progress=False)
    assert m["total_documents"] == 2 and m["bad_lines"]["count"] == 4
    first = m["bad_lines"]["first"]
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in first] == ["2", "3", "4", "5"]
    assert "not a JSON object (list)" in first[1]
    assert "field 'content' is missing" in first[2] and "field 'content' is a int, not a string" in first[3]


def test_directories_and_content_field(tmp_path: Path, vocab: Path) -> None:
    write_jsonl(tmp_path / "in" / "b.jsonl", ["second"], field="text")
    write_jsonl(tmp_path / "in" / "sub" / "a.jsonl", ["first"], field="text")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    m = encode_corpus(
        vocab, [tmp_path / "in"], tmp_path / "out", content_field="text", eos_policy="none", progress=False
    )
    assert [Path(f["path"]).name for f in m["input_files"]] == ["b.jsonl", "a.jsonl"]  # sorted by path
    with pytest.raises(UsageError, match="directory holds no \\*.jsonl files"):
        encode_corpus(vocab, [tmp_path / "out"], tmp_path / "out2", progress=False)
    with pytest.raises(UsageError, match="no such corpus file or directory"):
        encode_corpus(vocab, [tmp_path / "missing.jsonl"], tmp_path / "out3", progress=False)


def test_output_dir_states(tmp_path: Path, vocab: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["def f(x):"] * 5)
    out = tmp_path / "out"
    first = encode_corpus(vocab, [corpus], out, shard_tokens=10, progress=False)
    with pytest.raises(UsageError, match=r"holds a finished shard set \(manifest.json\)"):
        encode_corpus(vocab, [corpus], out, progress=False)
    assert encode_corpus(vocab, [corpus], out, shard_tokens=10, resume=True, progress=False) == first
    with pytest.raises(UsageError, match=r"finished run used other settings \(shard_tokens\)"):
        encode_corpus(vocab, [corpus], out, shard_tokens=11, resume=True, progress=False)
    (out / "manifest.json").unlink()
    with pytest.raises(UsageError, match=r"holds \d+ shards but no progress.json"):
        encode_corpus(vocab, [corpus], out, progress=False)


def test_resume_refuses_other_settings(tmp_path: Path, vocab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shiptwo.tokenize import corpus as corpus_module

    corpus = write_jsonl(tmp_path / "c.jsonl", ["def f(x):"] * 5)
    out = tmp_path / "out"
    real = corpus_module._write_shard
    calls = []

    def dying(path: Path, ids: object) -> str:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, ids)  # type: ignore[arg-type]

    monkeypatch.setattr(corpus_module, "_write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(vocab, [corpus], out, shard_tokens=10, progress=False)
    monkeypatch.setattr(corpus_module, "_write_shard", real)
    with pytest.raises(UsageError, match=r"other settings \(eos_policy, shard_tokens\)"):
        encode_corpus(vocab, [corpus], out, shard_tokens=20, eos_policy="after", resume=True, progress=False)


def test_bad_options(tmp_path: Path, vocab: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["x"])
    for kwargs, message in [
        ({"eos_policy": "sometimes"}, "'sometimes' is not a valid EosPolicy"),
        ({"shard_tokens": 0}, "--shard-tokens must be >= 1"),
        ({"workers": 0}, "--workers must be >= 1"),
        ({"max_unk_ratio": 2.0}, r"--max-unk-ratio must be in \[0, 1\]"),
    ]:
        with pytest.raises(UsageError, match=message):
            encode_corpus(vocab, [corpus], tmp_path / "o", progress=False, **kwargs)  # type: ignore[arg-type]


def test_cli_reports_audit_and_json(tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", ["def f(x):\n    return x\n"] * 4)
    args = ["tokenize", "encode-corpus", "--tokenizer", str(vocab), "--corpus", str(corpus), "--no-progress"]
    assert shiptwo_main([*args, "--output", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert (
        "1 shards" in out
        and "4 documents" in out
        and "audit: unk 0.0000%" in out
        and "bits of log2(vocab) 8.13" in out
    )
    assert shiptwo_main([*args, "--output", str(tmp_path / "b"), "--format", "json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["schema"] == "pretokenize-bin-v1" and manifest["audit"]["top_tokens"][0]["count"] > 0
    assert shiptwo_main([*args, "--output", str(tmp_path / "c"), "--eos-policy", "maybe"]) == 2


def test_byte_level_worker_processes_match_in_process(tmp_path: Path) -> None:
    from shiptwo.tokenize._testing import python_sources, train_byte_level

    texts = [t for _, t in python_sources(10, max_bytes=5_000)]
    vocab_dir = train_byte_level(texts, tmp_path / "bl", vocab_size=400)
    corpus = write_jsonl(tmp_path / "c.jsonl", texts)
    one = encode_corpus(
        vocab_dir, [corpus], tmp_path / "w1", shard_tokens=2000, batch_chars=5_000, progress=False
    )
    two = encode_corpus(
        vocab_dir, [corpus], tmp_path / "w2", shard_tokens=2000, batch_chars=5_000, workers=2, progress=False
    )
    assert {k: v for k, v in one.items() if k != "elapsed_seconds"} == {
        k: v for k, v in two.items() if k != "elapsed_seconds"
    }
    for shard in one["shards"]:
        assert (tmp_path / "w1" / shard["file"]).read_bytes() == (
            tmp_path / "w2" / shard["file"]
        ).read_bytes()


def test_golden_shard_bytes(tmp_path: Path) -> None:
    # "abab" -> [263] and "cdcd" -> [264] with this vocab (see the hex tie-breaking golden test);
    # EOS "</s>" is id 2; `between` puts it before the second document only.
    train_hex_bpe(["abab", "cdcd"], vocab_size=300, min_frequency=1).save(tmp_path / "v")
    corpus = write_jsonl(tmp_path / "c.jsonl", ["abab", "cdcd"])
    encode_corpus(tmp_path / "v", [corpus], tmp_path / "between", progress=False)
    assert (tmp_path / "between" / "shard-00000.bin").read_bytes() == bytes.fromhex(
        "070100000200000008010000"
    )
    encode_corpus(
        tmp_path / "v", [corpus], tmp_path / "after", eos_policy="after", shard_tokens=2, progress=False
    )
    assert (tmp_path / "after" / "shard-00000.bin").read_bytes() == bytes.fromhex("0701000002000000")
    assert (tmp_path / "after" / "shard-00001.bin").read_bytes() == bytes.fromhex("0801000002000000")
