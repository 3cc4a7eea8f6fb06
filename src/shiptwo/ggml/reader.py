"""Read GGUF v2/v3 (little-endian) from a memory map: header, typed metadata, tensor infos.

Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, then the metadata
(key string, u32 value type, value), then one info per tensor (name, u32 n_dims, u64 ne[n_dims],
u32 ggml type, u64 offset into the data section), then padding to `general.alignment` (default
32) and the data section. Strings are a u64 length and UTF-8 bytes.

The parser trusts no number in the file: every count and length is checked against the bytes
that remain before anything is allocated or looped over, so a hostile file costs at most its
own size. Each refusal is one FormatError line naming the file, the field and the value.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from shiptwo.errors import FormatError
from shiptwo.ggml import quants
from shiptwo.ggml.constants import (
    ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT,
    HEADER_STRUCT,
    MAGIC,
    MAX_DIMS,
    MAX_NESTING,
    MAX_SHAPE_EXTENT,
    MIN_KV_SIZE,
    MIN_TENSOR_INFO_SIZE,
    MIN_VALUE_SIZE,
    OTHER_MAGICS,
    SCALAR_DTYPES,
    VERSIONS,
    GgufValueType,
)
from shiptwo.ggml.quants import BLOCK, GgmlType, tensor_nbytes

if TYPE_CHECKING:
    import torch

_FIX = "the file is truncated or corrupt; download or convert it again"


@dataclass(frozen=True)
class GgufTensor:
    """One tensor info. `shape` is row-major (torch) order: GGUF's ne[] reversed.

    `offset` is the absolute file offset of the first byte; `nbytes` the size of its blocks.
    """

    name: str
    ggml_type: GgmlType
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the GGUF magic (the name and suffix are not looked at)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def open_gguf(path: str | os.PathLike[str]) -> GgufFile:
    """Open and validate a GGUF; use as a context manager (`with open_gguf(p) as g:`)."""
    return GgufFile(path)


class GgufFile:
    """A parsed GGUF over a read-only memory map: metadata and tensor infos, data read on demand.

    `metadata` maps each key to a Python value (int, float, bool, str, or lists of those);
    `metadata_types` keeps each key's GGUF type (an array as (ARRAY, element type, ...)).
    `tensors` is in file order. Arrays from `raw` are views of the map and keep it alive.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER_STRUCT.size:
                if size >= len(MAGIC):
                    _check_magic(f.read(10), str(self.path), size)
                raise FormatError(
                    f"{self.path}: header: the file has {size} bytes, "
                    f"a GGUF header needs {HEADER_STRUCT.size}; {_FIX}"
                )
            self._mm: mmap.mmap | None = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            parsed = _Parser(self._mm, str(self.path)).parse()
        except BaseException:
            self.close()
            raise
        self.version: int = parsed.version
        self.metadata: dict[str, Any] = parsed.metadata
        self.metadata_types: dict[str, tuple[GgufValueType, ...]] = parsed.types
        self.alignment: int = parsed.alignment
        self.data_offset: int = parsed.data_offset
        self.tensors: dict[str, GgufTensor] = parsed.tensors
        self.file_size = size

    def tensor(self, name: str) -> GgufTensor:
        """The tensor info called `name`; KeyError naming the file when there is none."""
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the file (no copy)."""
        t = self.tensor(name)
        if self._mm is None:
            raise ValueError(f"{self.path}: the GGUF is closed")
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def dequantize(self, name: str) -> torch.Tensor:
        """The tensor as a new float32 torch tensor of `.shape` (FormatError for a type without a kernel)."""
        import torch

        t = self.tensor(name)
        values = quants.dequantize(self.raw(name), t.ggml_type, t.numel, what=f"{self.path}: tensor {name!r}")
        return torch.from_numpy(values.reshape(t.shape))

    def close(self) -> None:
        """Drop the map. Views from `raw` still alive keep it mapped until they are gone."""
        mm, self._mm = self._mm, None
        if mm is not None:
            with contextlib.suppress(BufferError):  # views remain: closed when the last one is collected
                mm.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = f"{len(self.metadata)} keys, {len(self.tensors)} tensors"
        return f"GgufFile({str(self.path)!r}, v{self.version}, {counts})"


def _check_magic(head: bytes, path: str, size: int) -> None:
    """Refuse a file whose first bytes (`head`, up to 10) are not the GGUF magic, saying what it is."""
    magic = head[:4]
    if magic == MAGIC:
        return
    what = OTHER_MAGICS.get(magic)
    if what is None and magic[:3] == b"APR":
        what = "an APR file"
    elif what is None and len(head) >= 9 and head[8:9] == b"{" and struct.unpack_from("<Q", head)[0] < size:
        # safetensors: a u64 JSON header length, then the JSON's '{'
        what = "a safetensors file (open it with safetensors, or `shiptwo apr import` it)"
    elif what is None and magic[:1] == b"{":
        what = "JSON text"
    raise FormatError(f"{path}: magic: found {magic!r}, expected {MAGIC!r}: {what or 'not a GGUF file'}")


@dataclass
class _Parsed:
    version: int
    metadata: dict[str, Any]
    types: dict[str, tuple[GgufValueType, ...]]
    alignment: int
    data_offset: int
    tensors: dict[str, GgufTensor]


class _Parser:
    """A cursor over the map; every read checks the bytes it needs are there."""

    def __init__(self, buf: mmap.mmap, path: str):
        self.buf = buf
        self.path = path
        self.size = len(buf)
        self.pos = 0

    def fail(self, field: str, message: str) -> FormatError:
        return FormatError(f"{self.path}: {field}: {message}")

    def need(self, n: int, field: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                field,
                f"needs {n} bytes at offset {self.pos}, "
                f"the file ends {self.size - self.pos} bytes later; {_FIX}",
            )

    def u32(self, field: str) -> int:
        self.need(4, field)
        (v,) = struct.unpack_from("<I", self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self, field: str) -> int:
        self.need(8, field)
        (v,) = struct.unpack_from("<Q", self.buf, self.pos)
        self.pos += 8
        return int(v)

    def string(self, field: str) -> str:
        n = self.u64(f"{field} length")
        if n > self.size - self.pos:
            left = self.size - self.pos
            raise self.fail(
                field, f"string length {n} runs past the end of the file ({left} bytes left); {_FIX}"
            )
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            why = f"{exc.reason} at byte {exc.start}"
            raise self.fail(field, f"{raw[:40]!r} is not UTF-8 ({why}); {_FIX}") from None

    def value_type(self, field: str) -> GgufValueType:
        code = self.u32(f"{field} type")
        try:
            return GgufValueType(code)
        except ValueError:
            raise self.fail(
                field, f"unknown value type {code} (GGUF defines 0..12); a newer GGUF or a corrupt file"
            ) from None

    def parse(self) -> _Parsed:
        self.need(HEADER_STRUCT.size, "header")
        _, version, n_tensors, n_kv = HEADER_STRUCT.unpack_from(self.buf, 0)
        _check_magic(self.buf[:10], self.path, self.size)
        if version not in VERSIONS:
            if version & 0xFFFF == 0 and version >> 24 in VERSIONS:
                raise self.fail(
                    "version",
                    f"{version} is the byte-swapped {version >> 24}: a big-endian GGUF; shiptwo reads "
                    "little-endian GGUF only, convert it with llama.cpp's gguf-py (gguf_convert_endian)",
                )
            raise self.fail(
                "version",
                f"{version} is not supported (shiptwo reads GGUF v2 and v3); "
                "re-convert with a current llama.cpp",
            )
        self.pos = HEADER_STRUCT.size
        self._check_count("kv_count", n_kv, MIN_KV_SIZE)
        metadata: dict[str, Any] = {}
        types: dict[str, tuple[GgufValueType, ...]] = {}
        for i in range(n_kv):
            key = self.string(f"metadata key #{i}")
            if key in metadata:
                raise self.fail(f"metadata key #{i}", f"{key!r} appears twice; {_FIX}")
            field = f"metadata {key!r}"
            vtype = self.value_type(field)
            metadata[key], types[key] = self.value(vtype, field, depth=0)
        alignment = self._alignment(metadata, types)
        self._check_count("tensor_count", n_tensors, MIN_TENSOR_INFO_SIZE)
        infos = [self.tensor_info(i) for i in range(n_tensors)]
        data_offset = -(-self.pos // alignment) * alignment
        tensors = self._place(infos, data_offset, alignment)
        return _Parsed(version, metadata, types, alignment, data_offset, tensors)

    def _check_count(self, field: str, count: int, min_size: int) -> None:
        left = self.size - self.pos
        if count > left // min_size:
            raise self.fail(
                field,
                f"{count} entries cannot fit in the {left} bytes left "
                f"(each takes at least {min_size}); {_FIX}",
            )

    def value(self, vtype: GgufValueType, field: str, depth: int) -> tuple[Any, tuple[GgufValueType, ...]]:
        """One value of `vtype` and its type path; arrays recurse up to MAX_NESTING deep."""
        if vtype is GgufValueType.STRING:
            return self.string(field), (vtype,)
        if vtype is not GgufValueType.ARRAY:
            return self.scalars(vtype, 1, field)[0], (vtype,)
        if depth >= MAX_NESTING:
            raise self.fail(field, f"arrays nested more than {MAX_NESTING} deep; {_FIX}")
        etype = self.value_type(f"{field} element")
        count = self.u64(f"{field} array length")
        left = self.size - self.pos
        if count > left // MIN_VALUE_SIZE[etype]:
            raise self.fail(
                field,
                f"array of {count} {etype.name} cannot fit in the {left} bytes left "
                f"(each takes at least {MIN_VALUE_SIZE[etype]}); {_FIX}",
            )
        if etype is GgufValueType.STRING:
            return [self.string(f"{field}[{j}]") for j in range(count)], (vtype, etype)
        if etype is GgufValueType.ARRAY:
            items: list[Any] = []
            inner: tuple[GgufValueType, ...] = (etype,)
            for j in range(count):
                item, path = self.value(etype, f"{field}[{j}]", depth + 1)
                items.append(item)
                inner = path if j == 0 else inner  # the type path of the first element, as gguf-py
            return items, (vtype, *inner)
        return self.scalars(etype, count, field), (vtype, etype)

    def scalars(self, vtype: GgufValueType, count: int, field: str) -> list[Any]:
        dtype = SCALAR_DTYPES[vtype]
        self.need(dtype.itemsize * count, field)
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += dtype.itemsize * count
        if vtype is GgufValueType.BOOL:
            if count and int(arr.max()) > 1:
                raise self.fail(field, f"bool byte {int(arr.max())} is neither 0 nor 1; {_FIX}")
            return [bool(b) for b in arr.tolist()]
        values: list[Any] = arr.tolist()
        return values

    def _alignment(self, metadata: dict[str, Any], types: dict[str, tuple[GgufValueType, ...]]) -> int:
        if ALIGNMENT_KEY not in metadata:
            return DEFAULT_ALIGNMENT
        value = metadata[ALIGNMENT_KEY]
        if types[ALIGNMENT_KEY] != (GgufValueType.UINT32,) or value <= 0 or value & (value - 1):
            kind = "/".join(t.name for t in types[ALIGNMENT_KEY])
            raise self.fail(
                f"metadata {ALIGNMENT_KEY!r}", f"{value!r} ({kind}) is not a power-of-two UINT32; {_FIX}"
            )
        return int(value)

    def tensor_info(self, i: int) -> tuple[str, GgmlType, tuple[int, ...], int]:
        name = self.string(f"tensor info #{i} name")
        field = f"tensor {name!r}"
        n_dims = self.u32(f"{field} n_dims")
        if n_dims > MAX_DIMS:
            raise self.fail(field, f"n_dims {n_dims}, GGML tensors have at most {MAX_DIMS}; {_FIX}")
        self.need(8 * n_dims, f"{field} dims")
        ne = struct.unpack_from(f"<{n_dims}Q", self.buf, self.pos)
        self.pos += 8 * n_dims
        code = self.u32(f"{field} type")
        try:
            ggml_type = GgmlType(code)
        except ValueError:
            raise self.fail(field, f"unknown GGML type {code}; a newer GGML type or a corrupt file") from None
        offset = self.u64(f"{field} offset")
        return name, ggml_type, tuple(int(d) for d in reversed(ne)), offset

    def _place(
        self, infos: list[tuple[str, GgmlType, tuple[int, ...], int]], data_offset: int, alignment: int
    ) -> dict[str, GgufTensor]:
        tensors: dict[str, GgufTensor] = {}
        for name, ggml_type, shape, rel in infos:
            field = f"tensor {name!r}"
            if name in tensors:
                raise self.fail(field, f"the name appears twice; {_FIX}")
            values = BLOCK[ggml_type][0]
            inner = shape[-1] if shape else 1
            if inner % values:
                raise self.fail(
                    field,
                    f"row length {inner} is not a multiple of the {ggml_type.name} block "
                    f"of {values} values; {_FIX}",
                )
            extent = 1
            for d in shape:
                extent *= max(d, 1)
            if extent > MAX_SHAPE_EXTENT:
                raise self.fail(
                    field,
                    f"shape {list(shape)}: its non-zero dims multiply to {extent}, past the "
                    f"{MAX_SHAPE_EXTENT} values numpy and torch can index; {_FIX}",
                )
            numel = 1
            for d in shape:
                numel *= d
            nbytes = tensor_nbytes(ggml_type, numel)
            if rel % alignment:
                raise self.fail(field, f"offset {rel} is not a multiple of the alignment {alignment}; {_FIX}")
            start = data_offset + rel
            if start + nbytes > self.size:
                raise self.fail(
                    field,
                    f"data [{start}, {start + nbytes}) runs past the end of the file "
                    f"({self.size} bytes); {_FIX}",
                )
            tensors[name] = GgufTensor(name, ggml_type, shape, start, nbytes)
        ordered = sorted((t for t in tensors.values() if t.nbytes), key=lambda t: t.offset)
        for a, b in itertools.pairwise(ordered):
            if b.offset < a.offset + a.nbytes:
                raise self.fail(
                    f"tensor {b.name!r}",
                    f"data [{b.offset}, {b.offset + b.nbytes}) overlaps tensor {a.name!r} "
                    f"[{a.offset}, {a.offset + a.nbytes}); {_FIX}",
                )
        return tensors
