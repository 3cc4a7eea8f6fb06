"""GGUF under fuzz: a tiny qwen2 GGUF, damaged, read by shiptwo's own reader and importer.

The subject is `shiptwo.ggml.reader` (every tensor dequantized) and `shiptwo apr import` of the
file (`shiptwo.apr.gguf_import`). The seed is written by the `gguf` package
(`shiptwo.ggml.testing.tiny_qwen2_gguf`), an independent writer; it is never used to read.
"""

from __future__ import annotations

import struct
from pathlib import Path

from shiptwo.apr.gguf_import import plan_gguf
from shiptwo.fuzz.binary import Field, Target
from shiptwo.ggml import GgufValueType, open_gguf
from shiptwo.ggml.constants import DEFAULT_ALIGNMENT, HEADER_STRUCT, SCALAR_DTYPES

# Of an array's element lengths, only the first few are offered to the mutator: a 258-token
# vocabulary would otherwise crowd out every other field.
_ARRAY_FIELDS = 3


def seed_image(workdir: Path) -> bytes:
    from shiptwo.ggml.testing import tiny_qwen2_gguf

    path = workdir / "seed.gguf"
    tiny_qwen2_gguf(path)
    return path.read_bytes()


class _Walk:
    """Where each field of a valid GGUF is: a cursor that records what it passes."""

    def __init__(self, image: bytes):
        self.image = image
        self.pos = HEADER_STRUCT.size
        self.fields: list[Field] = [
            Field("version", 4, "<I"),
            Field("tensor_count", 8, "<Q"),
            Field("kv_count", 16, "<Q"),
        ]

    def take(self, name: str, fmt: str, *, record: bool = True) -> int:
        if record:
            self.fields.append(Field(name, self.pos, fmt))
        (value,) = struct.unpack_from(fmt, self.image, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self, name: str, *, record: bool = True) -> str:
        n = self.take(f"{name} length", "<Q", record=record)
        self.pos += n
        return self.image[self.pos - n : self.pos].decode("utf-8")

    def value(self, vtype: int, name: str, *, record: bool = True) -> None:
        if vtype == GgufValueType.STRING:
            self.string(name, record=record)
        elif vtype == GgufValueType.ARRAY:
            etype = self.take(f"{name} element type", "<I", record=record)
            count = self.take(f"{name} array length", "<Q", record=record)
            for j in range(count):
                self.value(etype, f"{name}[{j}]", record=record and j < _ARRAY_FIELDS)
        else:
            dtype = SCALAR_DTYPES[GgufValueType(vtype)]
            if record and dtype.kind in "iu":  # counts and sizes: block_count, context_length, ids
                code = {1: "B", 2: "H", 4: "I", 8: "Q"}[dtype.itemsize]
                self.fields.append(Field(name, self.pos, "<" + (code.lower() if dtype.kind == "i" else code)))
            self.pos += dtype.itemsize


def _layout(image: bytes) -> tuple[tuple[Field, ...], tuple[tuple[int, int], ...]]:
    _, _, n_tensors, n_kv = HEADER_STRUCT.unpack_from(image, 0)
    walk = _Walk(image)
    sections = [(0, HEADER_STRUCT.size)]
    for _ in range(n_kv):
        start = walk.pos
        key = walk.string("key", record=False)
        vtype = walk.take(f"{key} type", "<I")
        walk.value(vtype, key)
        sections.append((start, walk.pos))
    offsets = []
    for _ in range(n_tensors):
        start = walk.pos
        name = walk.string("tensor name")
        n_dims = walk.take(f"{name} n_dims", "<I")
        for i in range(n_dims):
            walk.take(f"{name} ne[{i}]", "<Q")
        walk.take(f"{name} type", "<I")
        offsets.append(walk.take(f"{name} offset", "<Q"))
        sections.append((start, walk.pos))
    data = -(-walk.pos // DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
    edges = sorted({*(data + o for o in offsets), len(image)})
    sections += list(zip(edges, edges[1:], strict=False))
    return tuple(walk.fields), tuple(sections)


def check(path: Path) -> None:
    """Our reader over one file, every tensor dequantized, then all of `apr import` but the write.

    The write itself (`write_raw` of checked tensors) is the APR writer, not a GGUF reader, and
    its fsync would cost more than all the rest: `plan_gguf` is the import up to that point.
    """
    with open_gguf(path) as gguf:
        for name in gguf.tensors:
            gguf.dequantize(name)
        plan_gguf(gguf)


def target(workdir: Path) -> Target:
    """The GGUF fuzz target over a seed written into `workdir`."""
    image = seed_image(workdir)
    fields, sections = _layout(image)
    return Target("gguf", ".gguf", image, fields, sections, check)
