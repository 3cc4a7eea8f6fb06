"""Hugging Face tokenizer files from a GGUF's metadata (a Qwen2 byte-level BPE).

A GGUF carries the vocab (`tokenizer.ggml.tokens`, already spelled in GPT-2's byte alphabet),
the token kinds (`token_type`), the merges, the special ids and the chat template, but not the
pipeline around them. The pipeline is the project's Qwen2 one (`shiptwo.tokenize.bytelevel.
build_pipeline`: NFC, Qwen2's regex split, byte-level mapping); only the added tokens come from
the file: CONTROL tokens (type 3) are added as special, USER_DEFINED ones (type 4) as plain
added tokens, each at its own id. The vocab keeps every token of the file, so ids are the
file's ids and the [PADn] rows of the embedding stay addressable.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

from shiptwo.errors import FormatError

MODEL = "gpt2"  # tokenizer.ggml.model of a byte-level BPE
PRE_TOKENIZERS = ("qwen2",)  # tokenizer.ggml.pre values whose split is Qwen2's regex


class TokenType(enum.IntEnum):
    """llama.cpp's `llama_token_type` codes in tokenizer.ggml.token_type."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


def tokenizer_files_from_gguf(metadata: Mapping[str, Any], *, source: str | None = None) -> dict[str, str]:
    """{"tokenizer.json": text, "tokenizer_config.json": text} for a qwen2-style GGUF vocab.

    FormatError when the vocab is not byte-level BPE with Qwen2's pre-tokenizer, or when the
    tokens, types, merges or special ids are inconsistent. Takes a few seconds (151k merges).
    """
    from shiptwo.tokenize import bytes_to_unicode
    from shiptwo.tokenize.bytelevel import build_pipeline

    where = source or str(metadata.get("general.name") or "GGUF")
    model, pre = metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre")
    if model != MODEL or pre not in PRE_TOKENIZERS:
        raise FormatError(
            f"{where}: tokenizer.ggml.model {model!r} / pre {pre!r}: shiptwo builds only byte-level BPE "
            f"({MODEL!r}) with the {'/'.join(PRE_TOKENIZERS)} pre-tokenizer"
        )
    tokens = _str_list(metadata, "tokenizer.ggml.tokens", where)
    types = metadata.get("tokenizer.ggml.token_type", [TokenType.NORMAL] * len(tokens))
    if not isinstance(types, list) or len(types) != len(tokens):
        raise FormatError(
            f"{where}: tokenizer.ggml.token_type does not give one type per token ({len(tokens)})"
        )
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        dup = next(t for i, t in enumerate(tokens) if vocab[t] != i)
        ids = f"ids {tokens.index(dup)}, {vocab[dup]}"
        raise FormatError(f"{where}: tokenizer.ggml.tokens lists {dup!r} twice ({ids})")
    alphabet = set(bytes_to_unicode().values())
    missing_bytes = alphabet - vocab.keys()
    if missing_bytes:
        raise FormatError(
            f"{where}: the vocab lacks {len(missing_bytes)} of the 256 byte tokens "
            f"(e.g. {min(missing_bytes)!r}); "
            "not a byte-level BPE vocab"
        )
    stray = set("".join(t for t, k in zip(tokens, types, strict=True) if k == TokenType.NORMAL)) - alphabet
    if stray:
        raise FormatError(
            f"{where}: normal tokens use {len(stray)} characters outside the byte-level alphabet "
            f"(e.g. {min(stray)!r}); not a byte-level BPE vocab"
        )
    merges = _merges(metadata, vocab, where)

    doc = json.loads(build_pipeline(vocab, merges, pretokenizer="qwen2").to_str())
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": k == TokenType.CONTROL,
        }
        for i, (t, k) in enumerate(zip(tokens, types, strict=True))
        if k in (TokenType.CONTROL, TokenType.USER_DEFINED)
    ]
    # build_pipeline adds Qwen2.5's fixed list; the file's own list replaces it, ids and flags.
    doc["added_tokens"] = added
    config = _tokenizer_config(metadata, tokens, added, where)
    return {
        "tokenizer.json": json.dumps(doc, ensure_ascii=False),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
    }


def _str_list(metadata: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = metadata.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise FormatError(f"{where}: metadata {key!r} is missing or not a list of strings")
    return value


def _merges(metadata: Mapping[str, Any], vocab: Mapping[str, int], where: str) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    for i, line in enumerate(_str_list(metadata, "tokenizer.ggml.merges", where)):
        parts = line.split(" ")
        if len(parts) != 2 or not all(p in vocab for p in (*parts, "".join(parts))):
            raise FormatError(
                f"{where}: tokenizer.ggml.merges[{i}] {line[:80]!r} is not 'left right' of two tokens "
                "whose join is a token"
            )
        merges.append((parts[0], parts[1]))
    return merges


def _tokenizer_config(
    metadata: Mapping[str, Any], tokens: list[str], added: list[dict[str, Any]], where: str
) -> dict[str, Any]:
    def token(key: str) -> str | None:
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        if token_id is None:
            return None
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < len(tokens):
            raise FormatError(
                f"{where}: tokenizer.ggml.{key} {token_id!r} is not an id of the {len(tokens)} tokens"
            )
        return tokens[token_id]

    arch = metadata.get("general.architecture")
    config: dict[str, Any] = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "bos_token": token("bos_token_id"),
        "eos_token": token("eos_token_id"),
        "pad_token": token("padding_token_id"),
        "unk_token": token("unknown_token_id"),
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": metadata.get(f"{arch}.context_length", 32_768),
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
    }
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    return config
