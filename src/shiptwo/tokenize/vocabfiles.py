"""The vocab files both formats share, one reader each: JSON files, merges.txt, tiktoken ranks.

The hex-byte and byte-level loaders, format detection and the Qwen2 builder read (and write)
these files here only. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shiptwo.errors import FormatError

MERGES_HEADER = "#version: 0.2"


def read_json(path: Path, *, what: str) -> Any:
    """Read a JSON file, turning every failure into a FormatError that names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: {what} not found") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: {what} is not valid UTF-8 JSON: {exc}") from exc


def vocab_in_id_order(vocab: Mapping[str, int]) -> dict[str, int]:
    """vocab.json's content in id order (what Hugging Face and aprender write)."""
    return dict(sorted(vocab.items(), key=lambda kv: kv[1]))


def read_merges(path: Path, vocab: Mapping[str, int], *, comment: str) -> list[tuple[str, str]]:
    """Read merges.txt: one `left right` per line; both parts and their join must be in the vocab.

    Blank lines and lines starting with `comment` are skipped: `"#"` for a hex-byte vocab, whose
    tokens are hex strings, but only the `"#version"` header for a byte-level one, where `#` is a
    token of its own.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: merges.txt not found beside vocab.json") from exc
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(comment):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise FormatError(f"{path}:{lineno}: expected 'left right', got {line[:80]!r}")
        left, right = parts
        for part in (left, right, left + right):
            if part not in vocab:
                raise FormatError(
                    f"{path}:{lineno}: merge {left!r} + {right!r}: {part!r} is not in vocab.json "
                    "(orphan merge)"
                )
        merges.append((left, right))
    return merges


def merges_text(merges: Iterable[tuple[str, str]]) -> str:
    """merges.txt's content: the `#version: 0.2` header, then one `left right` line per merge."""
    return "".join([f"{MERGES_HEADER}\n", *(f"{left} {right}\n" for left, right in merges)])


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file: one `base64(token) rank` per line; ranks must be 0..n-1."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token_b64, rank_text = line.split()
                token = base64.b64decode(token_b64, validate=True)
                rank = int(rank_text)
            except (ValueError, binascii.Error) as exc:
                raise FormatError(
                    f"{path}:{lineno}: not a tiktoken ranks line 'base64(token) rank': {line[:60]!r}"
                ) from exc
            if token in ranks:
                raise FormatError(f"{path}:{lineno}: token {token!r} appears twice")
            ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise FormatError(f"{path}: ranks are not exactly 0..{len(ranks) - 1}")
    return ranks
