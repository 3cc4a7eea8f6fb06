"""GPT-2 byte-level BPE through Hugging Face `tokenizers`, the canonical encoder.

Three load paths: tokenizer.json (carries its own normalizer and pre-tokenizer); a vocab.json +
merges.txt pair (aprender's import-hf layout), which carries neither, so the pre-tokenizer is
named explicitly or read from a sibling tokenizer_config.json and never defaults to a
whitespace split; and a tiktoken ranks file, whose merges are recovered from the ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shiptwo import jsonsafe
from shiptwo.errors import FormatError, UsageError
from shiptwo.jsonsafe import shown
from shiptwo.tokenize._common import EOS_CANDIDATES, bytes_to_unicode
from shiptwo.tokenize.detect import VocabFormat
from shiptwo.tokenize.vocabfiles import check_vocab_ids, read_json, read_merges, read_tiktoken_ranks

if TYPE_CHECKING:
    import tokenizers

# Qwen2's pre-tokenizer regex (public; also transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2.5(-Coder)'s added tokens from id 151,643 on, with their `special` flags.
QWEN2_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
PRETOKENIZERS: tuple[str, ...] = ("qwen2", "gpt2")
# tokenizer_config.json `tokenizer_class` -> the pre-tokenizer its vocab was trained with.
_CLASS_TO_PRETOKENIZER = {
    "Qwen2Tokenizer": "qwen2",
    "Qwen2TokenizerFast": "qwen2",
    "GPT2Tokenizer": "gpt2",
    "GPT2TokenizerFast": "gpt2",
}


class ByteLevelTokenizer:
    """A byte-level BPE vocab behind a `tokenizers.Tokenizer`; ids are Hugging Face's ids."""

    format = VocabFormat.BYTE_LEVEL

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, source: Path | None = None, layout: str = ""):
        self.tokenizer = tokenizer
        self.source = source
        self.layout = layout
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        unk = getattr(tokenizer.model, "unk_token", None)
        self.unk_id: int | None = tokenizer.token_to_id(unk) if unk else None
        self.added_tokens: frozenset[str] = frozenset(
            t.content for t in tokenizer.get_added_tokens_decoder().values()
        )
        # The EOS token must be an added token: a regular BPE piece spelled "</s>" is text, not a marker.
        self.eos_id: int | None = next(
            (tokenizer.token_to_id(t) for t in EOS_CANDIDATES if t in self.added_tokens), None
        )
        if self.eos_id is None:
            self.eos_id = next(
                (tokenizer.token_to_id(t) for t in EOS_CANDIDATES if tokenizer.token_to_id(t) is not None),
                None,
            )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads); ids as lists, order kept."""
        return [e.ids for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text, special tokens included, so decode(encode(x)) gives x back (after NFC)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def id_to_piece(self, token_id: int) -> str:
        return self.tokenizer.id_to_token(token_id) or f"<id {token_id}>"


def load_tokenizer_json(path: Path) -> ByteLevelTokenizer:
    from tokenizers import Tokenizer

    # Decoded as strict UTF-8 here, never by tokenizers: its Rust loader aborts the whole
    # process (a pyo3 panic) on a file that is not UTF-8, as the fuzz run found. The JSON itself
    # was read and checked by detect_format, which every caller goes through first.
    try:
        text = jsonsafe.decode_utf8(path.read_bytes())
    except jsonsafe.JsonProblem as exc:
        raise FormatError(f"{path}: not valid JSON (tokenizer.json): {exc}") from exc
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on bad files
        raise FormatError(f"{path}: Hugging Face tokenizers could not load it: {exc}") from exc
    return ByteLevelTokenizer(tok, source=path, layout="tokenizer.json")


def build_pipeline(
    vocab: dict[str, int], merges: list[tuple[str, str]], *, pretokenizer: str
) -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` for a byte-level vocab with a named pre-tokenizer preset.

    `qwen2`: NFC, Qwen2's regex split, byte-level mapping, Qwen2.5's 22 added tokens.
    `gpt2`: GPT-2's byte-level regex; `<|endoftext|>` marked special when present.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    if pretokenizer not in PRETOKENIZERS:
        raise UsageError(f"unknown pre-tokenizer {pretokenizer!r}; choose one of {', '.join(PRETOKENIZERS)}")
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    if pretokenizer == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            ]
        )
        # In id order: add_special_tokens forces special=True, so the non-special ones (tool calls,
        # FIM markers, which come last) go through add_tokens.
        for content, special in QWEN2_ADDED_TOKENS:
            token = AddedToken(
                content, special=special, normalized=False, lstrip=False, rstrip=False, single_word=False
            )
            if special:
                tok.add_special_tokens([token])
            else:
                tok.add_tokens([token])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=False, trim_offsets=True, use_regex=True
        )
        if "<|endoftext|>" in vocab:
            tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return tok


def resolve_pretokenizer(vocab_path: Path, pretokenizer: str | None) -> str:
    """The pre-tokenizer for a vocab.json + merges.txt pair: named, or from tokenizer_config.json."""
    if pretokenizer is not None:
        if pretokenizer not in PRETOKENIZERS:
            raise UsageError(
                f"unknown pre-tokenizer {pretokenizer!r}; choose one of {', '.join(PRETOKENIZERS)}"
            )
        return pretokenizer
    config = vocab_path.with_name("tokenizer_config.json")
    if config.is_file():
        doc = read_json(config, what="tokenizer_config.json")
        if not isinstance(doc, dict):
            raise FormatError(f"{config}: not a JSON object; fix it or name the pre-tokenizer")
        cls = doc.get("tokenizer_class")
        if cls in _CLASS_TO_PRETOKENIZER:
            return _CLASS_TO_PRETOKENIZER[cls]
        raise FormatError(
            f"{config}: tokenizer_class {shown(cls)} has no known pre-tokenizer; "
            f"name one ({', '.join(PRETOKENIZERS)}) or load tokenizer.json instead"
        )
    raise FormatError(
        f"{vocab_path}: a vocab.json + merges.txt pair does not say which pre-tokenizer it was trained with "
        f"and there is no tokenizer_config.json beside it; name one ({', '.join(PRETOKENIZERS)}, "
        "--pretokenizer on the CLI) or load tokenizer.json; shiptwo never falls back to a whitespace split"
    )


def load_vocab_merges(vocab_path: Path, *, pretokenizer: str | None = None) -> ByteLevelTokenizer:
    """Load aprender's import-hf layout (vocab.json + merges.txt) with the pre-tokenizer it needs."""
    preset = resolve_pretokenizer(vocab_path, pretokenizer)
    vocab = read_json(vocab_path, what="vocab.json")
    if not isinstance(vocab, dict):
        raise FormatError(f"{vocab_path}: not an object of token -> integer id; not a vocab.json")
    check_vocab_ids(vocab_path, vocab)
    # `#` is a byte-level token of its own: only the `#version` header is skipped.
    merges = read_merges(vocab_path.with_name("merges.txt"), vocab, comment="#version")
    tok = build_pipeline(vocab, merges, pretokenizer=preset)
    return ByteLevelTokenizer(tok, source=vocab_path, layout=f"vocab.json+merges.txt ({preset})")


def _bpe_split(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [bytes([b]) for b in token]
    while True:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_i, best_rank = i, rank
        if best_i < 0:
            return parts
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]


def merges_from_ranks(ranks: dict[bytes, int], *, source: Path | str = "ranks") -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from tiktoken ranks: each token is the merge its lower-ranked BPE leaves.

    Running BPE on a token's bytes with only the merges ranked below it must leave exactly two
    parts; those are its merge. Merges come out in rank order, which is their priority.
    """
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _bpe_split(ranks, token, rank)
        if len(parts) != 2:
            raise FormatError(
                f"{source}: token {token!r} (rank {rank}) is not one merge of lower-ranked tokens "
                f"(BPE leaves {len(parts)} parts); not a BPE ranks file"
            )
        merges.append((parts[0], parts[1]))
    return merges


def load_tiktoken(path: Path, *, pretokenizer: str | None = None) -> ByteLevelTokenizer:
    """Load a tiktoken ranks file by recovering its merges; `qwen.tiktoken` implies the qwen2 preset."""
    preset = pretokenizer or ("qwen2" if path.name == "qwen.tiktoken" else None)
    if preset is None:
        raise FormatError(
            f"{path}: a tiktoken ranks file does not say its pre-tokenizer; "
            f"name one ({', '.join(PRETOKENIZERS)})"
        )
    vocab, merges = byte_level_vocab_from_ranks(read_tiktoken_ranks(path), source=path)
    tok = build_pipeline(vocab, merges, pretokenizer=preset)
    return ByteLevelTokenizer(tok, source=path, layout=f"tiktoken ({preset})")


def byte_level_vocab_from_ranks(
    ranks: dict[bytes, int], *, source: Path | str = "ranks"
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The GPT-2-spelled vocab (token string -> rank) and merges of a tiktoken ranks table."""
    table = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(table[x] for x in b)

    vocab = {spell(t): r for t, r in ranks.items()}
    merges = [(spell(a), spell(b)) for a, b in merges_from_ranks(ranks, source=source)]
    return vocab, merges
