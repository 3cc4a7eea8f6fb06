"""Every bad input gives a FormatError naming the file, the field and the value."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo import apr
from shiptwo.apr.testing import rehash, spec_file
from shiptwo.cli import main
from shiptwo.errors import FormatError

F32_2 = struct.pack("<2f", 1.0, 2.0)


def _valid() -> bytearray:
    return bytearray(spec_file([("a", 0, [2], F32_2), ("b", 1, [1], b"\0\x3c")], b'{"k":1}'))


def _expect(tmp_path: Path, image: bytes | bytearray, pattern: str) -> None:
    path = tmp_path / "bad.apr"
    path.write_bytes(image)
    with pytest.raises(FormatError, match=pattern) as exc:
        apr.load_file(path)
    assert str(path) in str(exc.value)
    with pytest.raises(FormatError):
        apr.parse_bytes(bytes(image), "mem")


def _patched(*edits: tuple[str, int, int]) -> bytearray:
    """The valid file with several fields overwritten (CRCs not fixed: rehash does that)."""
    buf = _valid()
    for fmt, at, value in edits:
        struct.pack_into(fmt, buf, at, value)
    return buf


def _patch(fmt: str, at: int, value: int, *, fix_crc: bool = True) -> bytearray:
    buf = _valid()
    struct.pack_into(fmt, buf, at, value)
    return rehash(buf) if fix_crc else buf


# Index entry "a" starts at 128 (metadata is 7 bytes, padded to 64): name_len 128, name 130,
# dtype 131, ndim 132, dims 133, offset 141, size 149; entry "b" starts at 157.
CASES = [
    ("empty", b"", r"header: the file is empty \(0 bytes\)"),
    ("short", b"APR\0\x02\0", r"header: truncated: the header needs 64 bytes, the file has 6"),
    ("gguf", b"GGUF" + bytes(100), r"magic: found b'GGUF', expected b'APR\\x00': a GGUF file"),
    ("aprn", b"APRN" + bytes(100), r"magic: found b'APRN'.*APR v1"),
    ("apr2", b"APR2" + bytes(100), r"magic: found b'APR2'.*pre-unification APR2"),
    ("version", _patch("<B", 4, 3), r"version: 3.0 is not APR v2.x"),
    ("header-crc", _patch("<B", 50, 1, fix_crc=False), r"header checksum: stored 0x[0-9a-f]{8}, computed 0x"),
    ("column-major", _patch("<H", 6, 0x0C00), r"flags: 0x0c00 has LAYOUT_COLUMN_MAJOR \(0x0800\) set"),
    (
        "lz4-compressed",
        rehash(_patched(("<H", 6, 0x0401), ("<Q", 149, 12))),
        (
            r"tensor 'a': size: 12 bytes stored, shape \[2\] x F32 is 8 raw, and flags 0x0401 set LZ4: "
            r"LZ4-compressed payload not supported \(decompress the file first\)"
        ),
    ),
    (
        "zstd-compressed",
        rehash(_patched(("<H", 6, 0x0402), ("<Q", 149, 4))),
        r"tensor 'a': size: 4 bytes stored.*flags 0x0402 set ZSTD: ZSTD-compressed payload not supported",
    ),
    ("encrypted", _patch("<H", 6, 0x0404), r"flags: 0x0404 sets ENCRYPTED: such payloads are not supported"),
    ("signed", _patch("<H", 6, 0x0408), r"flags: 0x0408 sets SIGNED: such payloads are not supported"),
    ("unknown-flag", _patch("<H", 6, 0x8400), r"flags: 0x8400 has unknown bits 0x8000"),
    (
        "tensor-count",
        _patch("<I", 8, 0xFFFFFFFF),
        r"tensor_count: 4294967295 entries cannot fit in the 64-byte",
    ),
    (
        "metadata-size",
        _patch("<I", 20, 0xFFFFFFFF),
        r"metadata_size: 4294967295 bytes exceeds the 16777216-byte cap",
    ),
    ("metadata-offset", _patch("<Q", 12, 1 << 40), r"metadata_offset: 1099511627776, expected 64"),
    ("index-offset", _patch("<Q", 24, 64), r"tensor_index_offset: 64, expected 128"),
    (
        "data-offset",
        _patch("<Q", 32, 1 << 50),
        r"data_offset: 1125899906842624 is beyond the end of the file",
    ),
    ("data-offset-align", _patch("<Q", 32, 200), r"data_offset: 200 is not a 64-aligned offset"),
    ("name-len", _patch("<H", 128, 300), r"tensor index entry 0: name_len: 300, expected 1..256 bytes"),
    ("name-len-zero", _patch("<H", 128, 0), r"tensor index entry 0: name_len: 0"),
    ("name-utf8", _patch("<B", 130, 0xFF), r"tensor index entry 0: name: b'\\xff' is not UTF-8"),
    ("dtype", _patch("<B", 131, 2), r"tensor 'a': dtype: unknown code 2"),
    ("ndim", _patch("<B", 132, 9), r"tensor 'a': ndim: 9, at most 8"),
    ("size", _patch("<Q", 149, 12), r"tensor 'a': size: 12 bytes, but shape \[2\] x F32 needs 8"),
    (
        "shape",
        _patch("<Q", 133, 1 << 60),
        r"tensor 'a': size: 8 bytes, but shape \[1152921504606846976\] x F32",
    ),
    (
        "offset",
        _patch("<Q", 141, 1 << 40),
        r"tensor 'a': data \[1099511627776, 1099511627784\) exceeds the 128",
    ),
    ("offset-align", _patch("<Q", 141, 8), r"tensor 'a': offset: 8 is not 64-byte aligned"),
    (
        "overlap",
        _patch("<Q", 141, 64),
        r"tensor 'b': data at 64 overlaps the tensor before it|tensor 'a': data at 64",
    ),
    ("footer-crc", rehash(_valid())[:-4] + b"\0\0\0\0", r"footer checksum: stored 0x00000000, computed 0x"),
]


@pytest.mark.parametrize("image,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name(tmp_path: Path, image: bytes, pattern: str) -> None:
    _expect(tmp_path, image, pattern)


def test_unsorted_and_duplicate_index(tmp_path: Path) -> None:
    unsorted = spec_file([("b", 0, [2], F32_2), ("a", 0, [2], F32_2)], b"{}")
    _expect(tmp_path, unsorted, r"tensor index: tensor 'a' sorts before 'b': the index must be sorted")
    dup = spec_file([("a", 0, [2], F32_2), ("a", 0, [2], F32_2)], b"{}")
    _expect(tmp_path, dup, r"tensor index: tensor 'a' repeats 'a'")


def test_bad_metadata(tmp_path: Path) -> None:
    _expect(tmp_path, spec_file([], b"{not json"), r"metadata: not UTF-8 JSON")
    _expect(tmp_path, spec_file([], b"[1,2]"), r"metadata: a JSON list, expected an object")
    _expect(tmp_path, spec_file([], b'"\xff"'), r"metadata: not UTF-8 JSON")


def test_duplicate_metadata_keys_last_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "d.apr"
    path.write_bytes(spec_file([], b'{"rms_norm_eps":null,"rms_norm_eps":1e-6}'))
    assert apr.read_header(path).metadata == {"rms_norm_eps": 1e-6}


def test_trailing_bytes_and_zero_byte_tensor_other_than_lm_head(tmp_path: Path) -> None:
    buf = _valid()
    padded = buf[:-4] + bytes(64) + b"\0\0\0\0"
    _expect(tmp_path, rehash(padded), r"data section: 192 bytes, but the tensors fill 128")
    zero = spec_file([("w", 0, [2], b"")], b"{}")
    _expect(tmp_path, zero, r"tensor 'w': size: 0 bytes, but shape \[2\] x F32 needs 8")


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"nope.apr: cannot open: No such file"):
        apr.load_file(tmp_path / "nope.apr")


@pytest.mark.parametrize("flags", [0x0401, 0x0402, 0x0403])
def test_compression_bit_over_a_raw_payload_loads(tmp_path: Path, flags: int) -> None:
    """aprender's writer sets LZ4 without compressing: sizes equal to shape x dtype prove it raw."""
    path = tmp_path / "quirk.apr"
    path.write_bytes(rehash(_patched(("<H", 6, flags))))
    tensors = apr.load_file(path)
    assert tensors["a"].tolist() == [1.0, 2.0] and tensors["b"].dtype.is_floating_point
    notes = apr.read_header(path).notes
    names = [n for n, bit in (("LZ4", 1), ("ZSTD", 2)) if flags & bit]
    assert notes == [f"{n} flag set but payload uncompressed (aprender writer quirk)" for n in names]


def test_tied_placeholder_is_allowed_under_the_lz4_bit(tmp_path: Path) -> None:
    buf = bytearray(
        spec_file([("lm_head.weight", 0, [2], b""), ("model.embed_tokens.weight", 0, [2], F32_2)], b"{}")
    )
    struct.pack_into("<H", buf, 6, 0x0401)
    path = tmp_path / "tied.apr"
    path.write_bytes(rehash(buf))
    assert list(apr.load_file(path)) == ["model.embed_tokens.weight"]


# --- found by the fuzz suite (tests/fuzz, docs/fuzzing.md) ---------------------------------------


@pytest.mark.parametrize("dims", [[0, 1 << 63], [0, (1 << 64) - 1], [0, 1 << 62, 4], [1 << 61, 0]])
def test_a_shape_no_array_can_have_is_refused_even_with_no_elements(tmp_path: Path, dims: list[int]) -> None:
    # A 0-element tensor passes the size check at 0 bytes; numpy and torch then fail on the dims.
    path = tmp_path / "bad.apr"
    path.write_bytes(spec_file([("e", 0, dims, b"")], b"{}"))
    pattern = rf"{path}: tensor 'e': shape: \[{dims[0]}, .*past the 1152921504606846975 values"
    with pytest.raises(FormatError, match=pattern):
        apr.load_file(path)
    with pytest.raises(FormatError, match=pattern):
        apr.safe_open(path)
    assert main(["apr", "inspect", str(path)]) == 1


def test_the_largest_empty_shape_numpy_can_make_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.apr"
    path.write_bytes(spec_file([("e", 0, [0, (2**63 - 1) // 8], b"")], b"{}"))
    assert apr.load_file(path)["e"].shape == (0, (2**63 - 1) // 8)
    assert apr.load_arrays(path)["e"].shape == (0, (2**63 - 1) // 8)


@pytest.mark.parametrize(
    "text,why",
    [
        (b'{"k":NaN}', "NaN is not a JSON value"),
        (b'{"k":-Infinity}', "-Infinity is not a JSON value"),
        (b'{"k":1e999}', "the number 1e999 overflows a 64-bit float"),
    ],
)
def test_metadata_that_is_not_strict_json_is_refused(tmp_path: Path, text: bytes, why: str) -> None:
    _expect(tmp_path, spec_file([], text), rf"metadata: not UTF-8 JSON \({why}")


def test_inspect_escapes_a_lone_surrogate_in_metadata(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "s.apr"
    path.write_bytes(spec_file([], b'{"k":"\\ud800","\\udfff":1,"ok":"\xc3\xa9"}'))
    assert main(["apr", "inspect", str(path)]) == 0
    text = capsysbinary.readouterr().out.decode("utf-8")  # strict: the bytes are valid UTF-8
    assert '  k                        "\\ud800"' in text
    assert '  "\\udfff"                 1' in text
    assert '  ok                       "\u00e9"' in text
    assert main(["apr", "inspect", str(path), "--format", "json"]) == 0
    data = json.loads(capsysbinary.readouterr().out.decode("utf-8"))
    assert data["metadata"] == {"k": "\ud800", "\udfff": 1, "ok": "\u00e9"}


def test_inspect_json_stats_of_nan_data_stay_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nan.apr"
    path.write_bytes(spec_file([("a", 0, [2], struct.pack("<2f", math.nan, 1.0))], b"{}"))
    assert main(["apr", "inspect", str(path), "--stats", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out, parse_constant=_no_bare_constant)["tensors"][0]
    assert (row["mean"], row["min"], row["max"]) == ("nan", "nan", "nan")
    assert main(["apr", "inspect", str(path), "--stats"]) == 0
    assert "mean +nan" in capsys.readouterr().out


def _no_bare_constant(token: str) -> None:
    raise AssertionError(f"bare {token} in --format json output")


# The index loop checks the layout in the same pass while the data lies in index order, and hands
# anything else to the sorted check: the verdict must be the sorted check's, whatever the offsets.
F32_16 = struct.pack("<16f", *range(16))  # 64 bytes: one aligned block each
ENTRY = 2 + 1 + 2 + 8 + 16  # one-letter name, one dim


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40).map(lambda k: 8 * k), min_size=3, max_size=3))
def test_layout_verdict_is_the_sorted_checks_whatever_the_offsets(offsets: list[int]) -> None:
    from shiptwo.apr import reader

    image = bytearray(spec_file([(n, 0, [16], F32_16) for n in "abc"], b"{}"))
    header = apr.parse_bytes(bytes(image), "mem").header
    for i, offset in enumerate(offsets):
        struct.pack_into("<Q", image, header.tensor_index_offset + ENTRY * i + 13, offset)
    image = rehash(image)
    rows = tuple((n, None, (16,), offsets[i], 64, 0) for i, n in enumerate("abc"))
    try:
        reader._check_data_layout(rows, header, len(image) - 4, "mem")  # type: ignore[arg-type]
        expected = None
    except FormatError as exc:
        expected = str(exc)
    try:
        apr.parse_bytes(bytes(image), "mem", verify_footer=False)
        got = None
    except FormatError as exc:
        got = str(exc)
    assert got == expected


def test_an_open_builds_no_record_until_one_is_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "m.apr"
    path.write_bytes(spec_file([("a", 0, [2], F32_2), ("b", 1, [1], b"\0\x3c")], b"{}"))
    with apr.safe_open(path, framework="np") as f:
        assert f.keys() == ["a", "b"]
        assert "tensors" not in vars(f.info)  # the rows are checked; no TensorInfo made
        assert f.get_tensor("a").tolist() == [1.0, 2.0]
        assert "tensors" not in vars(f.info)  # one lookup makes one record
        assert [t.name for t in f.info.tensors] == ["a", "b"]


def test_an_image_in_any_buffer_parses_alike() -> None:
    image = spec_file([("a", 0, [2], F32_2), ("b", 1, [1], b"\0\x3c")], b'{"k":1}')
    infos = [apr.parse_bytes(buf, "mem") for buf in (image, bytearray(image), memoryview(image))]  # type: ignore[arg-type]
    assert infos[0] == infos[1] == infos[2]


def test_a_shape_no_array_can_take_is_named_even_when_its_size_matches(tmp_path: Path) -> None:
    # An I8 entry of 2**61 elements claiming 2**61 bytes: the size agrees with the shape, and the
    # shape is what is wrong (the layout would refuse it too, naming less).
    image = _patched(("<B", 131, 6), ("<Q", 133, 1 << 61), ("<Q", 149, 1 << 61))
    _expect(
        tmp_path, rehash(image), r"tensor 'a': shape: \[2305843009213693952\]: .* numpy and torch can index"
    )


def test_metadata_with_a_byte_order_mark_is_named_as_such(tmp_path: Path) -> None:
    _expect(tmp_path, spec_file([], "\ufeff{}".encode()), r"metadata: not UTF-8 JSON \(Unexpected UTF-8 BOM")
