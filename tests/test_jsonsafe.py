"""shiptwo.jsonsafe: hostile JSON becomes one JsonProblem line, never a RecursionError or a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shiptwo.errors import FormatError
from shiptwo.jsonsafe import MAX_DEPTH, MAX_INT_DIGITS, JsonProblem, decode_utf8, parse, read_file, shown


def test_nesting_is_refused_past_the_limit_with_its_position() -> None:
    assert parse("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        text = opener * (MAX_DEPTH + 1) + "1" + closer * (MAX_DEPTH + 1)
        with pytest.raises(JsonProblem, match=f"nest more than {MAX_DEPTH} deep at line 1 column"):
            parse(text)
    # Far past Python's recursion limit: still our message, not a RecursionError.
    with pytest.raises(
        JsonProblem, match=f"nest more than {MAX_DEPTH} deep at line 1 column {MAX_DEPTH + 1}"
    ):
        parse("[" * 200_000)


def test_the_decoders_own_recursion_error_is_caught_too() -> None:
    # With the depth check off, the C decoder recurses and raises RecursionError; it becomes a problem.
    with pytest.raises(JsonProblem, match="nest too deep for Python's JSON decoder"):
        parse("[" * 100_000 + "]" * 100_000, max_depth=10**9)


def test_brackets_inside_strings_do_not_count() -> None:
    deep_string = json.dumps(["[" * 500, "]" * 500, "{" * 500, '\\"[[['])
    assert parse(deep_string)[0] == "[" * 500
    # Closing brackets in a string cannot hide real nesting behind them.
    with pytest.raises(JsonProblem, match="nest more than"):
        parse('["' + "]" * 300 + '", ' + "[" * 101 + "]" * 101 + "]")


def test_hostile_quoting_is_linear() -> None:
    # An unterminated string full of escaped quotes: a naive string regex goes quadratic here.
    text = "[" * 200 + '"' + '\\"' * 1_000_000
    t0 = time.perf_counter()
    with pytest.raises(JsonProblem):
        parse(text)
    assert time.perf_counter() - t0 < 2.0


def test_huge_integers_are_refused_with_their_size() -> None:
    assert parse("9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    assert parse("-" + "9" * MAX_INT_DIGITS) == -int("9" * MAX_INT_DIGITS)
    with pytest.raises(
        JsonProblem, match=r"an integer of 31 digits \(999999999999\.\.\.\), more than the 30"
    ):
        parse('{"id": ' + "9" * 31 + "}")
    # Past Python's own 4,300-digit limit, which raises a bare ValueError.
    with pytest.raises(JsonProblem, match="an integer of 5,000 digits"):
        parse("[" + "1" * 5000 + "]")


def test_duplicate_keys_and_syntax_errors_say_where() -> None:
    with pytest.raises(JsonProblem, match=r"key 'a' appears twice in one object; keep one"):
        parse('{"a": 1, "b": {"a": 2}, "a": 3}')
    with pytest.raises(JsonProblem, match=r"invalid JSON at line 2 column 3: Expecting value near 'tru}'"):
        parse('{"a":\n  tru}')
    with pytest.raises(JsonProblem, match="invalid JSON at line 1 column 1: Expecting value"):
        parse("")
    with pytest.raises(JsonProblem, match="invalid JSON at line 1 column 1: Unterminated string near"):
        parse('"abc')


def test_non_utf8_names_the_byte_and_its_offset() -> None:
    assert decode_utf8(b"\xef\xbb\xbf{}") == "{}"
    with pytest.raises(JsonProblem, match=r"not UTF-8: byte 0xff at byte offset 4 \(line 2\); re-encode"):
        decode_utf8(b'{\n"a\xff": 1}')


def test_shown_escapes_and_truncates() -> None:
    assert shown("a\x1b[31mb\n") == repr("a\x1b[31mb\n")
    long = shown("x" * 1000)
    assert long.startswith("'xxx") and long.endswith("... (1,000 in all)") and len(long) < 100


def test_read_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with pytest.raises(FormatError, match=r"config\.json: config\.json not found; fix it"):
        read_file(path, what="config.json", fix="fix it")
    path.write_bytes(b'{"a": "\xc3"}')
    with pytest.raises(
        FormatError,
        match=r"config\.json: not valid JSON \(config\.json\): not UTF-8: byte 0xc3 at byte offset 7",
    ):
        read_file(path, what="config.json", fix="fix it")
    path.unlink()
    path.mkdir()
    with pytest.raises(FormatError, match=r"config\.json: config\.json cannot be read \(Is a directory\)"):
        read_file(path, what="config.json", fix="fix it")
