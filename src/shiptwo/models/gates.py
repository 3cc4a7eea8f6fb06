"""The artifact gates of the models room: `qwen-artifacts` (a snapshot dir) and `qwen-gguf`.

Both open on what `shiptwo models fetch` left in the cache; the environment variables win."""

from __future__ import annotations

import os
from pathlib import Path

from shiptwo.harness.gates import GateResult

QWEN_DIR_ENV = "SHIPTWO_QWEN_DIR"


def qwen_artifacts() -> GateResult:
    # $SHIPTWO_QWEN_DIR wins, so a user points the same falsifiers at a snapshot of their own (or a
    # defective copy); else the snapshot `shiptwo models fetch` derived. Imported lazily: the
    # models room owns where its cache lives, and stats only files.
    value = os.environ.get(QWEN_DIR_ENV)
    if not value:
        from shiptwo.models.fetch import find_snapshot
        from shiptwo.models.registry import DEFAULT_QWEN2, MODELS

        found = find_snapshot(MODELS[DEFAULT_QWEN2])
        if found is None:
            return GateResult(
                "qwen-artifacts",
                False,
                "no Qwen2 snapshot: run `shiptwo models fetch` "
                f"(or set ${QWEN_DIR_ENV} to a Hugging Face snapshot dir)",
            )
        value = str(found)
    root = Path(value)
    if not root.is_dir():
        return GateResult("qwen-artifacts", False, f"${QWEN_DIR_ENV}={value} is not a directory")
    weights = tuple(sorted(root.glob("*.safetensors")))
    missing = [n for n in ("config.json", "tokenizer.json") if not (root / n).is_file()]
    if not weights:
        missing.append("*.safetensors")
    if missing:
        return GateResult("qwen-artifacts", False, f"${QWEN_DIR_ENV}={value} lacks {', '.join(missing)}")
    return GateResult(
        "qwen-artifacts",
        True,
        f"Qwen2 snapshot at {root}",
        (root / "config.json", root / "tokenizer.json", *weights),
    )


GGUF_ENV = "SHIPTWO_QWEN_GGUF"


def qwen_gguf() -> GateResult:
    # The GGUF itself, for the falsifiers that compare against transformers' own GGUF loading.
    value = os.environ.get(GGUF_ENV)
    if value:
        path = Path(value)
        if not path.is_file():
            return GateResult("qwen-gguf", False, f"${GGUF_ENV}={value} is not a file")
        return GateResult("qwen-gguf", True, f"Qwen2 GGUF at {path}", (path,))
    from shiptwo.models.fetch import find_gguf
    from shiptwo.models.registry import DEFAULT_QWEN2, MODELS

    found = find_gguf(MODELS[DEFAULT_QWEN2])
    if found is None:
        return GateResult(
            "qwen-gguf", False, f"no Qwen2 GGUF: run `shiptwo models fetch` (or set ${GGUF_ENV})"
        )
    return GateResult("qwen-gguf", True, f"Qwen2 GGUF at {found}", (found,))
