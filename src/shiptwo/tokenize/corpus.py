"""`encode-corpus`: JSONL documents -> pretokenize-bin-v1 shards, audited, deterministic, resumable.

Output (docs/pretokenize-bin-v1.md): `shard-00000.bin`, ... flat little-endian
u32 ids; a shard is closed after the whole document that brings it to >= shard_tokens. EOS goes
before every document but the first (`between`), after every document (`after`) or nowhere.

A shard appears under its final name only when complete (written to a temp file, fsynced,
renamed); `progress.json` records, after every shard, where in the input the next shard starts,
so `resume=True` continues without duplicated or missing documents. The run ends with the
audit (unk ratio, distinct tokens, entropy in bits beside log2(vocab)) and refuses, writing no
manifest, when the unk ratio exceeds the threshold. A vocab with no unk id (byte-level) has an unk
ratio of 0 by construction; its audit says so in `unk_note` and counts in `byte_tokens` how many
of the 256 bytes have a token of their own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from shiptwo.errors import FormatError, UsageError
from shiptwo.tokenize._common import atomic_write_json

SCHEMA = "pretokenize-bin-v1"
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
DEFAULT_SHARD_TOKENS = 10_000_000
DEFAULT_MAX_UNK_RATIO = 0.01
TOP_TOKENS = 20
MAX_BAD_LINES_LISTED = 100
# The only temp names this module creates (`_write_shard`, `atomic_write_json`); nothing else in
# an output dir is ever deleted.
_OWN_TEMP = re.compile(r"\.shard-\d{5,}\.bin\.tmp|\.(?:manifest|progress)\.json\.[A-Za-z0-9_]+\.tmp")


class EosPolicy(StrEnum):
    BETWEEN = "between"
    AFTER = "after"
    NONE = "none"


class OnBadLine(StrEnum):
    ERROR = "error"
    SKIP = "skip"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.bin"


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that gave no document: where it is and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class _Doc:
    file_index: int
    line: int
    offset: int  # byte offset just past this line: where reading resumes
    text: str


@dataclass(frozen=True)
class _Bad:
    file_index: int
    line: int
    offset: int
    bad: BadLine


def list_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and dirs (every *.jsonl below, sorted) into the ordered input list."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(x for x in p.rglob("*.jsonl") if x.is_file())
            if not found:
                raise UsageError(f"{p}: directory holds no *.jsonl files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"{p}: no such corpus file or directory")
    if not files:
        raise UsageError("no corpus files given")
    return files


def _hash_inputs(files: Sequence[Path]) -> tuple[list[dict[str, Any]], str]:
    # corpus_sha256 is the sha256 of all input bytes in order; each file's own sum is kept too.
    corpus = hashlib.sha256()
    records = []
    for f in files:
        h = hashlib.sha256()
        size = 0
        try:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
                    corpus.update(block)
                    size += len(block)
        except OSError as exc:
            raise FormatError(
                f"{f}: corpus file cannot be read ({exc.strerror or exc}); check its permissions"
            ) from exc
        records.append({"path": str(f), "bytes": size, "sha256": h.hexdigest()})
    return records, corpus.hexdigest()


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode text (a lone surrogate, e.g. JSON's legal "\\ud800"), or None.

    Such a string cannot be encoded as UTF-8, so no tokenizer can encode it.
    """
    if text.isascii():
        return None  # the common case, checked at memory speed
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"character {exc.start} is a lone surrogate {text[exc.start]!r}, not valid Unicode text"
    return None


def _read(files: Sequence[Path], content_field: str, start: tuple[int, int, int]) -> Iterator[_Doc | _Bad]:
    """The documents and bad lines of the input files, in order, from a (file, offset, line) position."""
    file_index0, offset0, line0 = start
    for fi in range(file_index0, len(files)):
        path = files[fi]
        offset = offset0 if fi == file_index0 else 0
        lineno = line0 if fi == file_index0 else 0
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise FormatError(
                f"{path}: corpus file cannot be read ({exc.strerror or exc}); check its permissions"
            ) from exc
        with fh:
            fh.seek(offset)
            for raw in fh:
                lineno += 1
                offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    # JSONL is UTF-8; a byte-order mark is tolerated at the start of a file only.
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    why = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start}); re-encode the file as UTF-8"
                    yield _Bad(fi, lineno, offset, BadLine(str(path), lineno, why))
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield _Bad(fi, lineno, offset, BadLine(str(path), lineno, f"invalid JSON ({exc})"))
                    continue
                if not isinstance(obj, dict):
                    yield _Bad(
                        fi,
                        lineno,
                        offset,
                        BadLine(str(path), lineno, f"not a JSON object ({type(obj).__name__})"),
                    )
                    continue
                text = obj.get(content_field)
                if not isinstance(text, str):
                    why = "missing" if content_field not in obj else f"a {type(text).__name__}, not a string"
                    yield _Bad(
                        fi, lineno, offset, BadLine(str(path), lineno, f"field {content_field!r} is {why}")
                    )
                    continue
                problem = unicode_problem(text)
                if problem is not None:
                    yield _Bad(
                        fi, lineno, offset, BadLine(str(path), lineno, f"field {content_field!r}: {problem}")
                    )
                    continue
                yield _Doc(fi, lineno, offset, text)


def read_documents(files: Sequence[Path], *, content_field: str = "content") -> Iterator[str | BadLine]:
    """Each JSONL line's text, or a BadLine (file:line and why) for a line that gives no document.

    Blank lines are skipped. Bad: not UTF-8, invalid JSON, not an object, the field missing or not
    a string, or a string that is not valid Unicode (a lone surrogate such as JSON's "\\ud800").
    """
    for item in _read(files, content_field, (0, 0, 0)):
        yield item.bad if isinstance(item, _Bad) else item.text


def _batches(
    items: Iterator[_Doc | _Bad], batch_chars: int, on_bad_line: OnBadLine
) -> Iterator[list[_Doc | _Bad]]:
    batch: list[_Doc | _Bad] = []
    chars = 0
    for item in items:
        if isinstance(item, _Bad) and on_bad_line is OnBadLine.ERROR:
            raise FormatError(f"{item.bad}; fix the line or pass --on-bad-line skip")
        batch.append(item)
        if isinstance(item, _Doc):
            chars += len(item.text)
            if chars >= batch_chars:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch


# -- encoding, in process or in worker processes ------------------------------------------------

_worker_tokenizer: Any = None


def _worker_init(tokenizer_path: str, pretokenizer: str | None) -> None:
    global _worker_tokenizer
    from shiptwo.tokenize import load_tokenizer

    _worker_tokenizer = load_tokenizer(tokenizer_path, pretokenizer=pretokenizer)


def _encode_flat(tokenizer: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = tokenizer.encode_batch(texts)
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint32, count=int(lengths.sum()))
    return flat, lengths


def _worker_encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _encode_flat(_worker_tokenizer, texts)


class _Encoder:
    """Encodes batches in order: in this process, or in a bounded pipeline of worker processes."""

    def __init__(self, tokenizer: Any, tokenizer_path: Path, pretokenizer: str | None, workers: int):
        self.tokenizer = tokenizer
        self.pool = None
        self.workers = workers
        if workers > 1:
            import multiprocessing

            # spawn, not fork: a forked `tokenizers` would disable its own threads with a warning.
            ctx = multiprocessing.get_context("spawn")
            self.pool = ctx.Pool(
                workers, initializer=_worker_init, initargs=(str(tokenizer_path), pretokenizer)
            )

    def map(
        self, batches: Iterator[list[_Doc | _Bad]]
    ) -> Iterator[tuple[list[_Doc | _Bad], np.ndarray, np.ndarray]]:
        if self.pool is None:
            rust = (
                self.tokenizer.format == "byte-level" or getattr(self.tokenizer, "engine", "") == "tokenizers"
            )
            if not rust:
                for batch in batches:
                    flat, lengths = _encode_flat(
                        self.tokenizer, [d.text for d in batch if isinstance(d, _Doc)]
                    )
                    yield batch, flat, lengths
                return
            # `tokenizers` releases the GIL while it encodes: keeping two batches in flight lets the
            # next batch fill the cores that the current batch's longest documents leave idle, and
            # reading and writing overlap with encoding.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=2) as threads:
                in_flight: deque[tuple[list[_Doc | _Bad], Any]] = deque()
                for batch in batches:
                    texts = [d.text for d in batch if isinstance(d, _Doc)]
                    in_flight.append((batch, threads.submit(_encode_flat, self.tokenizer, texts)))
                    if len(in_flight) >= 2:
                        b, future = in_flight.popleft()
                        yield b, *future.result()
                while in_flight:
                    b, future = in_flight.popleft()
                    yield b, *future.result()
            return
        pending: deque[tuple[list[_Doc | _Bad], Any]] = deque()
        for batch in batches:
            texts = [d.text for d in batch if isinstance(d, _Doc)]
            pending.append((batch, self.pool.apply_async(_worker_encode, (texts,))))
            if len(pending) >= 2 * self.workers:
                b, result = pending.popleft()
                yield b, *result.get()
        while pending:
            b, result = pending.popleft()
            yield b, *result.get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# -- the shard writer: a small state machine ------------------------------------------------------


@dataclass
class _State:
    shards: list[dict[str, Any]] = field(default_factory=list)
    position: tuple[int, int, int] = (0, 0, 0)  # (file index, byte offset, line) after the last shard
    documents: int = 0
    tokens: int = 0
    file_documents: list[int] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    bad_line_count: int = 0


def _write_shard(path: Path, ids: np.ndarray) -> str:
    data = ids.astype("<u4", copy=False).tobytes()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def _settings(
    tokenizer_sha: str,
    inputs: list[dict[str, Any]],
    content_field: str,
    eos: EosPolicy,
    shard_tokens: int,
    on_bad_line: OnBadLine,
) -> dict[str, Any]:
    return {
        "tokenizer_sha256": tokenizer_sha,
        "input_files": [{"path": r["path"], "sha256": r["sha256"]} for r in inputs],
        "content_field": content_field,
        "eos_policy": str(eos),
        "shard_tokens": shard_tokens,
        "on_bad_line": str(on_bad_line),
    }


def _tokenizer_identity(report: Any) -> tuple[str, list[dict[str, str]]]:
    combined = hashlib.sha256()
    files = []
    for p in report.files:
        data = Path(p).read_bytes()
        combined.update(data)
        files.append({"file": Path(p).name, "sha256": hashlib.sha256(data).hexdigest()})
    return combined.hexdigest(), files


def _place_eos(
    flat: np.ndarray, lengths: np.ndarray, eos: EosPolicy, eos_id: int, *, first_document: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Insert EOS ids into one batch's concatenated documents; returns the new ids and lengths."""
    if eos is EosPolicy.NONE or not lengths.size:
        return flat, lengths
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    if eos is EosPolicy.AFTER:
        return np.insert(flat, starts + lengths, eos_id), lengths + 1
    # `between`: before every document except the first of the whole corpus.
    skip = 1 if first_document else 0
    lengths = lengths + 1
    if skip:
        lengths[0] -= 1
    return np.insert(flat, starts[skip:], eos_id), lengths


class _ShardWriter:
    """Collects whole documents into shards; closes a shard after the document that fills it.

    State between shards is only what `progress.json` records, so a run resumed from it writes
    the same bytes as one that never stopped.
    """

    def __init__(
        self,
        out: Path,
        settings: dict[str, Any],
        state: _State,
        histogram: np.ndarray,
        *,
        vocab_size: int,
        shard_tokens: int,
        source: Path,
    ):
        self.out = out
        self.source = source
        self.settings = settings
        self.state = state
        self.histogram = histogram
        self.vocab_size = vocab_size
        self.shard_tokens = shard_tokens
        self.documents_seen = state.documents
        self._parts: list[np.ndarray] = []
        self._tokens = 0
        self._docs: Counter[int] = Counter()  # file index -> documents in the open shard
        self._bad: list[BadLine] = []
        self._bad_count = 0
        self._position = state.position

    def add_batch(self, batch: list[_Doc | _Bad], flat: np.ndarray, lengths: np.ndarray) -> None:
        """Take one encoded batch (EOS placed), in reading order; may close shards."""
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        cut = 0  # start in `flat` of the documents not yet in `_parts`
        k = 0
        for item in batch:
            self._position = (item.file_index, item.offset, item.line)
            if isinstance(item, _Bad):
                self._bad_count += 1
                if len(self.state.bad_lines) + len(self._bad) < MAX_BAD_LINES_LISTED:
                    self._bad.append(item.bad)
                continue
            self._tokens += int(lengths[k])
            k += 1
            self.documents_seen += 1
            self._docs[item.file_index] += 1
            if self._tokens >= self.shard_tokens:
                self._parts.append(flat[cut : offsets[k]])
                cut = int(offsets[k])
                self._close_shard()
        if cut < flat.size:
            self._parts.append(flat[cut:])

    def finish(self) -> None:
        """Close the last shard (if it holds tokens) and record the end of the input."""
        if self._tokens > 0:
            self._close_shard()
        elif self._docs or self._bad_count:
            self._commit()  # trailing empty documents or bad lines: counted, no shard

    def _close_shard(self) -> None:
        ids = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.uint32)
        if ids.size and int(ids.max()) >= self.vocab_size:
            raise FormatError(
                f"{self.source}: the tokenizer produced id {int(ids.max())} >= its vocab_size {self.vocab_size}; "
                "its vocab and added tokens disagree"
            )
        name = shard_name(len(self.state.shards))
        sha = _write_shard(self.out / name, ids)
        self.histogram += np.bincount(ids, minlength=self.vocab_size)
        self.state.shards.append(
            {"file": name, "tokens": int(ids.size), "documents": sum(self._docs.values()), "sha256": sha}
        )
        self.state.tokens += int(ids.size)
        self._commit()

    def _commit(self) -> None:
        state = self.state
        state.documents += sum(self._docs.values())
        for fi, n in self._docs.items():
            state.file_documents[fi] += n
        state.bad_line_count += self._bad_count
        state.bad_lines.extend(self._bad[: max(0, MAX_BAD_LINES_LISTED - len(state.bad_lines))])
        state.position = self._position
        _save_progress(self.out, self.settings, state)
        self._parts, self._tokens = [], 0
        self._docs, self._bad, self._bad_count = Counter(), [], 0


def encode_corpus(
    tokenizer_path: str | Path,
    corpus: Sequence[str | Path],
    output: str | Path,
    *,
    content_field: str = "content",
    eos_policy: str = "between",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int = 1,
    max_unk_ratio: float | None = DEFAULT_MAX_UNK_RATIO,
    on_bad_line: str = "error",
    resume: bool = False,
    force: bool = False,
    pretokenizer: str | None = None,
    batch_chars: int = 1 << 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode JSONL documents into pretokenize-bin-v1 shards; returns the manifest written.

    `max_unk_ratio=None` accepts any unk ratio (the audit still reports it). Raises FormatError
    (no manifest written) when the unk ratio exceeds the threshold or a bad line meets
    `on_bad_line="error"`; UsageError for bad options or an output dir holding another run.

    The output dir must be new or empty, an interrupted run (`progress.json`, continued only with
    `resume=True`) or a finished one (`manifest.json`, returned as is with `resume=True` and the same
    settings). A dir holding other files is refused unless `force=True`, which writes the shards
    beside them and leaves them alone. Only this module's own temp files (`.shard-*.bin.tmp`,
    `.manifest.json.*.tmp`, `.progress.json.*.tmp`) are ever deleted.
    """
    from shiptwo import __version__
    from shiptwo.tokenize import detect_format, load_detected

    started = time.perf_counter()
    try:
        eos = EosPolicy(eos_policy)
        bad_mode = OnBadLine(on_bad_line)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if shard_tokens < 1:
        raise UsageError(f"--shard-tokens must be >= 1, got {shard_tokens}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if max_unk_ratio is not None and not 0.0 <= max_unk_ratio <= 1.0:
        raise UsageError(f"--max-unk-ratio must be in [0, 1], got {max_unk_ratio}")
    out = Path(output)
    files = list_inputs(corpus)
    report = detect_format(tokenizer_path)
    tokenizer = load_detected(report, pretokenizer=pretokenizer)
    if eos is not EosPolicy.NONE and tokenizer.eos_id is None:
        raise UsageError(
            f"{tokenizer_path}: no EOS token (</s>, <|endoftext|>, <eos>, <|eos|>); use --eos-policy none"
        )
    tokenizer_sha, tokenizer_files = _tokenizer_identity(report)
    inputs, corpus_sha = _hash_inputs(files)
    settings = _settings(tokenizer_sha, inputs, content_field, eos, shard_tokens, bad_mode)

    state = _State(file_documents=[0] * len(files))
    histogram = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    state, histogram = _prepare_output(out, settings, resume, state, histogram, force=force)
    if (out / MANIFEST).is_file():
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))

    from tqdm import tqdm

    total_bytes = sum(r["bytes"] for r in inputs)
    done_bytes = sum(r["bytes"] for r in inputs[: state.position[0]]) + state.position[1]
    bar = tqdm(
        total=total_bytes,
        initial=done_bytes,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=None if progress else True,
        desc="encode-corpus",
    )
    encoder = _Encoder(tokenizer, Path(tokenizer_path), pretokenizer, workers)
    writer = _ShardWriter(
        out,
        settings,
        state,
        histogram,
        vocab_size=tokenizer.vocab_size,
        shard_tokens=shard_tokens,
        source=Path(tokenizer_path),
    )
    eos_id = tokenizer.eos_id if tokenizer.eos_id is not None else 0  # unused under --eos-policy none
    tokens_this_run = 0
    run_start = time.perf_counter()
    try:
        items = _read(files, content_field, state.position)
        for batch, flat, lengths in encoder.map(_batches(items, batch_chars, bad_mode)):
            flat, lengths = _place_eos(flat, lengths, eos, eos_id, first_document=writer.documents_seen == 0)
            writer.add_batch(batch, flat, lengths)
            tokens_this_run += int(flat.size)
            if batch:
                last = batch[-1]
                bar.update(sum(r["bytes"] for r in inputs[: last.file_index]) + last.offset - bar.n)
                rate = tokens_this_run / max(time.perf_counter() - run_start, 1e-9)
                bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
        writer.finish()
    finally:
        encoder.close()
        bar.close()

    audit = _audit(tokenizer, histogram, state.tokens, max_unk_ratio)
    if max_unk_ratio is not None and audit["unk_ratio"] > max_unk_ratio:
        raise FormatError(
            f"{out}: unk ratio {audit['unk_ratio']:.4%} ({audit['unk_count']} of {state.tokens} tokens) exceeds "
            f"the threshold {max_unk_ratio:.2%}; the vocab does not cover this corpus (wrong tokenizer?); "
            "no manifest written; raise --max-unk-ratio or pass --allow-unk to accept it"
        )
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "producer": {"name": "shiptwo", "version": __version__},
        "tokenizer": str(Path(tokenizer_path)),
        "tokenizer_format": str(report.format),
        "tokenizer_layout": getattr(tokenizer, "layout", str(report.layout)) or str(report.layout),
        "tokenizer_sha256": tokenizer_sha,
        "tokenizer_files": tokenizer_files,
        "vocab_size": tokenizer.vocab_size,
        "eos_policy": str(eos),
        "eos_token_id": tokenizer.eos_id if eos is not EosPolicy.NONE else None,
        "content_field": content_field,
        "shard_tokens": shard_tokens,
        "shard_count": len(state.shards),
        "total_tokens": state.tokens,
        "total_documents": state.documents,
        "input_files": [dict(r, documents=state.file_documents[i]) for i, r in enumerate(inputs)],
        "corpus_sha256": corpus_sha,
        "bad_lines": {
            "count": state.bad_line_count,
            "policy": str(bad_mode),
            "first": [str(b) for b in state.bad_lines],
        },
        "shards": state.shards,
        "audit": audit,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _audit(tokenizer: Any, histogram: np.ndarray, total: int, max_unk_ratio: float | None) -> dict[str, Any]:
    unk_id = tokenizer.unk_id
    unk_count = int(histogram[unk_id]) if unk_id is not None else 0
    nonzero = histogram[histogram > 0]
    if total:
        p = nonzero / total
        entropy = float(-(p * np.log2(p)).sum())
    else:
        entropy = 0.0
    # Stable order: by count descending, then id ascending.
    order = np.lexsort((np.arange(histogram.size), -histogram))[:TOP_TOKENS]
    top = [
        {"id": int(i), "token": tokenizer.id_to_piece(int(i)), "count": int(histogram[i])}
        for i in order
        if histogram[i] > 0
    ]
    byte_tokens = _byte_tokens(tokenizer)
    if unk_id is not None:
        unk_note = f"ids equal to unk_token_id {unk_id} (bytes or text the vocab cannot spell)"
    else:
        # With no unk id the ratio cannot be anything but 0: say so, and say whether every byte has
        # a token of its own (if not, such bytes would be dropped, not counted).
        unk_note = f"no unk token: always 0; {byte_tokens} of 256 bytes have a token of their own" + (
            "" if byte_tokens == 256 else ", bytes without one are not counted here"
        )
    return {
        "unk_token_id": unk_id,
        "unk_count": unk_count,
        "unk_ratio": unk_count / total if total else 0.0,
        "unk_note": unk_note,
        "byte_tokens": byte_tokens,
        "max_unk_ratio": max_unk_ratio,
        "distinct_tokens": int(nonzero.size),
        "entropy_bits": round(entropy, 6),
        "max_entropy_bits": round(math.log2(tokenizer.vocab_size), 6),
        "top_tokens": top,
    }


def _byte_tokens(tokenizer: Any) -> int:
    """How many of the 256 bytes have a single-byte token in the vocab (either format)."""
    from shiptwo.tokenize._common import HEX_BYTE_KEYS, bytes_to_unicode

    if str(tokenizer.format) == "hex-byte":
        return sum(key in tokenizer.vocab for key in HEX_BYTE_KEYS)
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=False)
    return sum(char in vocab for char in bytes_to_unicode().values())


def _save_progress(out: Path, settings: dict[str, Any], state: _State) -> None:
    atomic_write_json(
        out / PROGRESS,
        {
            "schema": f"{SCHEMA}/progress",
            "settings": settings,
            "position": list(state.position),
            "documents": state.documents,
            "tokens": state.tokens,
            "file_documents": state.file_documents,
            "bad_line_count": state.bad_line_count,
            "bad_lines": [[b.file, b.line, b.reason] for b in state.bad_lines],
            "shards": state.shards,
        },
    )


def _prepare_output(
    out: Path,
    settings: dict[str, Any],
    resume: bool,
    state: _State,
    histogram: np.ndarray,
    *,
    force: bool = False,
) -> tuple[_State, np.ndarray]:
    """Check the output dir; on resume, reload the progress and the histogram of finished shards."""
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
        if _OWN_TEMP.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink()  # a shard or manifest half-written when a run died; never under a final name
    manifest, progress = out / MANIFEST, out / PROGRESS
    if manifest.is_file():
        if resume:
            try:
                done = json.loads(manifest.read_text(encoding="utf-8"))
                done_settings = {
                    **{k: done.get(k) for k in settings if k != "input_files"},
                    "on_bad_line": done.get("bad_lines", {}).get("policy"),
                    "input_files": [
                        {"path": f["path"], "sha256": f["sha256"]} for f in done.get("input_files", [])
                    ],
                }
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise FormatError(
                    f"{manifest}: unreadable: {exc}; remove the output dir and start again"
                ) from exc
            changed = sorted(k for k in settings if done_settings.get(k) != settings[k])
            if changed:
                raise UsageError(
                    f"{manifest}: the finished run used other settings ({', '.join(changed)}); "
                    "choose an empty --output dir"
                )
            return state, histogram
        raise UsageError(f"{out}: holds a finished shard set ({MANIFEST}); choose an empty --output dir")
    if not progress.is_file():
        stray = sorted(out.glob("shard-*.bin"))
        if stray:
            raise UsageError(
                f"{out}: holds {len(stray)} shards but no {PROGRESS} to resume from; choose an empty dir"
            )
        others = sorted(p.name for p in out.iterdir())
        if others and not force:
            raise UsageError(
                f"--output {out}: not empty ({len(others)} entries, e.g. {others[0]!r}) and holds no encode-corpus "
                f"run ({PROGRESS} or {MANIFEST}); choose a new or empty directory, or pass --force to write the "
                "shards beside those files"
            )
        return state, histogram
    if not resume:
        raise UsageError(f"{out}: holds an interrupted run ({PROGRESS}); pass --resume to continue it")
    try:
        doc = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FormatError(f"{progress}: unreadable: {exc}; remove the output dir and start again") from exc
    if doc.get("settings") != settings:
        changed = sorted(k for k in settings if doc.get("settings", {}).get(k) != settings[k])
        raise UsageError(
            f"{progress}: the interrupted run used other settings ({', '.join(changed)}); "
            "resume with the same tokenizer, corpus and options, or start in an empty dir"
        )
    state.shards = doc["shards"]
    state.position = tuple(doc["position"])  # type: ignore[assignment]
    state.documents = doc["documents"]
    state.tokens = doc["tokens"]
    state.file_documents = doc["file_documents"]
    state.bad_line_count = doc["bad_line_count"]
    state.bad_lines = [BadLine(*b) for b in doc["bad_lines"]]
    known = {s["file"] for s in state.shards}
    for extra in out.glob("shard-*.bin"):
        if extra.name not in known:
            extra.unlink()  # written after the last progress record; it is written again
    for s in state.shards:
        path = out / s["file"]
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != s["sha256"]:
            raise FormatError(
                f"{path}: missing or not the shard recorded in {PROGRESS}; start in an empty dir"
            )
        histogram += np.bincount(np.frombuffer(data, dtype="<u4"), minlength=histogram.size)
    return state, histogram
