"""A real Qwen2 vocab without a model hub: rebuilt from the ranks file in a pinned PyPI wheel.

The `dashscope` wheel ships `dashscope/resources/qwen.tiktoken`, whose 151,643 tokens are
Qwen2's regular tokens id for id. `fetch_qwen2` downloads the pinned wheel, checks both sha256
sums, recovers the merges and writes tokenizer.json, vocab.json, merges.txt and
tokenizer_config.json (Qwen2's regex, NFC and Qwen2.5's 22 added tokens) into a cache dir.

This module imports only the standard library at import time: the `qwen-tokenizer` host gate
calls `find_qwen2_tokenizer_dir`, which must stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shiptwo.errors import FormatError, ShiptwoError
from shiptwo.fileio import cache_dir as shiptwo_cache

DASHSCOPE_VERSION = "2.0.2"
DASHSCOPE_WHEEL = f"dashscope-{DASHSCOPE_VERSION}-py3-none-any.whl"
DASHSCOPE_WHEEL_SHA256 = "0602d1800f7433bdb7953560986eaf5146454ed3988636c0a91963ba24e74258"
TIKTOKEN_MEMBER = "dashscope/resources/qwen.tiktoken"
QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
QWEN2_REGULAR_TOKENS = 151_643
TOKENIZER_ENV = "SHIPTWO_QWEN_TOKENIZER"
DIR_NAME = "qwen2-tokenizer"
PROVENANCE = "shiptwo-qwen2.json"
BUILT_FILES = ("tokenizer.json", "vocab.json", "merges.txt")
RANKS_FILE = "qwen.tiktoken"
# The modules whose code decides the built files' bytes. Their sha256 is part of the builder
# version, so a cache built by other code (a fix, or a regression) reads as stale and
# fetch-qwen2 rebuilds it, instead of the Qwen2 falsifiers testing yesterday's builder.
BUILDER_MODULES = ("qwen2.py", "bytelevel.py", "_common.py", "vocabfiles.py")


def find_qwen2_tokenizer_dir() -> Path | None:
    """The dir holding a built Qwen2 tokenizer.json/vocab.json/merges.txt, or None.

    Looks at $SHIPTWO_QWEN_TOKENIZER first (a dir, or a tokenizer.json inside one), then
    <cache>/qwen2-tokenizer. Only stats files: cheap enough for a host gate.
    """
    candidates = []
    value = os.environ.get(TOKENIZER_ENV)
    if value:
        p = Path(value)
        candidates.append(p.parent if p.name == "tokenizer.json" else p)
    candidates.append(shiptwo_cache() / DIR_NAME)
    # A cache built by another builder version still opens the gate: the falsifier that rebuilds
    # with today's builder and byte-compares then goes red, where a closed gate would only skip.
    for d in candidates:
        if all((d / name).is_file() for name in BUILT_FILES):
            return d
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(into),
        f"dashscope=={DASHSCOPE_VERSION}",
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheel = into / DASHSCOPE_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ShiptwoError(
            f"pip download dashscope=={DASHSCOPE_VERSION} failed ({last}); "
            "download the wheel elsewhere and pass it with --wheel"
        )
    return wheel


def read_pinned_ranks(wheel: Path) -> bytes:
    """The bytes of qwen.tiktoken from the pinned wheel, both sha256 sums checked."""
    data = wheel.read_bytes()
    if _sha256(data) != DASHSCOPE_WHEEL_SHA256:
        raise FormatError(
            f"{wheel}: sha256 {_sha256(data)} is not the pinned {DASHSCOPE_WHEEL_SHA256} "
            f"of {DASHSCOPE_WHEEL}; delete it and fetch again"
        )
    try:
        with zipfile.ZipFile(wheel) as z:
            ranks = z.read(TIKTOKEN_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FormatError(f"{wheel}: no {TIKTOKEN_MEMBER} inside: {exc}") from exc
    if _sha256(ranks) != QWEN_TIKTOKEN_SHA256:
        raise FormatError(
            f"{wheel}: {TIKTOKEN_MEMBER} sha256 {_sha256(ranks)} is not the pinned {QWEN_TIKTOKEN_SHA256}"
        )
    return ranks


def build_qwen2_files(ranks_path: Path, out_dir: Path) -> None:
    """Write tokenizer.json, vocab.json, merges.txt and tokenizer_config.json for a Qwen2 ranks file."""
    from shiptwo.tokenize.bytelevel import QWEN2_ADDED_TOKENS, build_pipeline, byte_level_vocab_from_ranks
    from shiptwo.tokenize.vocabfiles import merges_text, read_tiktoken_ranks, vocab_in_id_order

    ranks = read_tiktoken_ranks(ranks_path)
    if len(ranks) != QWEN2_REGULAR_TOKENS:
        raise FormatError(f"{ranks_path}: {len(ranks)} tokens, Qwen2 has {QWEN2_REGULAR_TOKENS}")
    vocab, merges = byte_level_vocab_from_ranks(ranks, source=ranks_path)
    tok = build_pipeline(vocab, merges, pretokenizer="qwen2")
    tok.save(str(out_dir / "tokenizer.json"), pretty=False)
    (out_dir / "vocab.json").write_text(
        json.dumps(vocab_in_id_order(vocab), ensure_ascii=False), encoding="utf-8"
    )
    (out_dir / "merges.txt").write_text(merges_text(merges), encoding="utf-8", newline="\n")
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": 32768,
        "added_tokens_decoder": {
            str(QWEN2_REGULAR_TOKENS + i): {
                "content": t,
                "special": s,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
            for i, (t, s) in enumerate(QWEN2_ADDED_TOKENS)
        },
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def builder_version() -> str:
    """The version of the code that builds the files: shiptwo's version, the sha256 of the
    builder modules' source and the tokenizers version (it serializes tokenizer.json).

    Cheap (three small files and a metadata lookup): fetch-qwen2's no-op check calls it.
    """
    from importlib.metadata import PackageNotFoundError, version

    from shiptwo import __version__

    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in BUILDER_MODULES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    try:
        tokenizers = version("tokenizers")
    except PackageNotFoundError:
        tokenizers = "absent"
    return f"shiptwo {__version__}; sources sha256:{digest.hexdigest()[:16]}; tokenizers {tokenizers}"


def _provenance() -> dict[str, object]:
    return {
        "source": f"pypi:dashscope=={DASHSCOPE_VERSION}",
        "wheel": DASHSCOPE_WHEEL,
        "wheel_sha256": DASHSCOPE_WHEEL_SHA256,
        "ranks_member": TIKTOKEN_MEMBER,
        "ranks_sha256": QWEN_TIKTOKEN_SHA256,
        "builder": builder_version(),
    }


def _is_built(d: Path) -> bool:
    """Whether `d` holds files built from the pinned ranks by this very builder (else stale)."""
    try:
        doc = json.loads((d / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(doc, dict) or any(doc.get(k) != v for k, v in _provenance().items()):
        return False
    files = doc.get("files") or {}
    return all(
        (d / name).is_file() and (d / name).stat().st_size == files.get(name, {}).get("bytes")
        for name in BUILT_FILES
    )


def _cached_ranks(d: Path) -> bytes | None:
    """The ranks file of an earlier build, if it still has the pinned sha256 (its wheel was checked then)."""
    try:
        data = (d / RANKS_FILE).read_bytes()
    except OSError:
        return None
    return data if _sha256(data) == QWEN_TIKTOKEN_SHA256 else None


def fetch_qwen2(
    *, cache_dir: Path | None = None, wheel: Path | None = None, force: bool = False
) -> tuple[Path, bool]:
    """Build the Qwen2 tokenizer files into <cache_dir>/qwen2-tokenizer; returns (dir, built_now).

    Idempotent: a dir already built from the pinned wheel by this builder is left alone
    (built_now False). One built by another builder version is rebuilt, from its own
    qwen.tiktoken when that still has the pinned sha256 (no download), else from the wheel.
    The build happens in a temp dir renamed into place, so a crash never leaves half a tokenizer.
    """
    root = Path(cache_dir) if cache_dir is not None else shiptwo_cache()
    dest = root / DIR_NAME
    if not force and _is_built(dest):
        return dest, False
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{DIR_NAME}.", dir=root))
    try:
        cached = _cached_ranks(dest) if wheel is None else None
        ranks = (
            cached
            if cached is not None
            else read_pinned_ranks(Path(wheel) if wheel is not None else _download_wheel(work / "download"))
        )
        build = work / DIR_NAME
        build.mkdir()
        (build / RANKS_FILE).write_bytes(ranks)
        build_qwen2_files(build / RANKS_FILE, build)
        provenance = _provenance()
        provenance["files"] = {
            name: {"bytes": (build / name).stat().st_size, "sha256": _sha256((build / name).read_bytes())}
            for name in (*BUILT_FILES, "tokenizer_config.json", RANKS_FILE)
        }
        (build / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            old = work / "old"
            os.replace(dest, old)
        os.replace(build, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest, True
