"""Tokenizers for both BPE vocab formats, detected before any loader sees them.

Public API: `detect_format(path)` classifies a vocab and says why; `load_tokenizer(path)`
dispatches on that verdict to the hex-byte loader (aprender's `apr tokenize train` files) or
the byte-level loader (Hugging Face `tokenizers`). Both return an object with `encode`,
`encode_batch`, `decode`, `vocab_size`, `unk_id`, `eos_id`, `format` and `source`.
`bytes_to_unicode()` is GPT-2's byte -> character table that byte-level vocabs are spelled in.

Importing this package is cheap: `tokenizers` is imported only when a byte-level vocab loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shiptwo.tokenize._common import bytes_to_unicode
from shiptwo.tokenize.detect import FormatReport, VocabFormat, VocabLayout, detect_format

if TYPE_CHECKING:
    from shiptwo.tokenize.bytelevel import ByteLevelTokenizer
    from shiptwo.tokenize.hexbpe import HexByteTokenizer

    Tokenizer = HexByteTokenizer | ByteLevelTokenizer


def load_tokenizer(path: str | Path, *, pretokenizer: str | None = None) -> Tokenizer:
    """Detect the vocab format at `path`, then load it with the loader of that format only.

    `pretokenizer` ("qwen2" or "gpt2") names the pre-tokenizer of a byte-level vocab.json +
    merges.txt pair or tiktoken file when no tokenizer_config.json says it. Raises FormatError
    for a vocab of unknown format; never guesses.
    """
    return load_detected(detect_format(path), pretokenizer=pretokenizer)


def load_detected(report: FormatReport, *, pretokenizer: str | None = None) -> Tokenizer:
    """Load the vocab a `detect_format` verdict describes, with the loader of its format only."""
    if report.format is VocabFormat.HEX_BYTE:
        from shiptwo.tokenize.hexbpe import HexByteTokenizer

        return HexByteTokenizer.load(report.path)
    from shiptwo.tokenize import bytelevel

    if report.layout is VocabLayout.TOKENIZER_JSON:
        return bytelevel.load_tokenizer_json(report.path)
    if report.layout is VocabLayout.VOCAB_MERGES:
        return bytelevel.load_vocab_merges(report.path, pretokenizer=pretokenizer)
    return bytelevel.load_tiktoken(report.path, pretokenizer=pretokenizer)


__all__ = [
    "FormatReport",
    "VocabFormat",
    "VocabLayout",
    "bytes_to_unicode",
    "detect_format",
    "load_detected",
    "load_tokenizer",
]
