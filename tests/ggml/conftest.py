"""Fixtures for the GGUF room: the real Qwen2 GGUF (skipped when absent) and hand-built files.

The real file is found through $SHIPTWO_QWEN_GGUF (default /tmp/qwen.gguf). Small files are
assembled byte by byte here, so a malformed one can be made by changing one field.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shiptwo.ggml import GgufFile, open_gguf

GGUF_ENV = "SHIPTWO_QWEN_GGUF"
DEFAULT_GGUF = "/tmp/qwen.gguf"


def qwen_gguf_location() -> Path:
    return Path(os.environ.get(GGUF_ENV) or DEFAULT_GGUF)


@pytest.fixture(scope="session")
def qwen_gguf_path() -> Path:
    path = qwen_gguf_location()
    if not path.is_file():
        pytest.skip(f"no Qwen2 GGUF at {path} (set ${GGUF_ENV} to a qwen2 GGUF file)")
    return path


@pytest.fixture(scope="session")
def qwen_gguf(qwen_gguf_path: Path) -> Iterator[GgufFile]:
    with open_gguf(qwen_gguf_path) as g:
        yield g


def gstr(s: str | bytes) -> bytes:
    """A GGUF string: u64 length, then the bytes."""
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class GgufBytes:
    """A GGUF image assembled from parts; every field can be set to a bad value."""

    kvs: list[bytes] = field(default_factory=list)  # each: key string, u32 type, value
    infos: list[bytes] = field(default_factory=list)  # each: name, n_dims, ne[], type, offset
    data: bytes = b""
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32

    pack_str = staticmethod(gstr)

    def kv(self, key: str | bytes, vtype: int, payload: bytes) -> GgufBytes:
        self.kvs.append(gstr(key) + struct.pack("<I", vtype) + payload)
        return self

    def tensor(self, name: str | bytes, ne: list[int], ggml_type: int, offset: int) -> GgufBytes:
        self.infos.append(gstr(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset))
        return self

    def head(self) -> bytes:
        n_t = len(self.infos) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        return struct.pack("<4sIQQ", self.magic, self.version, n_t, n_kv)

    def build(self) -> bytes:
        body = self.head() + b"".join(self.kvs) + b"".join(self.infos)
        pad = -len(body) % self.alignment
        return body + b"\0" * pad + self.data

    def write(self, path: Path) -> Path:
        path.write_bytes(self.build())
        return path


def small_gguf() -> GgufBytes:
    """A valid file: two keys, an F32 [2, 4] tensor and an F16 [8] tensor."""
    import numpy as np

    a = np.arange(8, dtype="<f4").tobytes()
    b = np.linspace(-1, 1, 8).astype("<f2").tobytes()
    g = GgufBytes()
    g.kv("general.architecture", 8, gstr("test"))
    g.kv("test.count", 4, struct.pack("<I", 7))
    g.tensor("a", [4, 2], 0, 0)  # ne[0] = 4 is the inner dimension: shape (2, 4)
    g.tensor("b", [8], 1, 32)
    g.data = a + b"\0" * (32 - len(a)) + b
    return g


@pytest.fixture
def small() -> GgufBytes:
    """The parts of a small valid GGUF (see `small_gguf`), fresh for each test."""
    return small_gguf()


@pytest.fixture(scope="session")
def gguf_kit() -> type[GgufBytes]:
    """The byte builder itself, for files built from nothing (`gguf_kit.pack_str` packs a string)."""
    return GgufBytes


@pytest.fixture(scope="session")
def small_image() -> bytes:
    """The bytes of `small_gguf()` (session-scoped, for property tests)."""
    return small_gguf().build()
