"""The vocab files both formats share, one reader each: JSON files, merges.txt, tiktoken ranks.

The hex-byte and byte-level loaders, format detection and the Qwen2 builder read (and write)
these files here only. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shiptwo import jsonsafe
from shiptwo.errors import FormatError
from shiptwo.jsonsafe import JsonProblem, shown

MERGES_HEADER = "#version: 0.2"
# Ids are u32 in shards and in `tokenizers`, and int32 in most consumers: 2**31 ids at most.
MAX_TOKEN_ID = 2**31 - 1
# Tables sized by the largest id (the encoder's histogram: 8 bytes an id) must stay of the order of
# the vocab file itself, so an id may exceed the number of entries by this much and no more.
MAX_ID_GAP = 1 << 20


def read_json(path: Path, *, what: str) -> Any:
    """Read a JSON file (`shiptwo.jsonsafe`: bounded nesting and integers, UTF-8, unique keys),
    turning every failure into a one-line FormatError that names the file."""
    return jsonsafe.read_file(
        path, what=what, fix=f"fix or re-export the {what} (Hugging Face tokenizers writes valid ones)"
    )


def check_vocab_ids(path: Path, vocab: Mapping[str, Any], *, field: str = "vocab", extra: int = 0) -> None:
    """Refuse (FormatError naming the token and the id) an id that is not an integer in
    0..MAX_TOKEN_ID or exceeds the entry count (plus `extra` added tokens) by more than MAX_ID_GAP.

    Checked before anything is sized by the largest id: one id of 10**12 would otherwise ask for
    terabytes.
    """
    limit = min(MAX_TOKEN_ID, len(vocab) + extra + MAX_ID_GAP)
    for token, token_id in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise FormatError(
                f"{path}: {field} token {shown(token)} has id {shown(token_id)}, not an integer; fix the id"
            )
        if not 0 <= token_id <= limit:
            raise FormatError(
                f"{path}: {field} token {shown(token)} has id {token_id}, outside 0..{limit:,} "
                f"(ids are below 2**31 and at most {MAX_ID_GAP:,} past the {len(vocab):,} entries); "
                "fix the id"
            )


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
        text = jsonsafe.decode_utf8(path.read_bytes())
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: merges.txt not found beside vocab.json") from exc
    except OSError as exc:
        raise FormatError(
            f"{path}: merges.txt cannot be read ({exc.strerror or exc}); check its permissions"
        ) from exc
    except JsonProblem as exc:
        raise FormatError(f"{path}: merges.txt is {exc}") from exc
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(comment):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise FormatError(
                f"{path}:{lineno}: expected 'left right', got {shown(line)}; fix or remove the line"
            )
        left, right = parts
        for part in (left, right, left + right):
            if part not in vocab:
                raise FormatError(
                    f"{path}:{lineno}: merge {shown(left)} + {shown(right)}: {shown(part)} is not in "
                    "vocab.json (orphan merge); add the token or remove the merge"
                )
        merges.append((left, right))
    return merges


def merges_text(merges: Iterable[tuple[str, str]]) -> str:
    """merges.txt's content: the `#version: 0.2` header, then one `left right` line per merge."""
    return "".join([f"{MERGES_HEADER}\n", *(f"{left} {right}\n" for left, right in merges)])


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file: one `base64(token) rank` per line; ranks must be 0..n-1."""
    ranks: dict[bytes, int] = {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(
            f"{path}: tiktoken ranks file cannot be read ({exc.strerror or exc}); check the path"
        ) from exc
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            token_b64, rank_text = line.split()
            token = base64.b64decode(token_b64, validate=True)
            if not rank_text.isdigit() or len(rank_text) > len(str(MAX_TOKEN_ID)):
                raise ValueError("a rank is a small decimal integer")
            rank = int(rank_text)
        except (ValueError, binascii.Error) as exc:
            raise FormatError(
                f"{path}:{lineno}: not a tiktoken ranks line 'base64(token) rank': {shown(line)}; "
                "fix or remove the line"
            ) from exc
        if token in ranks:
            raise FormatError(f"{path}:{lineno}: token {shown(token)} appears twice; keep one")
        ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise FormatError(f"{path}: ranks are not exactly 0..{len(ranks) - 1} (each once); renumber them")
    return ranks
