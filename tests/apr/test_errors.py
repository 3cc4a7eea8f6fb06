"""Every bad input gives a FormatError naming the file, the field and the value."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shiptwo import apr
from shiptwo.apr.testing import rehash, spec_file
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
