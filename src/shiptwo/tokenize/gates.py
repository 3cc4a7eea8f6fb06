"""The `qwen-tokenizer` gate: a Qwen2 vocab built by `shiptwo tokenize fetch-qwen2` (or named)."""

from __future__ import annotations

from shiptwo.harness.gates import GateResult


def qwen_tokenizer() -> GateResult:
    # Imported lazily: the tokenizer package owns where its cache lives.
    from shiptwo.tokenize.qwen2 import find_qwen2_tokenizer_dir

    found = find_qwen2_tokenizer_dir()
    if found is None:
        return GateResult(
            "qwen-tokenizer",
            False,
            "no Qwen2 vocab built: run `shiptwo tokenize fetch-qwen2` (or set $SHIPTWO_QWEN_TOKENIZER)",
        )
    return GateResult("qwen-tokenizer", True, f"Qwen2 vocab at {found}", (found / "tokenizer.json",))
