"""Upfront vocab-format detection: classify a vocab before any loader sees it, and say why.

The seeds' worst defect was a hex-byte loader that silently accepted a GPT-2 byte-level vocab.
Detection counts the 256 hex-byte keys "00".."ff" (aprender's rule: >= 200 means hex-byte) and
the 256 GPT-2 byte characters; a vocab that is neither is refused, never guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from shiptwo.errors import FormatError
from shiptwo.jsonsafe import shown
from shiptwo.tokenize._common import HEX_BYTE_KEYS, HEX_BYTE_THRESHOLD, bytes_to_unicode
from shiptwo.tokenize.vocabfiles import check_vocab_ids, read_json, read_tiktoken_ranks


class VocabFormat(StrEnum):
    """How a vocab spells bytes: aprender's hex strings or GPT-2's printable characters."""

    HEX_BYTE = "hex-byte"
    BYTE_LEVEL = "byte-level"


class VocabLayout(StrEnum):
    """Which files carry the vocab."""

    TOKENIZER_JSON = "tokenizer.json"
    VOCAB_MERGES = "vocab.json+merges.txt"
    TIKTOKEN = "tiktoken"


@dataclass(frozen=True)
class FormatReport:
    """The verdict of `detect_format`: the format, the files a loader will read, and the counts."""

    format: VocabFormat
    layout: VocabLayout
    path: Path
    files: tuple[Path, ...]
    vocab_entries: int
    hex_keys: int
    byte_chars: int
    reason: str

    def sha256(self) -> tuple[str, list[dict[str, str]]]:
        """The sha256 of the vocab's files concatenated in `files` order, and each file's own."""
        combined = hashlib.sha256()
        sums = []
        for p in self.files:
            data = Path(p).read_bytes()
            combined.update(data)
            sums.append({"file": Path(p).name, "sha256": hashlib.sha256(data).hexdigest()})
        return combined.hexdigest(), sums

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": str(self.format),
            "layout": str(self.layout),
            "path": str(self.path),
            "files": [str(p) for p in self.files],
            "vocab_entries": self.vocab_entries,
            "hex_keys": self.hex_keys,
            "byte_chars": self.byte_chars,
            "reason": self.reason,
        }


def count_hex_keys(keys: Any) -> int:
    """How many of the 256 strings "00".."ff" are keys (any container supporting `in`)."""
    return sum(1 for k in HEX_BYTE_KEYS if k in keys)


def count_byte_chars(keys: Any) -> int:
    """How many of GPT-2's 256 single-character byte tokens are keys."""
    return sum(1 for c in bytes_to_unicode().values() if c in keys)


def _classify(
    path: Path, vocab: dict[str, Any], *, layout: VocabLayout, files: tuple[Path, ...], exempt: frozenset[str]
) -> FormatReport:
    hex_keys = count_hex_keys(vocab)
    byte_chars = count_byte_chars(vocab)
    counts = f"{hex_keys} of 256 hex-byte keys, {byte_chars} of 256 byte-level characters"
    if hex_keys >= HEX_BYTE_THRESHOLD:
        reason = f"{hex_keys} of 256 hex-byte keys present (>= {HEX_BYTE_THRESHOLD}): hex-byte"
        return FormatReport(
            VocabFormat.HEX_BYTE, layout, path, files, len(vocab), hex_keys, byte_chars, reason
        )
    if byte_chars == 256:
        alphabet = set(bytes_to_unicode().values())
        foreign = [k for k in vocab if k not in exempt and not set(k) <= alphabet]
        if foreign:
            raise FormatError(
                f"{path}: unknown vocab format: {counts}, but {len(foreign)} keys use characters outside "
                f"the byte-level alphabet (first: {foreign[0]!r}); shiptwo loads hex-byte and GPT-2 "
                "byte-level BPE only"
            )
        reason = (
            f"{hex_keys} of 256 hex-byte keys present (< {HEX_BYTE_THRESHOLD}) and all 256 byte-level "
            "characters: GPT-2 byte-level"
        )
        return FormatReport(
            VocabFormat.BYTE_LEVEL, layout, path, files, len(vocab), hex_keys, byte_chars, reason
        )
    raise FormatError(
        f"{path}: unknown vocab format: {counts} (hex-byte needs >= {HEX_BYTE_THRESHOLD} hex keys, "
        "byte-level needs all 256 characters); shiptwo loads hex-byte and GPT-2 byte-level BPE only"
    )


def _has_byte_level(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "ByteLevel":
        return True
    children = node.get("pretokenizers")
    return isinstance(children, list) and any(_has_byte_level(child) for child in children)


def _detect_tokenizer_json(path: Path, doc: dict[str, Any]) -> FormatReport:
    model = doc.get("model")
    if not isinstance(model, dict):
        raise FormatError(f"{path}: no 'model' object; not a Hugging Face tokenizer.json")
    if model.get("type") != "BPE":
        raise FormatError(
            f"{path}: model.type is {shown(model.get('type'))}; shiptwo loads BPE tokenizers only"
        )
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        # Byte-level BPE has neither; with one, tokenizers 0.22 can abort the process while it
        # builds its own error message about a vocab entry (a pyo3 panic the fuzz run found).
        if model.get(key) not in (None, ""):
            raise FormatError(
                f"{path}: model.{key} is {shown(model.get(key))}; a byte-level BPE tokenizer.json has "
                "none (shiptwo reads GPT-2/Qwen2-style byte-level BPE): set it to null, or load that "
                "tokenizer with its own library"
            )
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise FormatError(f"{path}: model.vocab is not an object of token -> id")
    added_tokens = doc.get("added_tokens") or []
    if not isinstance(added_tokens, list):
        raise FormatError(
            f"{path}: added_tokens is {shown(added_tokens)}, not a list of token objects; fix the file"
        )
    added = frozenset(
        t["content"] for t in added_tokens if isinstance(t, dict) and isinstance(t.get("content"), str)
    )
    check_vocab_ids(path, vocab, field="model.vocab", extra=len(added_tokens))
    report = _classify(path, vocab, layout=VocabLayout.TOKENIZER_JSON, files=(path,), exempt=added)
    if report.format is VocabFormat.HEX_BYTE:
        raise FormatError(
            f"{path}: a hex-byte vocab ({report.hex_keys} of 256 hex keys) inside tokenizer.json is not a "
            "layout aprender writes; save it as vocab.json + merges.txt"
        )
    if not _has_byte_level(doc.get("pre_tokenizer")):
        raise FormatError(
            f"{path}: byte-level vocab but the pre_tokenizer has no ByteLevel step; "
            "text would not be mapped to byte characters"
        )
    return report


def _detect_vocab_json(path: Path, vocab: Any) -> FormatReport:
    if not isinstance(vocab, dict):
        raise FormatError(
            f"{path}: not an object of token -> integer id (a JSON {type(vocab).__name__}); not a vocab.json"
        )
    check_vocab_ids(path, vocab)
    merges = path.with_name("merges.txt")
    files = (path, merges) if merges.is_file() else (path,)
    return _classify(path, vocab, layout=VocabLayout.VOCAB_MERGES, files=files, exempt=frozenset())


def _detect_tiktoken(path: Path) -> FormatReport:
    tokens = read_tiktoken_ranks(path)
    single = sum(1 for b in range(256) if bytes([b]) in tokens)
    hex_keys = sum(1 for k in HEX_BYTE_KEYS if k.encode() in tokens)
    if single != 256:
        raise FormatError(
            f"{path}: tiktoken ranks cover {single} of 256 single bytes; a byte-level BPE needs all"
        )
    reason = f"tiktoken ranks file: {len(tokens)} byte tokens, all 256 single bytes: byte-level"
    return FormatReport(
        VocabFormat.BYTE_LEVEL, VocabLayout.TIKTOKEN, path, (path,), len(tokens), hex_keys, single, reason
    )


def detect_format(path: str | Path) -> FormatReport:
    """Classify the vocab at `path` (a tokenizer dir, tokenizer.json, vocab.json or *.tiktoken).

    A directory is looked at in this order: tokenizer.json, vocab.json (+ merges.txt), a single
    *.tiktoken file. Raises FormatError for a vocab of no known format, naming the counts.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.json"):
            if (path / name).is_file():
                return detect_format(path / name)
        ranks = sorted(path.glob("*.tiktoken"))
        if len(ranks) == 1:
            return _detect_tiktoken(ranks[0])
        raise FormatError(
            f"{path}: no tokenizer.json, vocab.json or single *.tiktoken file in this directory"
        )
    if not path.is_file():
        raise FormatError(f"{path}: no such file or directory")
    if path.suffix == ".tiktoken":
        return _detect_tiktoken(path)
    if path.name == "merges.txt":
        return detect_format(path.with_name("vocab.json"))
    doc = read_json(path, what="vocab file")
    if isinstance(doc, dict) and (isinstance(doc.get("model"), dict) or path.name == "tokenizer.json"):
        return _detect_tokenizer_json(path, doc)
    return _detect_vocab_json(path, doc)
