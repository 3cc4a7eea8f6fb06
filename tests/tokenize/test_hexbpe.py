"""Hex-byte BPE: trainer and encoder against naive readings of aprender's rules, file errors, CLI."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.cli import main as shiptwo_main
from shiptwo.errors import FormatError
from shiptwo.tokenize._testing import naive_hex_encode
from shiptwo.tokenize.hexbpe import HexByteTokenizer, train_hex_bpe


def naive_train(texts: list[str], vocab_size: int, min_frequency: int) -> list[tuple[str, str]]:
    """aprender's rule read literally: recount every pair, merge the most frequent, smallest ids on ties."""
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "<mask>"])}
    vocab.update({f"{b:02x}": 5 + b for b in range(256)})
    names = {i: t for t, i in vocab.items()}
    words = [[5 + b for b in t.encode()] for t in texts]
    merges = []
    while len(vocab) < vocab_size:
        counts: dict[tuple[int, int], int] = {}
        for w in words:
            for pair in itertools.pairwise(w):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        merged = names[best[0]] + names[best[1]]
        if merged not in vocab:
            vocab[merged] = len(vocab)
            names[vocab[merged]] = merged
        merges.append((names[best[0]], names[best[1]]))
        new = vocab[merged]
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


small_texts = st.lists(st.text(alphabet="ab c\né", max_size=40), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(texts=small_texts, min_frequency=st.sampled_from([1, 2]))
def test_trainer_matches_naive_rule(texts: list[str], min_frequency: int) -> None:
    assert train_hex_bpe(texts, vocab_size=300, min_frequency=min_frequency).merges == naive_train(
        texts, 300, min_frequency
    )


@settings(max_examples=60, deadline=None)
@given(texts=small_texts, probe=st.text(alphabet="ab c\né", max_size=60), seed=st.integers(0, 1000))
def test_both_encoders_match_one_pass_per_merge_even_with_shuffled_merges(
    texts: list[str], probe: str, seed: int
) -> None:
    trained = train_hex_bpe(texts, vocab_size=300, min_frequency=1)
    expected = naive_hex_encode(trained.vocab, trained.merges, probe)
    assert trained.engine == "tokenizers"  # trained merges are well ordered: the Rust BPE runs
    assert trained.encode(probe) == expected
    assert HexByteTokenizer(trained.vocab, trained.merges, engine=False).encode(probe) == expected
    merges = list(trained.merges)
    random.Random(seed).shuffle(merges)  # a valid file whose order is not the training order
    shuffled = HexByteTokenizer(trained.vocab, merges)
    assert shuffled.encode(probe) == naive_hex_encode(trained.vocab, merges, probe)
    assert shuffled.encode_batch([probe, probe]) == [shuffled.encode(probe)] * 2


def test_engine_falls_back_to_python_for_files_it_cannot_match() -> None:
    trained = train_hex_bpe(["abab cdcd abab"], vocab_size=300, min_frequency=1)
    assert trained.engine == "tokenizers"
    out_of_order = [trained.merges[2], *trained.merges[:2], *trained.merges[3:]]  # a merge before its part
    assert HexByteTokenizer(trained.vocab, out_of_order).engine == "python"
    no_unk = {t: i for t, i in trained.vocab.items() if t != "<unk>"}
    assert HexByteTokenizer(no_unk, trained.merges).engine == "python"


def _save(tmp_path: Path) -> Path:
    train_hex_bpe(["abab cdcd abab"], vocab_size=300, min_frequency=1).save(tmp_path)
    return tmp_path


def test_load_refuses_orphan_merge(tmp_path: Path) -> None:
    _save(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n61 62\n61 7a7a\n")
    with pytest.raises(
        FormatError, match=r"merges\.txt:3: merge '61' \+ '7a7a': '7a7a' is not in vocab\.json"
    ):
        HexByteTokenizer.load(tmp_path)


def test_load_refuses_malformed_merge_line(tmp_path: Path) -> None:
    _save(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n61 62 63\n")
    with pytest.raises(FormatError, match=r"merges\.txt:2: expected 'left right'"):
        HexByteTokenizer.load(tmp_path)


def test_load_needs_merges_and_unique_ids(tmp_path: Path) -> None:
    _save(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(FormatError, match="merges.txt not found"):
        HexByteTokenizer.load(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab["6162"] = vocab["61"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(FormatError, match="two tokens share one id"):
        HexByteTokenizer.load(tmp_path)


def test_missing_bytes_encode_as_unk_and_decode_drops_specials(tmp_path: Path) -> None:
    tok = train_hex_bpe(["abab"], vocab_size=262, min_frequency=1)
    vocab = {t: i for t, i in tok.vocab.items() if t != "a9"}  # no key for byte 0xa9
    partial = HexByteTokenizer(vocab, tok.merges)
    assert partial.encode("a\u00e9") == [5 + 0x61, 5 + 0xC3, 0]  # 'é' is c3 a9: a9 becomes <unk>
    assert partial.encode("ab") == [261]
    assert tok.decode([1, 5 + 0x61, 2, 261]) == "aab"
    with pytest.raises(FormatError, match="id 99999 is not in the vocab"):
        tok.decode([99999])


def test_cli_train_writes_aprender_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"content": t}) + "\n" for t in ["def f(): pass\n"] * 3))
    code = shiptwo_main(
        ["tokenize", "train", "--corpus", str(corpus), "--vocab-size", "270", "--output", str(tmp_path / "v")]
    )
    assert code == 0 and "hex-byte BPE, 270 ids" in capsys.readouterr().out
    assert (
        HexByteTokenizer.load(tmp_path / "v").decode(HexByteTokenizer.load(tmp_path / "v").encode("def f()"))
        == "def f()"
    )
    corpus.write_text('{"text": "x"}\n')
    code = shiptwo_main(
        ["tokenize", "train", "--corpus", str(corpus), "--vocab-size", "270", "--output", str(tmp_path / "w")]
    )
    assert (
        code == 1
        and "c.jsonl:1: field 'content' is missing; fix the line or pass --on-bad-line skip"
        in capsys.readouterr().err
    )


def test_trainer_holds_the_corpus_in_c_int_arrays() -> None:
    # What keeps `tokenize train` within reach of a large corpus: the corpus as a linked list and
    # every pair's positions in C-int arrays, 16 bytes per corpus byte, not sets and lists of
    # Python ints (about 200). tracemalloc sees numpy's buffers too, so the peak of indexing is
    # measured, not assumed; the merge loop then only appends (benchmarks/bench_tokenize_train.py
    # measures a whole training's peak RSS).
    import tracemalloc
    from array import array

    from shiptwo.tokenize.hexbpe import _index_corpus

    rng = random.Random(7)
    words = ["def", "return", "self", "import", "(x)", "    ", "\n", "for i in range(n):", "é", "🙂"]
    texts = ["".join(rng.choice(words) for _ in range(rng.randint(0, 4000))) for _ in range(150)]
    size = sum(len(t.encode()) for t in texts)
    assert size > 500_000
    tracemalloc.start()
    try:
        sym, nxt, prv, where = _index_corpus(texts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = [sym, nxt, prv, *where.values()]
    assert all(isinstance(a, array) and a.itemsize == 4 for a in held)
    assert sum(len(a) for a in held) * 4 / size == pytest.approx(16, abs=0.01)  # 3 + 1 ints a byte
    assert peak / size <= 32, f"indexing peaked at {peak / size:.1f} bytes per corpus byte"


@settings(max_examples=30, deadline=None)
@given(texts=small_texts, min_frequency=st.sampled_from([1, 2]))
def test_trainer_past_the_c_int_range_indexes_in_64_bits_and_trains_the_same(
    texts: list[str], min_frequency: int
) -> None:
    # A corpus of 2 GiB or more would wrap C-int positions and cut texts short without a word:
    # from WIDE_FROM bytes on the positions are 64-bit. Lowered here so a small corpus crosses it.
    from shiptwo.tokenize import hexbpe

    with pytest.MonkeyPatch.context() as m:
        m.setattr(hexbpe, "WIDE_FROM", 0)
        sym, *_ = hexbpe._index_corpus(texts)
        assert sym.itemsize == 8
        merges = train_hex_bpe(texts, vocab_size=300, min_frequency=min_frequency).merges
    assert merges == naive_train(texts, 300, min_frequency)


def test_train_shows_its_merges_on_stderr_unless_asked_not_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "".join(json.dumps({"content": "def f(x):\n    return x\n" * k}) + "\n" for k in range(1, 6))
    )
    argv = ["tokenize", "train", "--corpus", str(corpus), "--vocab-size", "270", "--output"]
    assert shiptwo_main([*argv, str(tmp_path / "v")]) == 0
    err = capsys.readouterr().err.splitlines()
    merges = len(HexByteTokenizer.load(tmp_path / "v").merges)
    assert merges == 9
    # Off a terminal: whole lines, the first and the last at least; the last counts every merge.
    assert err and all(line.startswith("tokenize train: merge ") for line in err), err
    assert err[-1].startswith(f"tokenize train: merge {merges}/9 (100%)"), err
    assert shiptwo_main([*argv, str(tmp_path / "w"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
