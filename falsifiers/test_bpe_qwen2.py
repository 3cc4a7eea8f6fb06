"""Falsifiers of bpe-format-v1 on the real Qwen2 vocab (built by `shiptwo tokenize fetch-qwen2`).

Oracles: Hugging Face `transformers`' Qwen2Tokenizer, which builds its own pipeline (Qwen2's regex,
NFC, byte-level) from vocab.json + merges.txt, and a tiktoken-style rank BPE written here over
the ranks file itself, which needs no recovered merges at all.

Each falsifier's controls (contracts/bpe-format-v1.yaml) plant the defect its `if_fails` names
into the real code, through monkeypatch, and run the same prediction.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import regex

from shiptwo.tokenize import bytelevel, load_tokenizer
from shiptwo.tokenize._testing import python_sources
from shiptwo.tokenize.bytelevel import QWEN2_PRETOKENIZE_REGEX, load_vocab_merges, read_tiktoken_ranks
from shiptwo.tokenize.qwen2 import (
    BUILT_FILES,
    PROVENANCE,
    RANKS_FILE,
    build_qwen2_files,
    builder_version,
    find_qwen2_tokenizer_dir,
)

TRICKY = [
    "12345678901234567890",
    "x = 3.14159e-10; y = 1_000_000",
    "    \n\n\t  \n   foo  bar   \r\n\r\n  ",
    "你好，世界！这是一个测试。",
    "日本語のテキストと한국어",
    "😀🎉👍🏽 family: 👨\u200d👩\u200d👧\u200d👦 flags 🇯🇵",
    "I'm you're we've they'll she'd it's DON'T WE'LL",
    "def f(x):\n    return x**2  # comment\n",
    "e\u0301 cafe\u0301 A\u030a Å",  # NFD input: Qwen2 normalizes to NFC first
    "\u00a0\u2003\u3000 tabs\t\tand  spaces",
    "<|endoftext|>",
]
# GPT-2's pre-tokenizer regex: digit runs and letter runs kept whole, no case-insensitive contractions.
GPT2_PRETOKENIZE_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="module")
def qwen_dir() -> Path:
    found = find_qwen2_tokenizer_dir()
    assert found is not None  # the qwen-tokenizer gate is open, so this holds
    return found


@pytest.fixture(scope="module")
def qwen(qwen_dir: Path) -> Any:
    return load_tokenizer(qwen_dir)


@pytest.fixture(scope="module")
def python_texts() -> list[str]:
    return [text for _, text in python_sources(40, max_bytes=30_000)]


@pytest.mark.falsifier("FALSIFY-BPE-UPSTREAM-001")
def test_real_qwen2_vocab_encodes_python_with_no_unk(
    qwen: Any, qwen_dir: Path, python_texts: list[str], falsifier_control: Any, record_measurement: Any
) -> None:
    if falsifier_control == "no-byte-level-mapping":
        # A fresh load of the same tokenizer.json whose pre-tokenizer keeps Qwen2's regex split but
        # has lost the ByteLevel step that spells text in the vocab's byte characters.
        from tokenizers import Regex, pre_tokenizers

        qwen = load_tokenizer(qwen_dir)
        qwen.tokenizer.pre_tokenizer = pre_tokenizers.Split(
            Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"
        )
    encoded = qwen.encode_batch(python_texts)
    total = sum(len(ids) for ids in encoded)
    # Qwen2 has no <unk> id, so an unk ratio would be 0 by construction. What can fail for a
    # byte-level vocab is loss: a byte with no token is dropped, not marked. So count the
    # documents that do not come back whole, and the ids that turned text into a special token.
    assert qwen.unk_id is None
    mismatched = sum(
        qwen.decode(ids) != unicodedata.normalize("NFC", text)
        for text, ids in zip(python_texts, encoded, strict=True)
    )
    special = sum(i >= 151_643 for ids in encoded for i in ids)  # Qwen2's added tokens start at 151,643
    record_measurement("roundtrip_mismatched_documents", mismatched)
    record_measurement("special_token_ids", special)
    record_measurement("tokens_per_byte", total / sum(len(t.encode("utf-8")) for t in python_texts))
    assert mismatched == 0 and special == 0


@pytest.mark.falsifier("FALSIFY-BPE-UPSTREAM-002")
def test_vocab_merges_pair_and_tokenizer_json_give_identical_ids(
    qwen: Any,
    qwen_dir: Path,
    python_texts: list[str],
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
    record_measurement: Any,
) -> None:
    if falsifier_control == "whitespace-split":
        # The pair loader's pipeline with aprender's split: a word with its leading space, every
        # other whitespace character alone (this gives the seeds' ids for "def fibonacci(n):...").
        from tokenizers import Regex, pre_tokenizers

        real_build = bytelevel.build_pipeline

        def whitespace_split(
            vocab: dict[str, int], merges: list[tuple[str, str]], *, pretokenizer: str
        ) -> Any:
            tok = real_build(vocab, merges, pretokenizer=pretokenizer)
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(r" ?\S+|\s"), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
                ]
            )
            return tok

        monkeypatch.setattr(bytelevel, "build_pipeline", whitespace_split)
    pair_from_config: Any = load_tokenizer(
        qwen_dir / "vocab.json"
    )  # pre-tokenizer from tokenizer_config.json
    pair_named = load_vocab_merges(qwen_dir / "vocab.json", pretokenizer="qwen2")
    assert "qwen2" in pair_from_config.layout
    texts = python_texts + TRICKY
    mismatched = 0
    for other in (pair_from_config, pair_named):
        for a, b in zip(qwen.encode_batch(texts), other.encode_batch(texts), strict=True):
            mismatched += sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))
    record_measurement("mismatched_ids", mismatched)
    assert mismatched == 0
    # A whitespace split would give different ids on ordinary code; prove the test can see that.
    words = ["def", "f(x):\n", "", "", "", "return", "x"]  # "def f(x):\n    return x" split at each space
    ws = [i for word in words for i in qwen.encode(word)]
    assert ws != pair_named.encode("def f(x):\n    return x")


def _rank_bpe(ranks: dict[bytes, int], text: str) -> list[int]:
    """tiktoken's algorithm: split by Qwen2's regex after NFC, then merge the lowest-ranked pair."""
    out: list[int] = []
    for piece in regex.findall(QWEN2_PRETOKENIZE_REGEX, unicodedata.normalize("NFC", text)):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            best = min(
                (
                    (ranks[parts[i] + parts[i + 1]], i)
                    for i in range(len(parts) - 1)
                    if parts[i] + parts[i + 1] in ranks
                ),
                default=None,
            )
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        out.extend(ranks[p] for p in parts)
    return out


def _assert_matches_oracles(tok: Any, built: Path, texts: list[str]) -> None:
    """`tok` (loaded from `built`) gives Hugging Face Qwen2Tokenizer's ids over built's vocab.json +
    merges.txt (HF's own regex, NFC and byte-level code), the rank BPE's ids over the ranks file
    (no recovered merges at all), and the ids the seeds quote from the real Qwen2 tokenizer.json."""
    from transformers import Qwen2Tokenizer

    vocab = json.loads((built / "vocab.json").read_text(encoding="utf-8"))
    lines = (built / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    hf = Qwen2Tokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]  # stubs say list[str]; pairs work
    ranks = read_tiktoken_ranks(built / RANKS_FILE)
    for text in texts:
        ours = tok.encode(text)
        assert ours == hf.encode(text, add_special_tokens=False), text
        if "<|" not in text:
            assert ours == _rank_bpe(ranks, text), text
        assert tok.decode(ours) == unicodedata.normalize("NFC", text)
    # Published facts: Qwen2's added tokens sit at 151,643.. and total 151,665 with Qwen2.5's 22.
    assert [tok.encode(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [
        [151643],
        [151644],
        [151645],
    ]
    assert tok.vocab_size == 151_665 and tok.eos_id == 151_643
    # Ids quoted in the seeds (aprender PR #1598, real Qwen2 tokenizer.json) name these pieces.
    seed_ids = [750, 75698, 1445, 1648, 198, 220, 220, 220, 470, 308, 198]
    assert tok.decode(seed_ids) == "def fibonacci(n):\n    return n\n"
    # ...and Hugging Face's own pipeline merges "):\n" and the indent, which aprender's whitespace
    # split did not.
    assert (
        tok.encode("def fibonacci(n):\n    return n\n")
        == hf.encode("def fibonacci(n):\n    return n\n", add_special_tokens=False)
        == [750, 75698, 1445, 982, 262, 470, 308, 198]
    )


def _first_split_merges(
    ranks: dict[bytes, int], *, source: Path | str = "ranks"
) -> list[tuple[bytes, bytes]]:
    """Merge recovery done wrong: each token split at its first point where both halves are
    lower-ranked tokens, instead of where BPE over the lower ranks leaves it."""
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        split = next(
            i
            for i in range(1, len(token))
            if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank
        )
        merges.append((token[:split], token[split:]))
    return merges


def _plant_builder_defect(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the control's defect into the code that builds the Qwen2 files from the ranks."""
    if control == "gpt2-regex":
        monkeypatch.setattr(bytelevel, "QWEN2_PRETOKENIZE_REGEX", GPT2_PRETOKENIZE_REGEX)
    elif control == "no-nfc":
        real_build = bytelevel.build_pipeline

        def without_nfc(vocab: dict[str, int], merges: list[tuple[str, str]], *, pretokenizer: str) -> Any:
            tok = real_build(vocab, merges, pretokenizer=pretokenizer)
            tok.normalizer = None
            return tok

        monkeypatch.setattr(bytelevel, "build_pipeline", without_nfc)
    elif control == "merges-first-split":
        monkeypatch.setattr(bytelevel, "merges_from_ranks", _first_split_merges)


@pytest.mark.falsifier("FALSIFY-BPE-HF-PARITY-001")
def test_rebuilt_qwen2_matches_hf_qwen2_tokenizer_and_rank_bpe(
    qwen: Any,
    qwen_dir: Path,
    python_texts: list[str],
    tmp_path: Path,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if falsifier_control is not None:
        # The cache as a builder with the control's defect wrote it, from the same cached ranks.
        (tmp_path / RANKS_FILE).write_bytes((qwen_dir / RANKS_FILE).read_bytes())
        with monkeypatch.context() as m:
            _plant_builder_defect(falsifier_control, m)
            build_qwen2_files(tmp_path / RANKS_FILE, tmp_path)
        qwen_dir, qwen = tmp_path, load_tokenizer(tmp_path)
    _assert_matches_oracles(qwen, qwen_dir, TRICKY + [t[:3000] for t in python_texts[:8]])


@pytest.mark.falsifier("FALSIFY-BPE-HF-PARITY-001")
def test_current_builder_rebuilds_the_cache_and_matches_hf(
    qwen_dir: Path,
    tmp_path: Path,
    python_texts: list[str],
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The test above judges the cached files, which an older builder may have written: a
    # regression in today's builder (merge recovery, NFC, regex) would go unseen on a warm
    # cache. So build again, now, from the cached ranks, and judge that build by the oracles
    # (red even when the cache came from the same broken builder) and the cache by it.
    assert (qwen_dir / PROVENANCE).is_file(), f"{qwen_dir} has no {PROVENANCE}: not a fetch-qwen2 build"
    (tmp_path / RANKS_FILE).write_bytes((qwen_dir / RANKS_FILE).read_bytes())
    with monkeypatch.context() as m:
        _plant_builder_defect(falsifier_control, m)  # today's builder, with the control's defect
        build_qwen2_files(tmp_path / RANKS_FILE, tmp_path)
    _assert_matches_oracles(load_tokenizer(tmp_path), tmp_path, TRICKY + [t[:3000] for t in python_texts[:4]])
    cached_by = json.loads((qwen_dir / PROVENANCE).read_text(encoding="utf-8")).get("builder")
    for name in (*BUILT_FILES, "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (qwen_dir / name).read_bytes(), (
            f"{qwen_dir / name} differs from what the current builder ({builder_version()}) writes; "
            f"the cache was built by {cached_by}: run `shiptwo tokenize fetch-qwen2` to rebuild it"
        )
