"""Parse JSON that shiptwo did not write: bounded nesting, bounded integers, UTF-8 checked.

Python's `json` module answers hostile input with a RecursionError (deep nesting: the C decoder
recurses), a ValueError that is not a JSONDecodeError (an integer of more than 4,300 digits), a
UnicodeDecodeError, or silently (a duplicate key keeps its last value). Every one of those
becomes a `JsonProblem` here: one line saying what is wrong and where, which a caller prefixes
with its file (and line, for JSONL) and a fix. Standard library only; the harness may use it.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from shiptwo.errors import FormatError

# Tokenizer files, configs, manifests and corpus lines nest well under ten levels; a hundred is
# far below Python's recursion limit (1,000), which the C decoder would otherwise run into.
MAX_DEPTH = 100
# An int64 has 19 digits; no field of any format shiptwo reads needs more. Python's own limit
# (4,300 digits, then a ValueError) is far above anything meaningful and costs quadratic time.
MAX_INT_DIGITS = 30
# How much of a bad value an error shows.
SHOWN_CHARS = 60

# A JSON string, or the rest of the text after a quote never closed (invalid JSON: json.loads
# says where). A match that starts at a quote cannot fail, so a scan is linear on any input.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_STRING_OR_BRACKET = re.compile(_STRING.pattern + r"|[\[\]{}]", re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonProblem(ValueError):
    """Why a text is not JSON shiptwo accepts, and where in it; no file name, no fix."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`value` for an error message: repr'd (control characters escaped), cut to `limit` chars."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} in all)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def decode_utf8(data: bytes, *, bom: bool = True) -> str:
    """`data` as UTF-8 text (a leading byte-order mark dropped when `bom`); JsonProblem if not UTF-8."""
    try:
        return data.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise JsonProblem(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}); "
            "re-encode it as UTF-8"
        ) from exc


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {column}"


def nesting_problem(text: str, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Where `text` opens more than `max_depth` arrays/objects inside one another, or None.

    Brackets inside strings do not count. Linear time; nearly free when the text holds fewer
    than `max_depth` opening brackets in all (every JSONL line of prose).
    """
    if text.count("[") + text.count("{") <= max_depth:
        return None
    # C-speed passes (strings out, then everything but brackets); Python sees only the brackets.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) <= max_depth:
        return None
    depth = 0  # too deep: walk again, slowly, to say where
    for m in _STRING_OR_BRACKET.finditer(text):
        depth += _STEP.get(m.group(), 0)
        if depth > max_depth:
            return f"arrays/objects nest more than {max_depth} deep at {_where(text, m.start())}"
    return None  # pragma: no cover - the fast pass counted the same brackets


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonProblem(
            f"an integer of {len(digits.lstrip('-')):,} digits ({digits[:12]}...), more than the "
            f"{MAX_INT_DIGITS} any field allows"
        )
    return int(digits)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # json would keep the last silently: vocab.json would lose an id
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonProblem(f"key {shown(key)} appears twice in one object; keep one")
            seen.add(key)
    return obj


def parse(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`text` parsed as JSON, or a JsonProblem: invalid JSON (with line, column and what is there),
    nesting deeper than `max_depth`, an integer of more than MAX_INT_DIGITS digits, a duplicate key.
    """
    problem = nesting_problem(text, max_depth=max_depth)
    if problem is not None:
        raise JsonProblem(problem)
    try:
        return json.loads(text, parse_int=_parse_int, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        near = f" near {shown(text[exc.pos : exc.pos + 20])}" if exc.pos < len(text) else ""
        msg = exc.msg.removesuffix(" starting at")  # json puts the position after this phrase
        raise JsonProblem(f"invalid JSON at {_where(text, exc.pos)}: {msg}{near}") from exc
    except RecursionError as exc:  # the stack was already deep when we were called
        raise JsonProblem("arrays/objects nest too deep for Python's JSON decoder") from exc
    except ValueError as exc:  # JsonProblem from the hooks; Python's own int limit as a backstop
        if isinstance(exc, JsonProblem):
            raise
        raise JsonProblem(f"unreadable number: {exc}") from exc


def read_file(path: Path, *, what: str, fix: str) -> Any:
    """The JSON document in `path`; a one-line FormatError `<path>: ...; <fix>` on any failure.

    `what` names the file's role ("vocab.json", "config.json"); `fix` says what to do about it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise FormatError(f"{path}: {what} not found; {fix}") from exc
    except OSError as exc:
        raise FormatError(
            f"{path}: {what} cannot be read ({exc.strerror or exc}); check the path and its permissions"
        ) from exc
    try:
        return parse(decode_utf8(data))
    except JsonProblem as exc:
        raise FormatError(f"{path}: not valid JSON ({what}): {exc}; {fix}") from exc
