"""Write APR v2 files byte-compatible with aprender's AprV2Writer.

Layout: header (64 B, CRC-32 of bytes 0..40 + 44..64), compact JSON metadata padded to 64,
the index sorted by name bytes and padded to 64, each tensor's bytes padded to 64, and a
CRC-32 footer over everything before it. Files are written to a temp file beside the target
and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiptwo.apr.constants import (
    CHECKSUM_OFFSET,
    COMPRESSION_FLAGS,
    HEADER_SIZE,
    HEADER_STRUCT,
    KNOWN_FLAGS,
    MAGIC,
    MAX_METADATA_SIZE,
    MAX_NAME_LEN,
    MAX_NDIM,
    TORCH_DTYPES,
    UNSUPPORTED_FLAGS,
    VERSION,
    DType,
    Flag,
    align64,
    expected_nbytes,
    header_crc,
)
from shiptwo.apr.crc import crc32
from shiptwo.errors import FormatError, UsageError

_ZEROS = bytes(64)


@dataclass(frozen=True)
class FileRange:
    """Bytes [offset, offset + size) of a file, copied by chunked reads when written.

    Importing through reads into one reused buffer avoids a page fault per 4 KiB of a mapped source.
    """

    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class RawTensor:
    """A tensor to write: its name, dtype code, row-major shape and unpadded bytes."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    data: Any  # a FileRange, or anything with the buffer protocol (bytes, memoryview, numpy uint8 array)


_CHUNK = 8 << 20


def raw_nbytes(data: Any) -> int:
    """The size of a RawTensor's data, whether a FileRange or a buffer."""
    return data.size if isinstance(data, FileRange) else memoryview(data).nbytes


def encode_metadata(metadata: Mapping[str, Any] | None, *, path: str = "<apr>") -> bytes:
    """Compact UTF-8 JSON, as serde_json writes it; NaN/Inf values are refused."""
    try:
        return json.dumps(
            dict(metadata or {}), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: metadata: not JSON-serialisable ({exc})") from exc


def _index_entry(t: RawTensor, offset: int, size: int) -> bytes:
    name = t.name.encode("utf-8")
    return b"".join(
        (
            struct.pack("<H", len(name)),
            name,
            struct.pack("<BB", int(t.dtype), len(t.shape)),
            struct.pack(f"<{len(t.shape)}Q", *t.shape),
            struct.pack("<QQ", offset, size),
        )
    )


def _check(t: RawTensor, path: str) -> int:
    name = t.name.encode("utf-8")
    if not 1 <= len(name) <= MAX_NAME_LEN:
        raise UsageError(
            f"{path}: tensor {t.name[:40]!r}: name is {len(name)} bytes, APR allows 1..{MAX_NAME_LEN}"
        )
    if len(t.shape) > MAX_NDIM:
        raise UsageError(
            f"{path}: tensor {t.name!r}: {len(t.shape)} dimensions, APR allows at most {MAX_NDIM}"
        )
    if any(d < 0 for d in t.shape):
        raise UsageError(f"{path}: tensor {t.name!r}: negative dimension in shape {list(t.shape)}")
    size = raw_nbytes(t.data)
    numel = 1
    for d in t.shape:
        numel *= d
    want = expected_nbytes(DType(t.dtype), numel)
    if size != want:
        raise UsageError(
            f"{path}: tensor {t.name!r}: {size} bytes, "
            f"but shape {list(t.shape)} x {DType(t.dtype).name} needs {want}"
        )
    return size


def write_raw(
    path: str | os.PathLike[str],
    tensors: Iterable[RawTensor],
    metadata: Mapping[str, Any] | None = None,
    *,
    flags: int = 0,
) -> None:
    """Write tensors given as raw bytes; the index is sorted, LAYOUT_ROW_MAJOR always set.

    `flags` may add informational bits (HAS_VOCAB, QUANTIZED, ...); payload-transform and
    column-major bits are refused because this writer never produces such payloads.
    """
    target = Path(path)
    spath = str(target)
    forbidden = flags & (COMPRESSION_FLAGS | UNSUPPORTED_FLAGS | Flag.LAYOUT_COLUMN_MAJOR)
    if forbidden or flags & ~KNOWN_FLAGS:
        raise UsageError(f"{spath}: flags 0x{flags:04x}: this writer cannot produce those payloads")
    items = sorted(tensors, key=lambda t: t.name.encode("utf-8"))
    sizes = [_check(t, spath) for t in items]
    for a, b in itertools.pairwise(items):
        if a.name == b.name:
            raise UsageError(f"{spath}: tensor {a.name!r} is given twice")

    meta = encode_metadata(metadata, path=spath)
    if len(meta) > MAX_METADATA_SIZE:
        raise UsageError(f"{spath}: metadata is {len(meta)} bytes, APR caps it at {MAX_METADATA_SIZE}")
    entries = []
    offset = 0
    for t, size in zip(items, sizes, strict=True):
        entries.append(_index_entry(t, offset, size))
        offset += align64(size)
    index = b"".join(entries)
    index_offset = HEADER_SIZE + align64(len(meta))
    data_offset = index_offset + align64(len(index))
    header = bytearray(
        HEADER_STRUCT.pack(
            MAGIC,
            VERSION[0],
            VERSION[1],
            int(flags | Flag.LAYOUT_ROW_MAJOR),
            len(items),
            HEADER_SIZE,
            len(meta),
            index_offset,
            data_offset,
            0,
            bytes(20),
        )
    )
    struct.pack_into("<I", header, CHECKSUM_OFFSET, header_crc(bytes(header)))

    fd, tmp = open_temp_beside(target)
    sources: dict[str, Any] = {}  # source files of FileRange tensors, opened once each
    try:
        with os.fdopen(fd, "wb") as f:
            crc = 0
            for chunk in (
                bytes(header),
                meta,
                _ZEROS[: align64(len(meta)) - len(meta)],
                index,
                _ZEROS[: align64(len(index)) - len(index)],
            ):
                f.write(chunk)
                crc = crc32(chunk, crc)
            buffer = bytearray(_CHUNK) if any(isinstance(t.data, FileRange) for t in items) else bytearray()
            for t, size in zip(items, sizes, strict=True):
                if isinstance(t.data, FileRange):
                    crc = _copy_range(t.data, f, crc, buffer, sources, spath)
                else:
                    data = memoryview(t.data).cast("B")
                    f.write(data)
                    crc = crc32(data, crc)
                pad = _ZEROS[: align64(size) - size]
                f.write(pad)
                crc = crc32(pad, crc)
            f.write(struct.pack("<I", crc))
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        replace_into(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        for src in sources.values():
            src.close()


def check_output_path(target: Path) -> None:
    """Refuse an output path that names a directory (or sits under a file) before writing anything."""
    if target.is_dir():
        raise UsageError(
            f"{target}: is a directory; give the output file's path, e.g. {target / 'model.apr'}"
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(
                    f"{target}: its parent {parent} is a file, not a directory; choose another output path"
                )
            break


def open_temp_beside(target: Path) -> tuple[int, str]:
    """A unique temp file in `target`'s directory (created when missing): (fd, path), for `replace_into`."""
    check_output_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UsageError(
            f"{target}: cannot write here: {exc.strerror or exc}; choose another output path"
        ) from exc


def replace_into(tmp: str, target: Path) -> None:
    """Give the synced temp file the target's mode (0644 when new) and rename it into place atomically.

    The same durability as `shiptwo.fileio.atomic_write_bytes`: data fsynced, then os.replace.
    """
    os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
    os.replace(tmp, target)


def _copy_range(
    r: FileRange, out: Any, crc: int, buffer: bytearray, sources: dict[str, Any], spath: str
) -> int:
    src = sources.get(r.path)
    if src is None:
        src = sources[r.path] = open(r.path, "rb")  # noqa: SIM115 - closed after the last tensor
    view = memoryview(buffer)
    done = 0
    while done < r.size:
        n = os.preadv(src.fileno(), [view[: min(_CHUNK, r.size - done)]], r.offset + done)
        if n <= 0:
            raise FormatError(
                f"{spath}: source {r.path} ended at {r.offset + done}, {r.size - done} bytes short"
            )
        out.write(view[:n])
        crc = crc32(view[:n], crc)
        done += n
    return crc


# torch dtype (as `str(tensor.dtype)`) -> code: constants.TORCH_DTYPES read backwards.
_TORCH_CODES = {f"torch.{name}": code for code, name in TORCH_DTYPES.items()}
_NUMPY_CODES = {
    "float32": DType.F32,
    "float16": DType.F16,
    "float64": DType.F64,
    "int32": DType.I32,
    "int64": DType.I64,
    "int8": DType.I8,
    "uint8": DType.U8,
}


def to_raw(name: str, tensor: Any) -> RawTensor:
    """A torch tensor or numpy array as a RawTensor (little-endian bytes, row-major)."""
    if type(tensor).__module__.startswith("torch"):
        code = _TORCH_CODES.get(str(tensor.dtype))
        if code is None:
            raise UsageError(
                f"tensor {name!r}: dtype {tensor.dtype} cannot be stored in APR "
                f"(supported: {', '.join(k[6:] for k in _TORCH_CODES)})"
            )
        import torch

        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy()
        return RawTensor(name, code, tuple(int(d) for d in tensor.shape), data)
    import numpy as np

    arr = np.asarray(tensor)
    code = _NUMPY_CODES.get(arr.dtype.name)
    if code is None:
        raise UsageError(f"tensor {name!r}: numpy dtype {arr.dtype} cannot be stored in APR")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return RawTensor(name, code, tuple(int(d) for d in arr.shape), arr.reshape(-1).view(np.uint8))


def save_file(
    tensors: Mapping[str, Any],
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write torch tensors (or numpy arrays) to an APR v2 file, like `safetensors.torch.save_file`.

    dtypes map one to one (bfloat16 -> BF16, code 30); the file is written atomically with a
    sorted index, 64-byte alignment, both CRCs and the LAYOUT_ROW_MAJOR flag. `metadata` is any
    JSON object; aprender reads its known keys (architecture, hidden_size, ...) by name.
    """
    if not isinstance(tensors, Mapping):
        raise UsageError(f"{path}: save_file takes a dict of name -> tensor, got {type(tensors).__name__}")
    raws = [to_raw(name, t) for name, t in tensors.items()]
    write_raw(path, raws, metadata)
