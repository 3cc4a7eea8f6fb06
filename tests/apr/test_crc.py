"""APR's CRC-32 goes through ISA-L when installed (zlib the oracle and the fallback), and a
verified load checksums the very buffer its tensors view: one pass over the file, no copy."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import tomllib
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shiptwo import apr
from shiptwo.apr import crc
from shiptwo.errors import FormatError

isal_zlib = pytest.importorskip("isal.isal_zlib", reason="isal (the `apr` extra's fast CRC-32) is missing")

ROOT = Path(__file__).resolve().parents[2]
# Lengths around the widths a SIMD CRC folds by (16, 64, 256 bytes, a 4 KiB page), and odd ones.
EDGES = [0, 1, 2, 3, 7, 15, 16, 17, 31, 63, 64, 65, 127, 255, 256, 257, 1023, 4095, 4096, 4097, 65537]


def test_crc32_is_isal_when_installed() -> None:
    assert crc.crc32_backend() == "isal"


@pytest.mark.parametrize("n", EDGES + [(1 << 20) + 3])
def test_crc32_equals_zlib_on_random_buffers(n: int) -> None:
    data = random.Random(n).randbytes(n)
    assert crc.crc32(data) == zlib.crc32(data)
    assert crc.crc32(data, 0xDEADBEEF) == zlib.crc32(data, 0xDEADBEEF)
    assert crc.crc32(memoryview(bytearray(data))) == zlib.crc32(data)


def test_crc32_chained_over_chunks_equals_zlib_over_the_whole() -> None:
    data = random.Random(7).randbytes(300_001)
    view = memoryview(data)
    for cut in EDGES + [len(data) - 1, len(data)]:
        first = crc.crc32(view[:cut])
        assert crc.crc32(view[cut:], first) == zlib.crc32(data), cut
    # Many uneven chunks in a row, as a reader that checksums what it has read so far.
    rng, value, pos = random.Random(8), 0, 0
    while pos < len(data):
        step = rng.choice(EDGES[1:])
        value = crc.crc32(view[pos : pos + step], value)
        pos += step
    assert value == zlib.crc32(data)


def test_crc32_falls_back_to_zlib_without_isal(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_isal_calls(monkeypatch)
    monkeypatch.setattr(crc, "_isal_zlib", lambda: None)
    data = random.Random(1).randbytes(4099)
    assert crc.crc32_backend() == "zlib"
    assert crc.crc32(data, 5) == zlib.crc32(data, 5)
    assert calls == []


def test_verified_load_checksums_through_isal_the_buffer_its_tensors_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.apr"
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a": torch.randn(512, 300, generator=g).to(torch.bfloat16),
        "b": torch.randn(1000, generator=g),
        "c": torch.arange(77, dtype=torch.int32),
    }
    apr.save_file(tensors, path)
    size = path.stat().st_size
    calls = _count_isal_calls(monkeypatch)

    loaded = apr.load_file(path)

    footer = [c for c in calls if c[1] == size - 4]
    assert len(footer) == 1, f"expected one ISA-L call over the {size - 4} bytes before the footer: {calls}"
    start, nbytes = footer[0]
    for name, t in loaded.items():
        torch.testing.assert_close(t, tensors[name], rtol=0, atol=0)
        # A view of the checksummed buffer, not a second copy of the bytes.
        assert start <= t.data_ptr() and t.data_ptr() + t.nbytes <= start + nbytes, name

    calls.clear()
    apr.load_file(path, verify_footer=False)
    assert all(n < size - 4 for _, n in calls), calls  # the header's 60 bytes only


def test_verified_load_through_isal_still_refuses_a_flipped_data_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.apr"
    apr.save_file({"w": torch.ones(4096)}, path)
    image = bytearray(path.read_bytes())
    image[-100] ^= 0x01
    path.write_bytes(image)
    with pytest.raises(FormatError, match=r"m\.apr: footer checksum: stored 0x[0-9a-f]{8}, computed"):
        apr.load_file(path)


def test_a_fresh_interpreter_without_isal_loads_through_zlib(tmp_path: Path) -> None:
    """The harness-alone install has no isal: the reader must import and verify without it."""
    path = tmp_path / "m.apr"
    apr.save_file({"w": torch.arange(10, dtype=torch.float32)}, path)
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "isal":
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
                return None
        sys.meta_path.insert(0, Block())
        from shiptwo import apr
        from shiptwo.apr.crc import crc32_backend
        arrays = apr.load_arrays({str(path)!r})
        print(crc32_backend(), arrays["w"].tolist()[-1], "isal" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["zlib", "9.0", "False"]


def test_the_apr_extra_installs_isal_pinned_in_the_lock() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.split(">")[0].split("=")[0].strip() == "isal" for req in extras["apr"]), extras["apr"]
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("isal")]
    assert len(pins) == 1 and pins[0].startswith("isal=="), pins


def _count_isal_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Wrap ISA-L's crc32 to record (address, length) of every buffer it is handed."""
    real = isal_zlib.crc32
    calls: list[tuple[int, int]] = []

    def counting(data: Any, value: int = 0) -> int:
        arr = np.frombuffer(data, dtype=np.uint8)
        calls.append((int(arr.ctypes.data), arr.size))
        return int(real(data, value))

    monkeypatch.setattr(isal_zlib, "crc32", counting)
    return calls
