"""The JSONL corpus: input files in reading order, their sha256 sums, and their documents.

`encode-corpus` and `shiptwo tokenize train` read through here, so the same lines count as bad
in both, each reported as a `BadLine` (file:line and why). Standard library only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shiptwo import jsonsafe
from shiptwo.errors import FormatError, UsageError
from shiptwo.shards.format import DEFAULT_MAX_DOCUMENT_BYTES, BadLine, OnBadLine, Position


# What `encode-corpus` reads (room-internal): a document or a bad line, each with the position in
# the input just past it, where a resumed run continues.
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


def _unreadable(path: Path, exc: OSError) -> FormatError:
    return FormatError(f"{path}: corpus file cannot be read ({exc.strerror or exc}); check its permissions")


def hash_inputs(files: Sequence[Path]) -> tuple[list[dict[str, Any]], str]:
    """Each file's `{"path", "bytes", "sha256"}` record, and the sha256 of all input bytes in order."""
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
            raise _unreadable(f, exc) from exc
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


def _parse(raw: bytes, *, first: bool, content_field: str) -> tuple[str | None, str]:
    """One non-blank JSONL line's document text, or None and why the line gives no document."""
    try:
        # JSONL is UTF-8; a byte-order mark is tolerated at the start of a file only.
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start}); re-encode the file as UTF-8"
        return None, why
    try:
        obj = jsonsafe.parse(line)
    except jsonsafe.JsonProblem as exc:  # bad syntax, too deep, a huge integer, a duplicate key
        why = str(exc).replace(" at line 1 column ", " at column ", 1)  # a JSONL line is one line
        return None, why if why.startswith("invalid JSON") else f"invalid JSON: {why}"
    if not isinstance(obj, dict):
        return None, f"not a JSON object ({type(obj).__name__})"
    text = obj.get(content_field)
    if not isinstance(text, str):
        why = "missing" if content_field not in obj else f"a {type(text).__name__}, not a string"
        return None, f"field {content_field!r} is {why}"
    problem = unicode_problem(text)
    if problem is not None:
        return None, f"field {content_field!r}: {problem}"
    return text, ""


def _lines(fh: IO[bytes], limit: int) -> Iterator[tuple[bytes | None, int]]:
    """Each line of `fh` (its newline included) and its length in bytes; None in place of a line
    longer than `limit` bytes, which is read past in bounded pieces, never held whole."""
    while raw := fh.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        size = len(raw)
        while not raw.endswith(b"\n") and (raw := fh.readline(1 << 20)):
            size += len(raw)
        yield None, size


def _too_long(size: int, limit: int) -> str:
    return (
        f"a line of {size:,} bytes, longer than --max-document-bytes {limit:,}; split the document "
        "or raise the limit"
    )


def _read(
    files: Sequence[Path], content_field: str, start: Position, *, max_document_bytes: int
) -> Iterator[_Doc | _Bad]:
    """The documents and bad lines of the input files, in order, from a (file, offset, line) position."""
    file_index0, offset0, line0 = start
    for fi in range(file_index0, len(files)):
        path = files[fi]
        offset = offset0 if fi == file_index0 else 0
        lineno = line0 if fi == file_index0 else 0
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        with fh:
            fh.seek(offset)
            for raw, size in _lines(fh, max_document_bytes):
                lineno += 1
                offset += size
                if raw is None:
                    why = _too_long(size, max_document_bytes)
                    yield _Bad(fi, lineno, offset, BadLine(str(path), lineno, why))
                    continue
                if not raw.strip():
                    continue
                text, why = _parse(raw, first=lineno == 1, content_field=content_field)
                if text is None:
                    yield _Bad(fi, lineno, offset, BadLine(str(path), lineno, why))
                else:
                    yield _Doc(fi, lineno, offset, text)


def read_documents(
    files: Sequence[Path],
    *,
    content_field: str = "content",
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
) -> Iterator[str | BadLine]:
    """Each JSONL line's text, or a BadLine (file:line and why) for a line that gives no document.

    Blank lines are skipped. Bad: longer than `max_document_bytes`, not UTF-8, invalid JSON
    (`shiptwo.jsonsafe`: nesting deeper than 100, integers of more than 30 digits and duplicate
    keys included), not an object, the field missing or not a string, or a string that is not
    valid Unicode (a lone surrogate such as JSON's "\\ud800").
    """
    for item in _read(files, content_field, (0, 0, 0), max_document_bytes=max_document_bytes):
        yield item.bad if isinstance(item, _Bad) else item.text


def bad_line_error(bad: BadLine) -> FormatError:
    """The error a bad line raises under `--on-bad-line error`."""
    return FormatError(f"{bad}; fix the line or pass --on-bad-line skip")


def read_batches(
    files: Sequence[Path],
    content_field: str,
    start: Position,
    *,
    batch_chars: int,
    on_bad_line: OnBadLine,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
) -> Iterator[list[_Doc | _Bad]]:
    """The input from a (file, offset, line) position, in batches of about `batch_chars` characters.

    Under `on_bad_line` error the first bad line raises `bad_line_error`; under skip bad lines
    travel in their batch, to be counted.
    """
    batch: list[_Doc | _Bad] = []
    chars = 0
    for item in _read(files, content_field, start, max_document_bytes=max_document_bytes):
        if isinstance(item, _Bad) and on_bad_line is OnBadLine.ERROR:
            raise bad_line_error(item.bad)
        batch.append(item)
        if isinstance(item, _Doc):
            chars += len(item.text)
            if chars >= batch_chars:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch
