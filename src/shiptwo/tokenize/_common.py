"""Constants shared by both vocab formats, and GPT-2's byte table (stdlib only)."""

from __future__ import annotations

from functools import lru_cache

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
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}
