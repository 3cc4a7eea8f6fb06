"""safetensors headers as `apr import` reads them: 5,000 damaged inputs, the library as oracle.

Every header the safetensors library refuses, the import refuses too, with one FormatError line
naming the file, the field and the value (never a traceback).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from shiptwo.apr.convert import import_model
from shiptwo.cli import main
from shiptwo.errors import FormatError
from shiptwo.fuzz import safetensors as st_fuzz
from shiptwo.fuzz.binary import Target, classify, run

# The bar: 5,000 inputs per format, with the whole fuzz suite under a minute on one core.
COUNT = 5000
A = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    return st_fuzz.target(tmp_path_factory.mktemp("st-seed"))


def test_damaged_headers_load_or_are_refused_as_safetensors_refuses_them(
    target: Target, tmp_path: Path
) -> None:
    tally = run(target, tmp_path, count=COUNT, seed=0)
    assert tally.failed == 0, tally.report()
    assert tally.tried == COUNT
    assert tally.counts["loaded"] > 0 and tally.counts["refused"] > 0
    for field in ("safetensors header", "safetensors __metadata__", "safetensors data section"):
        assert field in tally.refused_by, f"no input was refused by {field!r}"


def _file(
    tmp_path: Path, header: dict[str, object] | bytes, data: bytes = bytes(8), n: int | None = None
) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw) if n is None else n) + raw + data)
    return path


def _deep(levels: int) -> bytes:
    inner = b"[" * levels + b"]" * levels
    return b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":' + inner + b"}}"


# (id, header, data, length field, the refusal after "<file>: ")
CASES: list[tuple[str, dict[str, object] | bytes, bytes, int | None, str]] = [
    (
        "length-cap",
        {"a": A},
        bytes(8),
        2**63,
        r"safetensors header: length 9223372036854775808 exceeds the 100000000-byte cap",
    ),
    (
        "length-past-file",
        {"a": A},
        bytes(8),
        4096,
        r"safetensors header: length 4096 exceeds the file \(77 bytes\)",
    ),
    (
        "not-utf8",
        b'{"a":"\xff"}',
        b"",
        None,
        r"safetensors header: not UTF-8 \(invalid start byte at byte 6\)",
    ),
    ("not-json", b'{"a":', b"", None, r"safetensors header: not JSON \(Expecting value"),
    (
        "nan",
        b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}',
        bytes(8),
        None,
        r"not JSON \(NaN is not a JSON value",
    ),
    ("deep", _deep(126), bytes(8), None, r"safetensors header: nests deeper than 127 levels"),
    ("not-object", b"[1]", b"", None, r"safetensors header: not a JSON object"),
    (
        "surrogate",
        b'{"__metadata__":{"k":"\\ud800"},"a":' + json.dumps(A).encode() + b"}",
        bytes(8),
        None,
        r"holds a lone surrogate '\\ud800'",
    ),
    (
        "metadata-not-string",
        {"__metadata__": {"k": 1}, "a": A},
        bytes(8),
        None,
        r"safetensors __metadata__: \{\"k\": 1\} is not a map of strings to strings",
    ),
    (
        "metadata-list",
        {"__metadata__": ["k"], "a": A},
        bytes(8),
        None,
        r"safetensors __metadata__: \[\"k\"\] is not a map",
    ),
    ("entry-not-object", {"a": "F32"}, b"", None, r"tensor 'a': malformed header entry \"F32\""),
    (
        "unknown-dtype",
        {"a": {**A, "dtype": "F33"}},
        bytes(8),
        None,
        r"tensor 'a': dtype F33 has no APR code",
    ),
    (
        "shape-negative",
        {"a": {**A, "shape": [-2]}},
        bytes(8),
        None,
        r"tensor 'a': shape \[-2\] is not a list of non-negative integers",
    ),
    (
        "shape-bool",
        {"a": {**A, "shape": [True, 2]}},
        bytes(8),
        None,
        r"tensor 'a': shape \[true, 2\] is not a list",
    ),
    ("shape-float", {"a": {**A, "shape": [2.0]}}, bytes(8), None, r"tensor 'a': shape \[2.0\] is not a list"),
    (
        "offsets-three",
        {"a": {**A, "data_offsets": [0, 8, 8]}},
        bytes(8),
        None,
        r"tensor 'a': data_offsets \[0, 8, 8\] is not two",
    ),
    (
        "offsets-reversed",
        {"a": {**A, "data_offsets": [8, 0]}},
        bytes(8),
        None,
        r"tensor 'a': data_offsets \[8, 0\) do not fit",
    ),
    (
        "offsets-past-end",
        {"a": {**A, "data_offsets": [8, 16]}},
        bytes(8),
        None,
        r"tensor 'a': data_offsets \[8, 16\) do not fit shape \[2\] x F32 in a 8-byte",
    ),
    (
        "size-mismatch",
        {"a": {**A, "shape": [3]}},
        bytes(8),
        None,
        r"tensor 'a': data_offsets \[0, 8\) do not fit shape \[3\]",
    ),
    (
        "overlap",
        {"a": A, "b": A},
        bytes(8),
        None,
        r"tensor 'b': data_offsets \[0, 8\) overlaps the tensor before it",
    ),
    (
        "gap",
        {"a": {**A, "shape": [1], "data_offsets": [4, 8]}},
        bytes(8),
        None,
        r"tensor 'a': data_offsets \[4, 8\) leaves a gap before it",
    ),
    ("trailing", {"a": A}, bytes(9), None, r"safetensors data section: 9 bytes, but the tensors fill 8"),
    (
        "duplicate-key",
        b'{"a":' + json.dumps(A).encode() + b',"a":' + json.dumps(A).encode() + b"}",
        bytes(8),
        None,
        r"not JSON \(the key 'a' appears twice\)",
    ),
    (
        "empty-shape-too-big",
        {"a": {**A, "shape": [0, 2**63], "data_offsets": [0, 0]}},
        b"",
        None,
        r"tensor 'a': shape \[0, 9223372036854775808\]: its non-zero dims multiply past",
    ),
]


@pytest.mark.parametrize("header,data,n,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_malformed_header_is_one_clean_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: dict[str, object] | bytes,
    data: bytes,
    n: int | None,
    message: str,
) -> None:
    path = _file(tmp_path, header, data, n)
    with pytest.raises(FormatError, match=message) as exc:
        import_model(path, tmp_path / "out.apr")
    assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)
    assert main(["apr", "import", str(path), "-o", str(tmp_path / "out.apr")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1
    assert not (tmp_path / "out.apr").exists()


# The cases the import refuses although the library reads them: APR cannot hold the tensor, or
# the header is ambiguous. Every other case must be refused by the library too.
IMPORT_ONLY = {"duplicate-key", "empty-shape-too-big"}


@pytest.mark.parametrize(
    "header,data,n",
    [c[1:4] for c in CASES if c[0] not in IMPORT_ONLY],
    ids=[c[0] for c in CASES if c[0] not in IMPORT_ONLY],
)
def test_the_safetensors_library_refuses_them_too(
    tmp_path: Path, header: dict[str, object] | bytes, data: bytes, n: int | None
) -> None:
    path = _file(tmp_path, header, data, n)
    with pytest.raises(Exception) as exc:  # noqa: B017 (the library raises several types)
        st_fuzz.read_with_library(path)
    assert not isinstance(exc.value, FormatError)


def test_a_header_at_the_librarys_depth_limit_still_imports(tmp_path: Path) -> None:
    path = _file(tmp_path, _deep(125), bytes(8))  # 127 levels: read by the library and by us
    st_fuzz.read_with_library(path)
    assert import_model(path, tmp_path / "ok.apr").tensors == 1


def test_every_truncation_is_refused(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    for cut in range(len(target.image)):
        path.unlink(missing_ok=True)
        path.write_bytes(target.image[:cut])
        outcome, detail = classify(target, path, deadline_s=2.0)
        assert outcome == "refused", f"cut at {cut}: {outcome} {detail}"
