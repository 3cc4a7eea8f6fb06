"""Constants and small helpers shared by both vocab formats (stdlib only)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from shiptwo.errors import FormatError
from shiptwo.fileio import atomic_write_bytes

# The 256 keys of a hex-byte vocab, "00".."ff", in byte order.
HEX_BYTE_KEYS: tuple[str, ...] = tuple(f"{b:02x}" for b in range(256))
# aprender's rule (PR #1598): at least this many hex keys means a hex-byte vocab.
HEX_BYTE_THRESHOLD = 200
# The EOS token is the first of these present in the vocab (aprender's encode-corpus rule).
EOS_CANDIDATES: tuple[str, ...] = ("</s>", "<|endoftext|>", "<eos>", "<|eos|>")
UNK_CANDIDATES: tuple[str, ...] = ("<unk>", "<|unk|>")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (space -> 'Ġ', newline -> 'Ċ')."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def read_json(path: Path, *, what: str) -> Any:
    """Read a JSON file, turning every failure into a FormatError that names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: {what} not found") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: {what} is not valid UTF-8 JSON: {exc}") from exc


def atomic_write_json(path: Path, doc: Any) -> None:
    """Write JSON (sorted keys, two-space indent, trailing newline) atomically."""
    atomic_write_bytes(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
