"""`encode-corpus`: JSONL documents -> pretokenize-bin-v1 shards, audited, deterministic, resumable.

The pipeline: read the JSONL (`jsonl`), encode it in batches (in process or in worker processes,
in input order), place EOS ids by the policy, and pack whole documents into shards, each closed
after the document that brings it to >= shard_tokens; `shiptwo.shards.writer` writes the files.
The audit (unk ratio, distinct tokens, entropy in bits beside log2(vocab)) refuses a corpus whose
unk ratio exceeds the threshold: no manifest. A vocab with no unk id (byte-level) has an unk ratio
of 0 by construction; its audit says so in `unk_note`, and `byte_tokens` counts how many of the
256 bytes have a token of their own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import re
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shiptwo.errors import FormatError, UsageError
from shiptwo.shards import writer
from shiptwo.shards.format import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    DEFAULT_MAX_UNK_RATIO,
    DEFAULT_SHARD_TOKENS,
    MANIFEST,
    MAX_BAD_LINES_LISTED,
    BadLine,
    EosPolicy,
    OnBadLine,
    Position,
    shard_name,
)
from shiptwo.shards.writer import Progress

# Called through this module's own name, as `_place_eos` and `_prepare_output` are: the controls of
# falsifiers/test_shard_corpus.py plant their defects in these names.
from shiptwo.shards.writer import write_shard as _write_shard
from shiptwo.tokenize._common import EOS_CANDIDATES
from shiptwo.tokenize.bytelevel import QWEN2_PRETOKENIZE_REGEX
from shiptwo.tokenize.detect import FormatReport, VocabFormat, count_byte_chars, count_hex_keys
from shiptwo.tokenize.jsonl import (
    _Bad,
    _Doc,
    hash_inputs,
    list_inputs,
    read_batches,
)

TOP_TOKENS = 20
T = TypeVar("T")


# -- encoding, in process or in worker processes ------------------------------------------------

_worker_tokenizer: Any = None


def _worker_init(report: FormatReport, pretokenizer: str | None, threads: int) -> None:
    """A worker process loads the vocab its parent detected (no second detection pass) and, unless
    RAYON_NUM_THREADS says otherwise, gives `tokenizers` its share of the cores, not all of them:
    N workers each with every core would oversubscribe the machine N times over."""
    global _worker_tokenizer
    from shiptwo.tokenize import load_detected

    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # read when tokenizers first encodes
    _worker_tokenizer = load_detected(report, pretokenizer=pretokenizer)


# -- long documents: encoded in pieces cut where no token can cross -------------------------------

# A document longer than this is cut into pieces of about this many characters where the
# tokenizer allows it (`_cut_finder`), and pieces are encoded this many characters at a time, so
# the encoder's memory (`tokenizers` keeps ~100 bytes per token and 16 per byte while it works;
# the hex-byte merge heap more) is bounded by the piece budget, not by the longest document.
PIECE_CHARS = 1 << 20
GROUP_CHARS = 4 * PIECE_CHARS
# Where Qwen2's and GPT-2's pre-tokenizer regexes end a pre-token whatever lies beyond the cut:
# between an ASCII letter or digit and a space before an ASCII letter (the space begins the next
# word's pre-token), and after a newline that follows a non-space and precedes a printable ASCII
# character (the newline ends its pre-token). ASCII on both sides keeps NFC from composing across.
_CUT = re.compile(r"(?<=[A-Za-z0-9])(?= [A-Za-z])|(?<=\S\n)(?=[!-~])")
_GPT2_PRE = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_QWEN2_PRE = [
    {"type": "Split", "pattern": {"Regex": QWEN2_PRETOKENIZE_REGEX}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
]
# find(text, lo, hi): the first safe cut in [lo, hi), or None.
_HEX_TOKEN = re.compile(r"(?:[0-9a-f]{2})+")
CutFinder = Callable[[str, int, int], int | None]
_cut_finders: weakref.WeakKeyDictionary[Any, CutFinder | None] = weakref.WeakKeyDictionary()


def _steps_are(steps: Any, wanted: list[dict[str, Any]]) -> bool:
    """Whether `steps` (serialized pre-tokenizers) are `wanted`, each with at least its fields."""
    return (
        isinstance(steps, list)
        and len(steps) == len(wanted)
        and all(
            isinstance(got, dict) and want.items() <= got.items()
            for want, got in zip(wanted, steps, strict=True)
        )
    )


def _byte_level_cuts(tokenizer: Any) -> CutFinder | None:
    """`_CUT`, for Qwen2's or GPT-2's pre-tokenizer (no prefix space), no normalizer or NFC, and no
    added token that holds whitespace or strips it; else None (an unknown pre-tokenizer)."""
    tok = tokenizer.tokenizer
    pre = json.loads(tok.pre_tokenizer.__getstate__()) if tok.pre_tokenizer is not None else {}
    norm = json.loads(tok.normalizer.__getstate__()) if tok.normalizer is not None else {"type": "NFC"}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    known = _steps_are(steps, [_GPT2_PRE]) or _steps_are(steps, _QWEN2_PRE)
    added = tok.get_added_tokens_decoder().values()
    if not known or norm != {"type": "NFC"}:
        return None
    if any(t.lstrip or t.rstrip or any(c.isspace() for c in t.content) for t in added):
        return None

    def find(text: str, lo: int, hi: int) -> int | None:
        m = _CUT.search(text, lo, hi)
        return m.start() if m else None

    return find


def _hex_byte_cuts(tokenizer: Any) -> CutFinder | None:
    """Cuts between two ASCII characters whose byte pair lies inside no token of the vocab.

    A hex-byte text is one word, but no merge can then span the cut: each merge pass in file
    order, left to right, meets the cut as a fresh start on its right, so the pieces' ids are
    the whole text's. None when every ASCII pair occurs inside some token.
    """
    inside = bytearray(128 * 128)  # inside[a * 128 + b]: the byte pair (a, b) is inside a token
    for token in tokenizer.vocab:
        if len(token) > 2 and _HEX_TOKEN.fullmatch(token):
            data = bytes.fromhex(token)
            for a, b in itertools.pairwise(data):
                if a < 128 and b < 128:
                    inside[a * 128 + b] = 1
    if all(inside):
        return None

    def find(text: str, lo: int, hi: int) -> int | None:
        for p in range(max(lo, 1), min(hi, len(text))):
            a, b = ord(text[p - 1]), ord(text[p])
            if a < 128 and b < 128 and not inside[a * 128 + b]:
                return p
        return None

    return find


def _cut_finder(tokenizer: Any) -> CutFinder | None:
    """Where a text may be cut so that its pieces encode to exactly the ids of the whole; None
    when no such place is known for this tokenizer (its documents are encoded whole)."""
    if tokenizer in _cut_finders:
        return _cut_finders[tokenizer]
    if tokenizer.format == VocabFormat.BYTE_LEVEL:
        found = _byte_level_cuts(tokenizer)
    else:
        found = _hex_byte_cuts(tokenizer)
    _cut_finders[tokenizer] = found
    return found


def _cuts(text: str, find: CutFinder, piece_chars: int = PIECE_CHARS) -> list[int]:
    """Where `text` is cut into pieces of about `piece_chars` (longer only where `find` finds no cut):
    the pieces are text[c[i]:c[i + 1]], from 0 to len(text)."""
    cuts = [0]
    while len(text) - cuts[-1] > piece_chars:
        start = cuts[-1]
        # Nearest first: the last eighth of the budget, then its second half, then past it.
        cut = find(text, start + piece_chars - piece_chars // 8, start + piece_chars)
        if cut is None:
            cut = find(text, start + piece_chars // 2, start + piece_chars)
        if cut is None:
            cut = find(text, start + piece_chars, len(text))
        if cut is None:
            break
        cuts.append(cut)
    cuts.append(len(text))
    return cuts


def _encode_flat(tokenizer: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The documents' ids, concatenated, and each document's length; long documents in pieces."""
    find = _cut_finder(tokenizer) if any(len(t) > PIECE_CHARS for t in texts) else None
    if find is None:
        encoded = tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint32, count=int(lengths.sum()))
        return flat, lengths
    # Pieces are sliced only when their group is encoded: one group's pieces and ids in memory.
    parts: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    group: list[tuple[int, str]] = []  # (document index, piece)
    size = 0

    def encode_group() -> None:
        encoded = tokenizer.encode_batch([piece for _, piece in group])
        for (doc, _), ids in zip(group, encoded, strict=True):
            lengths[doc] += len(ids)
        parts.append(np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint32))

    for doc, text in enumerate(texts):
        for a, b in itertools.pairwise(_cuts(text, find, PIECE_CHARS)):
            group.append((doc, text[a:b]))
            size += b - a
            if size >= GROUP_CHARS:
                encode_group()
                group, size = [], 0
    if group:
        encode_group()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32), lengths


def _worker_encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _encode_flat(_worker_tokenizer, texts)


def _texts(batch: list[_Doc | _Bad]) -> list[str]:
    return [d.text for d in batch if isinstance(d, _Doc)]


def _in_order(
    batches: Iterator[list[_Doc | _Bad]],
    submit: Callable[[list[str]], Callable[[], tuple[np.ndarray, np.ndarray]]],
    depth: int,
) -> Iterator[tuple[list[_Doc | _Bad], np.ndarray, np.ndarray]]:
    """A bounded pipeline: up to `depth` batches submitted, results taken back in input order."""
    pending: deque[tuple[list[_Doc | _Bad], Callable[[], tuple[np.ndarray, np.ndarray]]]] = deque()
    for batch in batches:
        pending.append((batch, submit(_texts(batch))))
        if len(pending) >= depth:
            b, result = pending.popleft()
            yield b, *result()
    while pending:
        b, result = pending.popleft()
        yield b, *result()


# How many batches the reader thread parses ahead of the encoder: enough to keep it fed through
# a slow stretch of input, few enough that memory stays a few batches (each at most about
# batch_chars characters plus one document of up to max_document_bytes).
READ_AHEAD = 4


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item` on the bounded `q`, waiting for room; False (not put) once `stop` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read_ahead(items: Iterator[T], depth: int = READ_AHEAD) -> Generator[T, None, None]:
    """`items`, produced in a thread of their own up to `depth` ahead of the consumer.

    The JSONL reading, parsing and checking then run while the encoder works (it releases the
    GIL). An error raised producing them (a bad line under --on-bad-line error, an unreadable
    file) is raised here, in its place: after the items before it, as a serial read would.
    Closing this generator stops the thread.
    """
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(q, (True, item), stop):
                    return
            _put(q, (False, None), stop)
        except BaseException as exc:  # handed to the consumer, who raises it in its place
            _put(q, (False, exc), stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the reading generator closes its file now, not when collected

    thread = threading.Thread(target=produce, name="encode-corpus-reader", daemon=True)
    thread.start()
    try:
        while True:
            more, item = q.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Encoder:
    """Encodes batches in order: in this process, or in a bounded pipeline of worker processes.

    Worker processes start at construction, so they load the vocab while this process loads its
    own copy (`tokenizer`, set before `map`).
    """

    def __init__(self, report: FormatReport, pretokenizer: str | None, workers: int):
        self.tokenizer: Any = None
        self.pool = None
        self.workers = workers
        if workers > 1:
            import multiprocessing

            # spawn, not fork: a forked `tokenizers` would disable its own threads with a warning.
            ctx = multiprocessing.get_context("spawn")
            threads = max(1, (os.cpu_count() or 1) // workers)
            self.pool = ctx.Pool(workers, initializer=_worker_init, initargs=(report, pretokenizer, threads))

    def map(
        self, batches: Iterator[list[_Doc | _Bad]]
    ) -> Iterator[tuple[list[_Doc | _Bad], np.ndarray, np.ndarray]]:
        """Each batch with its documents' ids, concatenated, and their lengths, in input order."""
        if self.pool is not None:
            pool = self.pool
            yield from _in_order(
                batches, lambda texts: pool.apply_async(_worker_encode, (texts,)).get, 2 * self.workers
            )
            return
        tokenizer = self.tokenizer
        if tokenizer.format == VocabFormat.BYTE_LEVEL or getattr(tokenizer, "engine", "") == "tokenizers":
            # `tokenizers` releases the GIL while it encodes: keeping two batches in flight lets the
            # next batch fill the cores that the current batch's longest documents leave idle, and
            # reading and writing overlap with encoding.
            with ThreadPoolExecutor(max_workers=2) as threads:
                yield from _in_order(
                    batches, lambda texts: threads.submit(_encode_flat, tokenizer, texts).result, 2
                )
            return
        for batch in batches:
            yield batch, *_encode_flat(tokenizer, _texts(batch))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# -- EOS placement and packing documents into shards ----------------------------------------------


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
    """Writes shards and progress records in a thread of its own, behind the packer.

    Jobs run in the order handed over, at most `depth` waiting, so memory holds at most `depth`
    + 1 closed shards beside the one being packed. After a job fails the rest are dropped (the
    progress record stays at the last shard written, as if the run had died there) and the
    error, even a KeyboardInterrupt, is raised to the caller at its next call. `state` and
    `histogram` belong to the writer thread until `close`.
    """

    def __init__(
        self, out: Path, settings: dict[str, Any], state: Progress, histogram: np.ndarray, *, depth: int = 1
    ):
        self.out = out
        self.settings = settings
        self.state = state
        self.histogram = histogram
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="encode-corpus-writer", daemon=True)
        self._thread.start()

    def shard(self, name: str, ids: np.ndarray, *, documents: int) -> None:
        """Write `ids` (not changed afterwards) as shard `name`, count it in the audit histogram
        and in the progress."""

        def write() -> None:
            sha = _write_shard(self.out / name, ids)
            self.histogram += np.bincount(ids, minlength=self.histogram.size)
            self.state.add_shard(name, tokens=int(ids.size), documents=documents, sha256=sha)

        self._put(write)

    def commit(self, documents: Counter[int], bad: list[BadLine], bad_count: int, position: Position) -> None:
        """Count what was read up to `position` and record the progress in progress.json."""

        def record() -> None:
            self.state.commit(documents, bad, bad_count, position)
            writer.save_progress(self.out, self.settings, self.state)

        self._put(record)

    def close(self, *, check: bool = True) -> None:
        """Wait for every job handed over; with `check`, raise the first error one met."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if check and self._error is not None:
            raise self._error

    def _put(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put(job)  # never blocks for good: the thread takes jobs until it sees None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # raised to the caller by _put or close
                    self._error = exc


class _Packer:
    """Packs whole documents into shards, a small state machine: a shard is closed after the
    document that brings it to `shard_tokens`, then written and recorded in progress.json by a
    `_ShardWriter`, behind.

    State between shards is only what `Progress` (progress.json) records, so a run resumed from
    it writes the same bytes as one that never stopped.
    """

    def __init__(
        self,
        out: Path,
        settings: dict[str, Any],
        state: Progress,
        histogram: np.ndarray,
        *,
        vocab_size: int,
        shard_tokens: int,
        source: Path,
    ):
        self.source = source
        self.vocab_size = vocab_size
        self.shard_tokens = shard_tokens
        self.documents_seen = state.documents
        self._shard_count = len(state.shards)
        self._listed = len(state.bad_lines)  # bad lines progress.json lists so far
        self._parts: list[np.ndarray] = []
        self._tokens = 0
        self._docs: Counter[int] = Counter()  # file index -> documents in the open shard
        self._bad: list[BadLine] = []
        self._bad_count = 0
        self._position = state.position
        self._writer = _ShardWriter(out, settings, state, histogram)

    def add_batch(self, batch: list[_Doc | _Bad], flat: np.ndarray, lengths: np.ndarray) -> None:
        """Take one encoded batch (EOS placed), in reading order; may close shards."""
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        cut = 0  # start in `flat` of the documents not yet in `_parts`
        k = 0
        for item in batch:
            self._position = (item.file_index, item.offset, item.line)
            if isinstance(item, _Bad):
                self._bad_count += 1
                if self._listed + len(self._bad) < MAX_BAD_LINES_LISTED:
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
        """Close the last shard (if it holds tokens), record the end of the input, and wait until
        everything is written; raises the writer's error if it met one."""
        if self._tokens > 0:
            self._close_shard()
        elif self._docs or self._bad_count:
            self._commit()  # trailing empty documents or bad lines: counted, no shard
        self._writer.close()

    def abandon(self) -> None:
        """Stop after an error elsewhere: let the writer finish what it was handed, raise nothing."""
        self._writer.close(check=False)

    def _close_shard(self) -> None:
        ids = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.uint32)
        if ids.size and int(ids.max()) >= self.vocab_size:
            raise FormatError(
                f"{self.source}: the tokenizer produced id {int(ids.max())} >= its vocab_size "
                f"{self.vocab_size}; its vocab and added tokens disagree"
            )
        self._writer.shard(shard_name(self._shard_count), ids, documents=sum(self._docs.values()))
        self._shard_count += 1
        self._commit()

    def _commit(self) -> None:
        self._writer.commit(self._docs, self._bad, self._bad_count, self._position)
        self._listed = min(MAX_BAD_LINES_LISTED, self._listed + len(self._bad))
        self._parts, self._tokens = [], 0
        self._docs, self._bad, self._bad_count = Counter(), [], 0


def _encode_all(
    encoder: _Encoder,
    files: list[Path],
    inputs: list[dict[str, Any]],
    out: Path,
    settings: dict[str, Any],
    state: Progress,
    histogram: np.ndarray,
    *,
    source: Path,
    content_field: str,
    eos: EosPolicy,
    shard_tokens: int,
    bad_mode: OnBadLine,
    batch_chars: int,
    max_document_bytes: int,
    progress: bool,
) -> None:
    """Read, encode, pack and write from `state.position` to the end of the input.

    Three stages overlap: a reader thread parses batches ahead (`_read_ahead`), this thread
    encodes them (`tokenizers` releasing the GIL) and packs shards, and a writer thread writes
    them behind (`_ShardWriter`); every queue between them is bounded.
    """
    from shiptwo.progress import progress as progress_display

    tokenizer = encoder.tokenizer

    def bytes_read(file_index: int, offset: int) -> int:
        return sum(int(r["bytes"]) for r in inputs[:file_index]) + offset

    bar = progress_display(
        total=bytes_read(len(inputs), 0),
        initial=bytes_read(*state.position[:2]),
        unit="B",
        unit_scale=True,
        enabled=progress,
        desc="encode-corpus",
    )
    packer = _Packer(
        out,
        settings,
        state,
        histogram,
        vocab_size=tokenizer.vocab_size,
        shard_tokens=shard_tokens,
        source=source,
    )
    eos_id = tokenizer.eos_id if tokenizer.eos_id is not None else 0  # unused under --eos-policy none
    tokens_this_run = 0
    run_start = time.perf_counter()
    batches = _read_ahead(
        read_batches(
            files,
            content_field,
            state.position,
            batch_chars=batch_chars,
            on_bad_line=bad_mode,
            max_document_bytes=max_document_bytes,
        )
    )
    try:
        for batch, flat, lengths in encoder.map(batches):
            flat, lengths = _place_eos(flat, lengths, eos, eos_id, first_document=packer.documents_seen == 0)
            packer.add_batch(batch, flat, lengths)
            tokens_this_run += int(flat.size)
            if batch:
                bar.update(bytes_read(batch[-1].file_index, batch[-1].offset) - bar.n)
                rate = tokens_this_run / max(time.perf_counter() - run_start, 1e-9)
                bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
        packer.finish()
    finally:
        packer.abandon()
        batches.close()
        bar.close()


def encode_corpus(
    tokenizer_path: str | Path,
    corpus: Sequence[str | Path],
    output: str | Path,
    *,
    content_field: str = "content",
    eos_policy: str = EosPolicy.BETWEEN,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int = 1,
    max_unk_ratio: float | None = DEFAULT_MAX_UNK_RATIO,
    on_bad_line: str = OnBadLine.ERROR,
    resume: bool = False,
    force: bool = False,
    pretokenizer: str | None = None,
    batch_chars: int = 1 << 20,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode JSONL documents into pretokenize-bin-v1 shards; returns the manifest written.

    A JSONL line longer than `max_document_bytes` is a bad line (`on_bad_line`), never read whole.
    A longer document is encoded in pieces of about PIECE_CHARS characters when the tokenizer
    allows it (`_cut_finder`: same ids as whole), so memory stays bounded by the piece budget plus
    a few times `max_document_bytes`.

    `max_unk_ratio=None` accepts any unk ratio (the audit still reports it). Raises FormatError
    (no manifest written) when the unk ratio exceeds the threshold or a bad line meets
    `on_bad_line="error"`; UsageError for bad options or an output dir holding another run.

    The output dir must be new or empty, an interrupted run (`progress.json`, continued only with
    `resume=True`) or a finished one (`manifest.json`, returned as is with `resume=True` and the same
    settings). A dir holding other files is refused unless `force=True`, which writes the shards
    beside them and leaves them alone. Only the writer's own temp files (`.shard-*.tmp`,
    `.manifest.json.*.tmp`, `.progress.json.*.tmp`) are ever deleted.
    """
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
    if max_document_bytes < 1:
        raise UsageError(f"--max-document-bytes must be >= 1, got {max_document_bytes}")
    if max_unk_ratio is not None and not 0.0 <= max_unk_ratio <= 1.0:
        raise UsageError(f"--max-unk-ratio must be in [0, 1], got {max_unk_ratio}")
    out = Path(output)
    files = list_inputs(corpus)
    with contextlib.ExitStack() as stack:
        # The inputs are hashed (hashlib releases the GIL) while the vocab is detected and loaded.
        hashing = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="encode-corpus-hash"))
        hashed = hashing.submit(hash_inputs, files)
        report = detect_format(tokenizer_path)
        encoder = _Encoder(report, pretokenizer, workers)
        stack.callback(encoder.close)
        tokenizer = encoder.tokenizer = load_detected(report, pretokenizer=pretokenizer)
        if eos is not EosPolicy.NONE and tokenizer.eos_id is None:
            raise UsageError(
                f"{tokenizer_path}: no EOS token ({', '.join(EOS_CANDIDATES)}); use --eos-policy none"
            )
        tokenizer_sha, tokenizer_files = report.sha256()
        inputs, corpus_sha = hashed.result()
        settings = writer.run_settings(
            tokenizer_sha256=tokenizer_sha,
            inputs=inputs,
            content_field=content_field,
            eos_policy=eos,
            shard_tokens=shard_tokens,
            on_bad_line=bad_mode,
        )
        state, histogram = _prepare_output(
            out, settings, resume, force=force, vocab_size=tokenizer.vocab_size
        )
        if (out / MANIFEST).is_file():  # finished, with these settings: nothing to do
            finished: dict[str, Any] = writer.read_record(out / MANIFEST)
            return finished
        _encode_all(
            encoder,
            files,
            inputs,
            out,
            settings,
            state,
            histogram,
            source=Path(tokenizer_path),
            content_field=content_field,
            eos=eos,
            shard_tokens=shard_tokens,
            bad_mode=bad_mode,
            batch_chars=batch_chars,
            max_document_bytes=max_document_bytes,
            progress=progress,
        )

    audit = _audit(tokenizer, histogram, state.tokens, max_unk_ratio)
    if max_unk_ratio is not None and audit["unk_ratio"] > max_unk_ratio:
        raise FormatError(
            f"{out}: unk ratio {audit['unk_ratio']:.4%} ({audit['unk_count']} of {state.tokens} tokens) "
            f"exceeds the threshold {max_unk_ratio:.2%}; the vocab does not cover this corpus "
            "(wrong tokenizer?); no manifest written; raise --max-unk-ratio or pass --allow-unk to accept it"
        )
    return writer.write_manifest(
        out,
        settings,
        state,
        tokenizer=str(Path(tokenizer_path)),
        tokenizer_format=str(report.format),
        tokenizer_layout=getattr(tokenizer, "layout", str(report.layout)) or str(report.layout),
        tokenizer_files=tokenizer_files,
        vocab_size=tokenizer.vocab_size,
        eos_token_id=tokenizer.eos_id,
        inputs=inputs,
        corpus_sha256=corpus_sha,
        audit=audit,
        elapsed_seconds=time.perf_counter() - started,
    )


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
    if tokenizer.format == VocabFormat.HEX_BYTE:
        return count_hex_keys(tokenizer.vocab)
    return count_byte_chars(_ModelVocab(tokenizer.tokenizer.model))


class _ModelVocab:
    """`token in vocab` for a `tokenizers` model's own vocab (added tokens not included, as
    `get_vocab(with_added_tokens=False)`), by lookup: 256 lookups, not a copy of 150k entries."""

    def __init__(self, model: Any):
        self.model = model

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.model.token_to_id(token) is not None


def _prepare_output(
    out: Path, settings: dict[str, Any], resume: bool, *, force: bool, vocab_size: int
) -> tuple[Progress, np.ndarray]:
    """Check the output dir; the progress to continue from and the histogram of its shards so far."""
    state = writer.prepare_output(out, settings, resume=resume, force=force)
    histogram = np.zeros(vocab_size, dtype=np.int64)
    for ids in writer.verified_shards(out, state):
        histogram += np.bincount(ids, minlength=vocab_size)
    return state, histogram
