"""FALSIFY-APR-INTEGRITY-001: a truncated, corrupted or inconsistent APR file is refused with a
FormatError naming the file and the field; nothing crashes, hangs or over-allocates.

Controls skip each CRC check of the real reader (`plant`); the flipped-byte test must see either
go. The other tests damage files past the CRCs on purpose (`rehash`) or test structure alone, so
they skip the CRC controls.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiptwo import apr
from shiptwo.apr.reader import decode_array
from shiptwo.apr.testing import make_qwen2_dir, rehash
from shiptwo.cli import main
from shiptwo.errors import FormatError

HEADER_CRC_SKIPPED = "header-crc-skipped"
FOOTER_CRC_SKIPPED = "footer-crc-skipped"


def plant(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip one CRC check of shiptwo.apr.reader for the rest of the test (nothing on the real run)."""
    from shiptwo.apr import reader

    if control is None:
        return
    if control == HEADER_CRC_SKIPPED:
        real = reader._HEADER

        class StoredChecksumNeverRead:
            """The header struct, except that the checksum field reads back what `parse` computes:
            the comparison with bytes 40..44 can never fail, exactly as if it were not made."""

            size = real.size

            def unpack_from(self, buf: Any, offset: int = 0) -> tuple[Any, ...]:
                fields = list(real.unpack_from(buf, offset))
                head = bytes(buf[offset : offset + real.size])
                fields[9] = zlib.crc32(head[44:], zlib.crc32(head[:40]))  # the checksum field
                return tuple(fields)

        monkeypatch.setattr(reader, "_HEADER", StoredChecksumNeverRead())
    elif control == FOOTER_CRC_SKIPPED:
        real_parse = reader.parse

        def parse(buf: Any, path: str, *, verify_footer: bool = True) -> Any:
            return real_parse(buf, path, verify_footer=False)  # aprender's reader never checks it

        monkeypatch.setattr(reader, "parse", parse)
    else:
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


def skip_crc_controls(control: Any, why: str) -> None:
    if control in (HEADER_CRC_SKIPPED, FOOTER_CRC_SKIPPED):
        pytest.skip(f"{control.id}: {why}")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("integrity")
    src = make_qwen2_dir(
        root / "hf", dtype="bfloat16", tied=True, seed=3, vocab_size=64, hidden_size=16, num_layers=1
    )
    out = root / "m.apr"
    assert main(["apr", "import", str(src), "-o", str(out)]) == 0
    return out.read_bytes()


def _boundaries(data: bytes) -> list[int]:
    info = apr.parse_bytes(data)
    h = info.header
    cuts = {
        0,
        1,
        4,
        6,
        40,
        63,
        64,
        h.metadata_offset + h.metadata_size,
        h.tensor_index_offset,
        h.tensor_index_offset + 1,
        h.data_offset - 1,
        h.data_offset,
        len(data) - 4,
        len(data) - 1,
    }
    for t in info.tensors:
        cuts |= {t.start, t.start + 1, t.start + t.size, t.start + t.size - 1}
    return sorted(c for c in cuts if 0 <= c < len(data))


@pytest.mark.falsifier("FALSIFY-APR-INTEGRITY-001")
def test_truncation_at_every_section_boundary_is_refused(
    image: bytes, tmp_path: Path, falsifier_control: Any
) -> None:
    skip_crc_controls(falsifier_control, "a truncation must be refused by structure alone, CRCs or not")
    cuts = _boundaries(image)
    assert len(cuts) > 40
    for cut in cuts:
        # Structure alone must catch a truncation; the footer CRC is a second line of defence.
        for verify in (False, True):
            with pytest.raises(FormatError) as exc:
                apr.parse_bytes(image[:cut], "cut.apr", verify_footer=verify)
            assert str(exc.value).startswith("cut.apr: ")
    path = tmp_path / "truncated.apr"
    path.write_bytes(image[: len(image) - 4])
    with pytest.raises(FormatError, match=r"truncated\.apr: data section: .* truncated"):
        apr.load_file(path)


@pytest.mark.falsifier("FALSIFY-APR-INTEGRITY-001")
def test_a_flipped_byte_is_caught_by_the_crc_that_covers_it(
    image: bytes, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(falsifier_control, monkeypatch)
    info = apr.parse_bytes(image)
    for at in range(8, 64):
        if 40 <= at < 44:
            continue  # the stored checksum itself: still a mismatch, checked below
        bad = bytearray(image)
        bad[at] ^= 0x01
        with pytest.raises(FormatError, match=r"m: header checksum: stored"):
            apr.parse_bytes(bytes(bad), "m")
    bad = bytearray(image)
    bad[41] ^= 0x80
    with pytest.raises(FormatError, match=r"header checksum"):
        apr.parse_bytes(bytes(bad), "m")
    step = max(1, (len(image) - 68) // 200)
    for at in range(64, len(image) - 4, step):
        bad = bytearray(image)
        bad[at] ^= 0x01
        with pytest.raises(FormatError, match=r"footer checksum|metadata|tensor|index|data"):
            apr.parse_bytes(bytes(bad), "m")
    # A flip inside tensor data passes every structural check: only the footer CRC sees it.
    start = info.tensor("model.norm.weight").start
    bad = bytearray(image)
    bad[start] ^= 0x01
    apr.parse_bytes(bytes(bad), "m", verify_footer=False)
    with pytest.raises(
        FormatError, match=r"m: footer checksum: stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}"
    ):
        apr.parse_bytes(bytes(bad), "m")


# Every known flag bit except ENCRYPTED, SIGNED and LAYOUT_COLUMN_MAJOR, which are refused.
READABLE_FLAGS = 0x0FFF & ~(apr.Flag.ENCRYPTED | apr.Flag.SIGNED | apr.Flag.LAYOUT_COLUMN_MAJOR)
HEADER_FIELDS = [("<H", 6), ("<I", 8), ("<Q", 12), ("<I", 20), ("<Q", 24), ("<Q", 32)]


@pytest.mark.falsifier("FALSIFY-APR-INTEGRITY-001")
def test_absurd_header_fields_are_refused_without_allocating(image: bytes, falsifier_control: Any) -> None:
    skip_crc_controls(
        falsifier_control, "every damaged header here is rehashed: the structural checks are the subject"
    )
    tracemalloc.start()
    try:
        for fmt, at in HEADER_FIELDS:
            width = struct.calcsize(fmt)
            for value in (0, 1, 63, 65, 2 ** (8 * width - 1), 2 ** (8 * width) - 1):
                bad = bytearray(image)
                struct.pack_into(fmt, bad, at, value)
                original = struct.unpack_from(fmt, image, at)[0]
                if value == original or (at == 6 and not value & ~READABLE_FLAGS):
                    # Legitimate flags: 0 predates the layout flag (row-major), and LZ4/ZSTD over a
                    # raw payload is aprender's writer quirk (1 = LZ4, 65 = LZ4 | HAS_FILTERBANK).
                    continue
                tracemalloc.reset_peak()
                with pytest.raises(FormatError, match=r"^m: "):
                    apr.parse_bytes(bytes(rehash(bad)), "m")
                peak = tracemalloc.get_traced_memory()[1]
                assert peak < 4 * len(image) + (1 << 20), (fmt, at, value, peak)
    finally:
        tracemalloc.stop()


EXPECTED = {
    "name_len": ("name_len", "index section", "sorts before", "name:"),
    "dtype": ("dtype",),
    "ndim": ("ndim", "index section", "size"),
    "dims": ("size",),
    "offset": ("offset", "exceeds", "overlaps"),
    "size": ("size",),
}


@pytest.mark.falsifier("FALSIFY-APR-INTEGRITY-001")
def test_malformed_index_fields_are_refused_by_name(image: bytes, falsifier_control: Any) -> None:
    skip_crc_controls(
        falsifier_control, "every damaged index here is rehashed: the structural checks are the subject"
    )
    info = apr.parse_bytes(image)
    pos = info.header.tensor_index_offset
    checked = 0
    for t in info.tensors:
        n = len(t.name.encode())
        ndim = len(t.shape)
        fields = {  # field -> (struct format, offset in the entry, bad values)
            "name_len": ("<H", 0, (0, 257, 0xFFFF)),
            "dtype": ("<B", 2 + n, (2, 31, 127, 255)),
            "ndim": ("<B", 3 + n, (9, 255)),
            "offset": ("<Q", 4 + n + 8 * ndim, (1, 1 << 40, 2**64 - 1)),
            "size": ("<Q", 12 + n + 8 * ndim, (t.size + 1, 2**64 - 1)),
        }
        if ndim:
            fields["dims"] = ("<Q", 4 + n, (t.shape[0] + 1, 2**63))
        for field_name, (fmt, rel, values) in fields.items():
            for value in values:
                bad = bytearray(image)
                struct.pack_into(fmt, bad, pos + rel, value)
                with pytest.raises(FormatError, match=r"^m: (tensor|data)") as exc:
                    apr.parse_bytes(bytes(rehash(bad)), "m")
                message = str(exc.value)
                # The message names the entry (by index or name) and the field or the range it broke.
                assert f"tensor {t.name!r}" in message or "tensor index entry" in message, message
                assert any(word in message for word in EXPECTED[field_name]), message
                checked += 1
        pos += 4 + n + 8 * ndim + 16
    assert checked > 100


@st.composite
def damaged(draw: st.DrawFn, image: bytes) -> bytes:
    buf = bytearray(image)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(buf) - 1))
        buf[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        buf = buf[: draw(st.integers(0, len(buf)))]
    if len(buf) >= 68 and draw(st.booleans()):
        rehash(buf)  # reach the checks behind the CRCs
    return bytes(buf)


@pytest.mark.falsifier("FALSIFY-APR-INTEGRITY-001")
def test_bounded_fuzz_raises_only_format_errors(image: bytes, falsifier_control: Any) -> None:
    skip_crc_controls(
        falsifier_control,
        "the fuzz asserts only FormatError, no hang, no crash; the CRCs are the flipped-byte test's",
    )
    started = time.perf_counter()
    seen = {"refused": 0, "accepted": 0}

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        buf = data.draw(damaged(image))
        try:
            info = apr.parse_bytes(buf, "fuzz.apr")
        except FormatError as exc:
            assert str(exc).startswith("fuzz.apr: ")
            seen["refused"] += 1
            return
        seen["accepted"] += 1
        for t in info.tensors:
            if not t.is_placeholder:
                decode_array(t, buf)

    fuzz()
    assert seen["refused"] > 100
    assert time.perf_counter() - started < 60
