"""Host gates: the hardware and artifacts a falsifier needs, checked in one place.

A gate answers "is this host able to run the test?" with a reason either way, so a skip says
exactly what was looked for. Gates import torch only when asked about CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class GateResult:
    """Whether a gate is open on this host, why, and the artifacts it found (path -> sha256 later)."""

    name: str
    ok: bool
    reason: str
    artifacts: tuple[Path, ...] = field(default=())


def _cuda() -> GateResult:
    try:
        import torch
    except ImportError:
        return GateResult("cuda", False, "torch is not installed")
    if not torch.cuda.is_available():
        return GateResult("cuda", False, "torch.cuda.is_available() is False")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return GateResult("cuda", True, f"{torch.cuda.device_count()} CUDA device(s): {names}")


def _multi_gpu() -> GateResult:
    cuda = _cuda()
    if not cuda.ok:
        return GateResult("multi-gpu", False, cuda.reason)
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return GateResult("multi-gpu", False, f"torch sees {count} CUDA device, 2 are needed")
    return GateResult("multi-gpu", True, f"torch sees {count} CUDA devices")


QWEN_DIR_ENV = "SHIPTWO_QWEN_DIR"


def _qwen_artifacts() -> GateResult:
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
                "qwen-artifacts", False,
                f"no Qwen2 snapshot: run `shiptwo models fetch` (or set ${QWEN_DIR_ENV} to a Hugging Face snapshot dir)",
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


def _qwen_gguf() -> GateResult:
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
        return GateResult("qwen-gguf", False, f"no Qwen2 GGUF: run `shiptwo models fetch` (or set ${GGUF_ENV})")
    return GateResult("qwen-gguf", True, f"Qwen2 GGUF at {found}", (found,))


def _qwen_tokenizer() -> GateResult:
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


GATES: dict[str, Callable[[], GateResult]] = {
    "cuda": _cuda,
    "multi-gpu": _multi_gpu,
    "qwen-artifacts": _qwen_artifacts,
    "qwen-gguf": _qwen_gguf,
    "qwen-tokenizer": _qwen_tokenizer,
}

_cache: dict[str, GateResult] = {}


def check_gate(name: str) -> GateResult:
    """Check one gate by name (cached per process); an unknown name raises KeyError."""
    if name not in _cache:
        _cache[name] = GATES[name]()
    return _cache[name]


def clear_cache() -> None:
    """Forget cached gate results (tests change the environment between checks)."""
    _cache.clear()
