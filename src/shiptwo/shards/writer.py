"""Writer of pretokenize-bin-v1 shard sets: the shards, progress.json and manifest.json.

Every file appears under its final name only once it is complete (`shiptwo.fileio`: a temp file,
fsynced, renamed). A run goes in order: `prepare_output` checks the output dir and gives the
`Progress` to continue from (fresh, or an interrupted run's, whose shards `verified_shards`
re-hashes); each shard is written with `write_shard` and then recorded with `save_progress`;
`write_manifest` ends the run. Which documents go into which shard is the encoder's business
(`shiptwo.tokenize.corpus`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiptwo import jsonsafe
from shiptwo.errors import FormatError, UsageError
from shiptwo.fileio import atomic_write_bytes
from shiptwo.shards.format import (
    DTYPE,
    MANIFEST,
    MAX_BAD_LINES_LISTED,
    OWN_TEMP,
    PROGRESS,
    PROGRESS_SCHEMA,
    SCHEMA,
    SHARD_GLOB,
    BadLine,
    EosPolicy,
    Position,
)


@dataclass
class Progress:
    """Everything the writer carries from one shard to the next: what progress.json records.

    A run resumed from it writes the same bytes as one that never stopped.
    """

    file_documents: list[int]  # documents so far, per input file
    shards: list[dict[str, Any]] = field(default_factory=list)  # as the manifest lists them
    position: Position = (0, 0, 0)
    documents: int = 0
    tokens: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)  # the first MAX_BAD_LINES_LISTED
    bad_line_count: int = 0

    def add_shard(self, file: str, *, tokens: int, documents: int, sha256: str) -> None:
        """Count a shard just written under its final name."""
        self.shards.append({"file": file, "tokens": tokens, "documents": documents, "sha256": sha256})
        self.tokens += tokens

    def commit(
        self,
        file_documents: Mapping[int, int],
        bad_lines: Sequence[BadLine],
        bad_line_count: int,
        position: Position,
    ) -> None:
        """Count what was read up to `position`: documents per input file index, and bad lines."""
        self.documents += sum(file_documents.values())
        for fi, n in file_documents.items():
            self.file_documents[fi] += n
        self.bad_line_count += bad_line_count
        self.bad_lines.extend(bad_lines[: max(0, MAX_BAD_LINES_LISTED - len(self.bad_lines))])
        self.position = position


def run_settings(
    *,
    tokenizer_sha256: str,
    inputs: Sequence[dict[str, Any]],
    content_field: str,
    eos_policy: str,
    shard_tokens: int,
    on_bad_line: str,
) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (progress.json's `settings`).

    `inputs` are the manifest's `input_files` records; only their path and sha256 count.
    """
    return {
        "tokenizer_sha256": tokenizer_sha256,
        "input_files": [{"path": r["path"], "sha256": r["sha256"]} for r in inputs],
        "content_field": content_field,
        "eos_policy": str(eos_policy),
        "shard_tokens": shard_tokens,
        "on_bad_line": str(on_bad_line),
    }


def write_shard(path: Path, ids: np.ndarray) -> str:
    """Write `ids` as one shard (little-endian u32, nothing else) under `path`; returns its sha256."""
    data = ids.astype(DTYPE, copy=False).tobytes()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _write_json(path: Path, doc: Any) -> None:
    # Two-space indent, UTF-8, trailing newline, atomically.
    atomic_write_bytes(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_record(path: Path) -> Any:
    """The writer's own manifest.json or progress.json, read back to finish or resume a run.

    Read as untrusted (`shiptwo.jsonsafe`): a damaged record is a FormatError naming the file.
    """
    try:
        doc = jsonsafe.parse(jsonsafe.decode_utf8(path.read_bytes()))
    except (OSError, jsonsafe.JsonProblem) as exc:
        raise FormatError(f"{path}: unreadable: {exc}; remove the output dir and start again") from exc
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: not a JSON object; remove the output dir and start again")
    return doc


def save_progress(out: Path, settings: dict[str, Any], progress: Progress) -> None:
    """Record `progress` in `out`/progress.json, after the shard it counts is in place."""
    _write_json(
        out / PROGRESS,
        {
            "schema": PROGRESS_SCHEMA,
            "settings": settings,
            "position": list(progress.position),
            "documents": progress.documents,
            "tokens": progress.tokens,
            "file_documents": progress.file_documents,
            "bad_line_count": progress.bad_line_count,
            "bad_lines": [[b.file, b.line, b.reason] for b in progress.bad_lines],
            "shards": progress.shards,
        },
    )


def _load_progress(path: Path, doc: dict[str, Any], input_count: int) -> Progress:
    """progress.json's content as a Progress, every field type-checked (it may have been edited)."""

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    try:
        position = tuple(doc["position"])
        shards = doc["shards"]
        progress = Progress(
            file_documents=list(doc["file_documents"]),
            shards=shards,
            position=(position[0], position[1], position[2]),
            documents=doc["documents"],
            tokens=doc["tokens"],
            bad_lines=[BadLine(str(b[0]), int(b[1]), str(b[2])) for b in doc["bad_lines"]],
            bad_line_count=doc["bad_line_count"],
        )
        ok = (
            len(position) == 3
            and all(map(count, (*position, progress.documents, progress.tokens, progress.bad_line_count)))
            and position[0] <= input_count
            and len(progress.file_documents) == input_count
            and all(map(count, progress.file_documents))
            and isinstance(shards, list)
            and all(
                isinstance(x, dict)
                and isinstance(x.get("file"), str)
                and isinstance(x.get("sha256"), str)
                and count(x.get("tokens"))
                and count(x.get("documents"))
                for x in shards
            )
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FormatError(
            f"{path}: damaged ({type(exc).__name__}: {jsonsafe.shown(str(exc))}); remove the output dir "
            "and start again"
        ) from exc
    if not ok:
        raise FormatError(
            f"{path}: damaged (a field of the wrong type); remove the output dir and start again"
        )
    return progress


def write_manifest(
    out: Path,
    settings: dict[str, Any],
    progress: Progress,
    *,
    tokenizer: str,
    tokenizer_format: str,
    tokenizer_layout: str,
    tokenizer_files: list[dict[str, str]],
    vocab_size: int,
    eos_token_id: int | None,
    inputs: Sequence[dict[str, Any]],
    corpus_sha256: str,
    audit: dict[str, Any],
    elapsed_seconds: float,
) -> dict[str, Any]:
    """Write `out`/manifest.json, which makes the set complete, and remove progress.json.

    Returns the manifest: its fields in the order docs/pretokenize-bin-v1.md lists them.
    `inputs` are the input files' `{"path", "bytes", "sha256"}` records, in reading order.
    """
    from shiptwo import __version__

    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "producer": {"name": "shiptwo", "version": __version__},
        "tokenizer": tokenizer,
        "tokenizer_format": tokenizer_format,
        "tokenizer_layout": tokenizer_layout,
        "tokenizer_sha256": settings["tokenizer_sha256"],
        "tokenizer_files": tokenizer_files,
        "vocab_size": vocab_size,
        "eos_policy": settings["eos_policy"],
        "eos_token_id": None if settings["eos_policy"] == EosPolicy.NONE else eos_token_id,
        "content_field": settings["content_field"],
        "shard_tokens": settings["shard_tokens"],
        "shard_count": len(progress.shards),
        "total_tokens": progress.tokens,
        "total_documents": progress.documents,
        "input_files": [dict(r, documents=progress.file_documents[i]) for i, r in enumerate(inputs)],
        "corpus_sha256": corpus_sha256,
        "bad_lines": {
            "count": progress.bad_line_count,
            "policy": settings["on_bad_line"],
            "first": [str(b) for b in progress.bad_lines],
        },
        "shards": progress.shards,
        "audit": audit,
        "elapsed_seconds": round(elapsed_seconds, 3),
    }
    _write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _finished_settings(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a finished set's manifest records, keyed as `settings` is."""
    done = read_record(path)
    try:
        return {
            **{k: done.get(k) for k in settings if k != "input_files"},
            "on_bad_line": done.get("bad_lines", {}).get("policy"),
            "input_files": [{"path": f["path"], "sha256": f["sha256"]} for f in done.get("input_files", [])],
        }
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{path}: unreadable: {exc}; remove the output dir and start again") from exc


def prepare_output(out: Path, settings: dict[str, Any], *, resume: bool, force: bool) -> Progress:
    """Check the output dir before a run writes into it; returns the progress to continue from.

    First deletes the writer's own leftover temp files (and nothing else). A new or empty dir,
    or with `force` one holding other files, gives a fresh progress. An interrupted run
    (progress.json) continues only with `resume` and the same settings: its progress, with
    every shard it does not list deleted (`verified_shards` re-hashes the rest). A finished set
    (manifest.json) is accepted only with `resume` and the same settings, and gives a fresh
    progress: the caller returns `read_record(out / MANIFEST)`. UsageError for an output this
    run may not write into, FormatError for a record that cannot be read.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--output {out}: exists and is not a directory; choose a new or empty directory for the shards"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--output {out}: cannot create the directory ({exc.strerror or exc}); choose another path"
        ) from exc
    for tmp in out.iterdir():
        if OWN_TEMP.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink()  # a shard or record half-written when a run died; never under a final name
    fresh = Progress(file_documents=[0] * len(settings["input_files"]))
    manifest, progress = out / MANIFEST, out / PROGRESS
    if manifest.is_file():
        if not resume:
            raise UsageError(f"{out}: holds a finished shard set ({MANIFEST}); choose an empty --output dir")
        done = _finished_settings(manifest, settings)
        changed = sorted(k for k in settings if done.get(k) != settings[k])
        if changed:
            raise UsageError(
                f"{manifest}: the finished run used other settings ({', '.join(changed)}); "
                "choose an empty --output dir"
            )
        return fresh
    if not progress.is_file():
        stray = sorted(out.glob(SHARD_GLOB))
        if stray:
            raise UsageError(
                f"{out}: holds {len(stray)} shards but no {PROGRESS} to resume from; choose an empty dir"
            )
        others = sorted(p.name for p in out.iterdir())
        if others and not force:
            raise UsageError(
                f"--output {out}: not empty ({len(others)} entries, e.g. {others[0]!r}) and holds no "
                f"encode-corpus run ({PROGRESS} or {MANIFEST}); choose a new or empty directory, or pass "
                "--force to write the shards beside those files"
            )
        return fresh
    if not resume:
        raise UsageError(f"{out}: holds an interrupted run ({PROGRESS}); pass --resume to continue it")
    doc = read_record(progress)
    if doc.get("settings") != settings:
        changed = sorted(k for k in settings if doc.get("settings", {}).get(k) != settings[k])
        raise UsageError(
            f"{progress}: the interrupted run used other settings ({', '.join(changed)}); "
            "resume with the same tokenizer, corpus and options, or start in an empty dir"
        )
    resumed = _load_progress(progress, doc, len(settings["input_files"]))
    known = {s["file"] for s in resumed.shards}
    for extra in out.glob(SHARD_GLOB):
        if extra.name not in known:
            extra.unlink()  # written after the last progress record; it is written again
    return resumed


def verified_shards(out: Path, progress: Progress) -> Iterator[np.ndarray]:
    """The ids of every shard `progress` lists, each re-hashed against its recorded sha256 first.

    FormatError for a shard that is missing or whose bytes changed.
    """
    for s in progress.shards:
        path = out / s["file"]
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != s["sha256"]:
            raise FormatError(
                f"{path}: missing or not the shard recorded in {PROGRESS}; start in an empty dir"
            )
        yield np.frombuffer(data, dtype=DTYPE)
