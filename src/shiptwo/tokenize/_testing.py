"""Helpers for tests and benchmarks: a real Python corpus from this interpreter's stdlib, small vocabs.

Not part of the public API.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Sequence
from pathlib import Path


def python_sources(count: int, *, max_bytes: int = 40_000, skip: int = 0) -> list[tuple[Path, str]]:
    """`count` real Python source files of at most `max_bytes`, from the stdlib, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out: list[tuple[Path, str]] = []
    for path in sorted(stdlib.glob("*.py"))[skip:]:
        if path.stat().st_size > max_bytes:
            continue
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
        if len(out) == count:
            break
    return out


def naive_hex_encode(vocab: dict[str, int], merges: Sequence[tuple[str, str]], text: str) -> list[int]:
    """aprender's hex-byte encoder read literally: one pass per merge line, in file order, left to
    right, non-overlapping; a symbol missing from the vocab becomes <unk>. Slow; an oracle only."""
    symbols = [f"{b:02x}" for b in text.encode("utf-8")]
    for left, right in merges:
        out, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                out.append(left + right)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return [vocab.get(s, vocab["<unk>"]) for s in symbols]


def write_jsonl(path: Path, texts: Sequence[str], *, field: str = "content") -> Path:
    """Write one JSON object per line with the text under `field`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({field: text}) + "\n" for text in texts)
    return path


def train_byte_level(texts: Sequence[str], directory: Path, *, vocab_size: int = 1000) -> Path:
    """Train a small GPT-2-style byte-level BPE with `tokenizers`.

    Writes tokenizer.json, vocab.json, merges.txt and a tokenizer_config.json naming GPT2Tokenizer.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    tok.model.save(str(directory))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}) + "\n")
    return directory
