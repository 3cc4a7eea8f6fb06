"""Read APR v2 files: strict parsing of header, metadata and index, then lazy tensor reads.

The parser checks every offset, size and count against the file before it allocates or
decodes anything, and each refusal is a FormatError naming the file, the field and the value.
What a parse learns is in `shiptwo.apr.records`; the tensor decoding (numpy over a memory map,
torch only when a torch tensor is asked for) in `shiptwo.apr.decode`.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from operator import itemgetter
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self

from shiptwo.apr.constants import (
    ALIGNMENT,
    COMPRESSION_FLAGS,
    EMBED,
    FOOTER_SIZE,
    HEADER_SIZE,
    HEADER_STRUCT,
    KNOWN_FLAGS,
    LM_HEAD,
    MAGIC,
    MAX_METADATA_SIZE,
    MAX_NAME_LEN,
    MAX_NDIM,
    MAX_SHAPE_EXTENT,
    MIN_INDEX_ENTRY_SIZE,
    OTHER_MAGICS,
    PLAIN_ITEMSIZE,
    TORCH_DTYPES,
    UNSUPPORTED_FLAGS,
    DType,
    Flag,
    align64,
    expected_nbytes,
    flag_names,
    header_crc,
)
from shiptwo.apr.crc import crc32
from shiptwo.apr.decode import decode_array, decode_tensor
from shiptwo.apr.records import AprInfo, Header, IndexRow
from shiptwo.errors import FormatError, UsageError

if TYPE_CHECKING:
    import numpy as np

# Handles for the falsifiers' controls (the facts live in constants): test_apr_integrity.py swaps
# `_HEADER` for this module's parse; test_apr_dtype_parity.py edits the shared torch dtype table.
_HEADER = HEADER_STRUCT
_TORCH_DTYPES = TORCH_DTYPES

_U16 = struct.Struct("<H")
# The tail of an index entry after its name, dtype and ndim: the shape, the data offset, the size.
_ENTRY_TAILS = tuple(struct.Struct(f"<{ndim + 2}Q") for ndim in range(MAX_NDIM + 1))
_PLAIN_ITEMSIZE = {int(dtype): size for dtype, size in PLAIN_ITEMSIZE.items()}
_BY_OFFSET = itemgetter(3, 4)  # an index row's data offset, then its size
_ALIGN_MASK = ALIGNMENT - 1
# Any of these bits ends in a refusal: column-major layout, encryption or signing, unknown bits.
_FLAGS_TO_REFUSE = int(Flag.LAYOUT_COLUMN_MAJOR | UNSUPPORTED_FLAGS) | (0xFFFF & ~KNOWN_FLAGS)
_DTYPE_BY_CODE: dict[int, DType] = {int(d): d for d in DType}


def _fail(path: str, field_name: str, message: str) -> FormatError:
    return FormatError(f"{path}: {field_name}: {message}")


def parse(buf: Any, path: str, *, verify_footer: bool = True) -> AprInfo:
    """Parse and validate an APR v2 file held in `buf` (bytes, mmap); decode no tensor data.

    With `verify_footer` the CRC-32 over everything before the footer is computed and checked
    (one pass over the file, through ISA-L when installed: `shiptwo.apr.crc`); without it only
    the header CRC is checked, as aprender does. Over AprFile's memory map that pass is the one
    read of the file: the tensors handed out afterwards are views of the same checked pages.
    """
    size = len(buf)
    if size < HEADER_SIZE:
        magic = bytes(buf[:4])
        if size >= 4 and magic != MAGIC:
            _check_magic(magic, path)
        raise _fail(path, "header", f"truncated: the header needs {HEADER_SIZE} bytes, the file has {size}")
    fields = _HEADER.unpack_from(buf, 0)
    header = Header(fields[0], (fields[1], fields[2]), *fields[3:])
    _check_magic(header.magic, path)
    if header.version[0] != 2:
        raise _fail(path, "version", f"{header.version[0]}.{header.version[1]} is not APR v2.x")
    computed = header_crc(bytes(buf[:HEADER_SIZE]))
    if computed != header.checksum:
        raise _fail(
            path,
            "header checksum",
            f"stored 0x{header.checksum:08x}, computed 0x{computed:08x} over bytes 0..40 and 44..64: "
            "the header is corrupt",
        )
    _check_flags(header.flags, path)

    if size < HEADER_SIZE + FOOTER_SIZE:
        raise _fail(path, "footer", f"truncated: the file has {size} bytes, no room for the 4-byte footer")
    data_end = size - FOOTER_SIZE
    if header.metadata_offset != HEADER_SIZE:
        raise _fail(path, "metadata_offset", f"{header.metadata_offset}, expected {HEADER_SIZE}")
    if header.metadata_size > MAX_METADATA_SIZE:
        raise _fail(
            path, "metadata_size", f"{header.metadata_size} bytes exceeds the {MAX_METADATA_SIZE}-byte cap"
        )
    if header.tensor_index_offset != HEADER_SIZE + align64(header.metadata_size):
        raise _fail(
            path,
            "tensor_index_offset",
            f"{header.tensor_index_offset}, expected {HEADER_SIZE + align64(header.metadata_size)} "
            f"(64 + align64(metadata_size {header.metadata_size}))",
        )
    if header.data_offset % ALIGNMENT or header.data_offset < header.tensor_index_offset:
        raise _fail(
            path,
            "data_offset",
            f"{header.data_offset} is not a 64-aligned offset at or after the tensor index "
            f"at {header.tensor_index_offset}",
        )
    if header.data_offset > data_end:
        raise _fail(
            path,
            "data_offset",
            f"{header.data_offset} is beyond the end of the file ({size} bytes with footer): truncated?",
        )
    index_room = header.data_offset - header.tensor_index_offset
    if header.tensor_count * MIN_INDEX_ENTRY_SIZE > index_room:
        raise _fail(
            path,
            "tensor_count",
            f"{header.tensor_count} entries cannot fit in the {index_room}-byte index section "
            f"[{header.tensor_index_offset}, {header.data_offset})",
        )

    metadata = _parse_metadata(buf, header, path)
    rows = _parse_index(buf, header, path, data_end)

    footer = struct.unpack_from("<I", buf, data_end)[0]
    footer_computed = None
    if verify_footer:
        footer_computed = crc32(memoryview(buf)[:data_end])
        if footer_computed != footer:
            raise _fail(
                path,
                "footer checksum",
                f"stored 0x{footer:08x}, computed 0x{footer_computed:08x} over bytes [0, {data_end}): "
                "metadata, index or tensor data is corrupt",
            )
    return AprInfo(path, size, header, computed, metadata, rows, footer, footer_computed)


def _check_magic(magic: bytes, path: str) -> None:
    if magic == MAGIC:
        return
    what = OTHER_MAGICS.get(magic)
    if what is None and magic[:1] == b"{":
        what = "JSON text, not APR v2"
    elif what is None:
        what = "not an APR v2 file"
    raise _fail(path, "magic", f"found {magic!r}, expected {MAGIC!r}: {what}")


def _check_flags(flags: int, path: str) -> None:
    if not flags & _FLAGS_TO_REFUSE:  # plain ints: IntFlag operators run Python code
        return
    if flags & Flag.LAYOUT_COLUMN_MAJOR:
        raise _fail(
            path,
            "flags",
            f"0x{flags:04x} has LAYOUT_COLUMN_MAJOR (0x0800) set: column-major tensors are refused, "
            "never transposed on a guess; re-import the model row-major",
        )
    unsupported = flags & UNSUPPORTED_FLAGS
    if unsupported:
        names = ", ".join(flag_names(unsupported))
        raise _fail(path, "flags", f"0x{flags:04x} sets {names}: such payloads are not supported")
    if flags & ~KNOWN_FLAGS:
        raise _fail(path, "flags", f"0x{flags:04x} has unknown bits 0x{flags & ~KNOWN_FLAGS:04x}")


def _parse_metadata(buf: Any, header: Header, path: str) -> dict[str, Any]:
    start = header.metadata_offset
    end = start + header.metadata_size
    if end > header.tensor_index_offset or end > len(buf) - FOOTER_SIZE:
        raise _fail(
            path, "metadata_size", f"{header.metadata_size} bytes at {start} run past the file: truncated?"
        )
    if header.metadata_size == 0:
        return {}
    raw = bytes(buf[start:end])
    try:
        # json keeps the last of duplicate keys, which is what aprender's readers do. NaN,
        # Infinity and numbers that overflow a double are not JSON (serde_json refuses them, and
        # the writer never writes them): refused here, so no reader re-emits them as bare tokens.
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # json.loads refuses it; a bare decoder would misname it
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        value = _METADATA_JSON.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(path, "metadata", f"not UTF-8 JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise _fail(path, "metadata", f"a JSON {type(value).__name__}, expected an object")
    return value


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"the number {text[:40]} overflows a 64-bit float")
    return value


# Made once: `json.loads` with hooks builds a decoder per call, which was a third of a small open.
_METADATA_JSON = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_float)


def _parse_index(buf: Any, header: Header, path: str, data_end: int) -> tuple[IndexRow, ...]:
    """The index entries, each checked, and the data layout they describe.

    Run once per tensor on every open, so the loop is kept lean: the common path is a few
    unpacks and compares (structs compiled once, names and lookups bound to locals), and every
    error label is formatted only on the way to a refusal. The layout is checked in the same
    pass while the data lies in index order, as writers lay it out; anything else (and every
    refusal's wording) goes to `_check_data_layout`, which sorts by offset first.
    """
    pos = header.tensor_index_offset
    end = header.data_offset
    data_offset = header.data_offset
    section = data_end - data_offset
    padded_end = 0
    in_order = True
    rows: list[IndexRow] = []
    append = rows.append
    tails = _ENTRY_TAILS
    by_code = _DTYPE_BY_CODE
    itemsize = _PLAIN_ITEMSIZE
    prod = math.prod
    previous = b""  # every name has at least one byte, so the first sorts after this
    for i in range(header.tensor_count):
        if pos + 2 > end:
            raise _fail(
                path,
                f"tensor index entry {i}",
                f"runs past the index section end {end} (tensor_count {header.tensor_count})",
            )
        name_len = buf[pos] | buf[pos + 1] << 8
        fixed = pos + 2 + name_len
        if name_len == 0 or name_len > MAX_NAME_LEN or fixed + 2 > end:
            _refuse_entry(buf, path, i, pos, end)
        raw_name = bytes(buf[pos + 2 : fixed])  # the same object when `buf` slices to bytes
        code, ndim = buf[fixed], buf[fixed + 1]
        dtype = by_code.get(code)
        entry_end = fixed + 18 + 8 * ndim
        if dtype is None or ndim > MAX_NDIM or entry_end > end or raw_name <= previous:
            _refuse_entry(buf, path, i, pos, end, previous)
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(path, f"tensor index entry {i}: name", f"{bytes(raw_name)!r} is not UTF-8") from exc
        tail = tails[ndim].unpack_from(buf, fixed + 2)
        shape = tail[:ndim]
        offset = tail[ndim]
        nbytes = tail[ndim + 1]
        numel = prod(shape)
        size = itemsize.get(code)  # by the code: an enum member hashes through Python code
        want = numel * size if size is not None else expected_nbytes(dtype, numel)
        if (nbytes != want and not (nbytes == 0 and name == LM_HEAD)) or not 0 < numel <= MAX_SHAPE_EXTENT:
            _check_entry_size(header, path, name, dtype, shape, numel, nbytes, want)
        if offset & _ALIGN_MASK or offset + nbytes > section or (nbytes and offset < padded_end):
            in_order = False
        elif nbytes:
            padded_end = (offset + nbytes + _ALIGN_MASK) & ~_ALIGN_MASK
        append((name, dtype, shape, offset, nbytes, data_offset + offset))
        previous = raw_name
        pos = entry_end
    if align64(pos) != end:
        raise _fail(
            path,
            "data_offset",
            f"{end}, but the {header.tensor_count}-entry index ends at {pos} "
            f"(expected data at {align64(pos)})",
        )
    if not in_order or padded_end != section:
        _check_data_layout(rows, header, data_end, path)
    return tuple(rows)


def _refuse_entry(buf: Any, path: str, i: int, pos: int, end: int, previous: bytes = b"") -> NoReturn:
    """The refusal for index entry `i` at `pos`, which the lean loop found wrong somewhere."""
    (name_len,) = _U16.unpack_from(buf, pos)
    if name_len == 0 or name_len > MAX_NAME_LEN:
        raise _fail(
            path, f"tensor index entry {i}: name_len", f"{name_len}, expected 1..{MAX_NAME_LEN} bytes"
        )
    fixed = pos + 2 + name_len
    if fixed + 2 > end:
        raise _fail(path, f"tensor index entry {i}", f"runs past the index section end {end}")
    raw_name = bytes(buf[pos + 2 : fixed])
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"tensor index entry {i}: name", f"{raw_name!r} is not UTF-8") from exc
    code, ndim = buf[fixed], buf[fixed + 1]
    if code not in _DTYPE_BY_CODE:
        raise _fail(path, f"tensor {name!r}: dtype", f"unknown code {code}")
    if ndim > MAX_NDIM:
        raise _fail(path, f"tensor {name!r}: ndim", f"{ndim}, at most {MAX_NDIM}")
    if fixed + 2 + 8 * ndim + 16 > end:
        raise _fail(path, f"tensor {name!r}", f"entry runs past the index section end {end}")
    verb = "repeats" if raw_name == previous else "sorts before"
    raise _fail(
        path,
        "tensor index",
        f"tensor {name!r} {verb} {previous.decode('utf-8')!r}: "
        "the index must be sorted by name bytes, no duplicates",
    )


def _check_entry_size(
    header: Header,
    path: str,
    name: str,
    dtype: DType,
    shape: tuple[int, ...],
    numel: int,
    nbytes: int,
    want: int,
) -> None:
    """Refuse an entry whose byte size does not match its shape and dtype, or whose shape no array
    can take; a 0-byte placeholder of lm_head and an honest 0-element tensor pass."""
    if nbytes != want and not (nbytes == 0 and name == LM_HEAD):  # not a 0-byte placeholder
        compressed = header.flags & COMPRESSION_FLAGS
        if compressed:
            names = "/".join(flag_names(compressed))
            raise _fail(
                path,
                f"tensor {name!r}: size",
                f"{nbytes} bytes stored, shape {list(shape)} x {dtype.name} is {want} raw, and flags "
                f"0x{header.flags:04x} set {names}: {names}-compressed payload not supported "
                "(decompress the file first)",
            )
        raise _fail(
            path,
            f"tensor {name!r}: size",
            f"{nbytes} bytes, but shape {list(shape)} x {dtype.name} needs {want}",
        )
    # After the size check, which refuses such a shape with elements and bytes: what is left
    # is a 0-element tensor (or a 0-byte placeholder) whose dims no array can take. With
    # elements, every dim is at least 1 and the product of the non-zero dims is numel.
    extent = numel if numel else math.prod(d or 1 for d in shape)
    if extent > MAX_SHAPE_EXTENT:
        raise _fail(
            path,
            f"tensor {name!r}: shape",
            f"{list(shape)}: its non-zero dims multiply to {extent}, past the {MAX_SHAPE_EXTENT} "
            "values numpy and torch can index, even for a tensor with no elements",
        )


def _check_data_layout(rows: Sequence[IndexRow], header: Header, data_end: int, path: str) -> None:
    section = data_end - header.data_offset
    padded_end = 0
    for name, _, _, offset, size, _ in sorted(rows, key=_BY_OFFSET):
        if offset % ALIGNMENT:
            raise _fail(path, f"tensor {name!r}: offset", f"{offset} is not 64-byte aligned")
        if offset + size > section:
            raise _fail(
                path,
                f"tensor {name!r}",
                f"data [{offset}, {offset + size}) exceeds the {section}-byte data section: truncated?",
            )
        if size:
            if offset < padded_end:
                raise _fail(
                    path,
                    f"tensor {name!r}",
                    f"data at {offset} overlaps the tensor before it (ends {padded_end})",
                )
            padded_end = (offset + size + ALIGNMENT - 1) & -ALIGNMENT
    if padded_end != section:
        raise _fail(
            path,
            "data section",
            f"{section} bytes, but the tensors fill {padded_end}: "
            "the file is truncated or has trailing bytes",
        )


# ---------------------------------------------------------------------------------------------
# File-level API


class AprFile:
    """An open, validated APR v2 file over a private memory map (a `safe_open` handle).

    Reading a tensor touches only that tensor's pages; torch tensors are zero-copy views of the
    map (copy-on-write), numpy BF16/quantized arrays are decoded copies. Use as a context manager.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        framework: str = "pt",
        device: str = "cpu",
        verify_footer: bool = False,
    ) -> None:
        if framework not in ("pt", "torch", "np", "numpy"):
            raise UsageError(f"framework {framework!r}: expected 'pt' or 'np'")
        self.path = str(path)
        self._framework = "np" if framework in ("np", "numpy") else "pt"
        self._device = device
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # no buffered file object
            try:
                if os.fstat(fd).st_size == 0:
                    raise _fail(self.path, "header", "the file is empty (0 bytes)")
                # A private (copy-on-write) map: tensors handed out are zero-copy views that a
                # caller may write to without ever touching the file, as safetensors' mmap backend.
                self._mmap: Any = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
            finally:
                os.close(fd)
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot open: {exc.strerror or exc}") from exc
        try:
            self.info = parse(self._mmap, self.path, verify_footer=verify_footer)
        except BaseException:
            self._mmap.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop this handle's map; tensors already returned keep it mapped and stay valid.

        The map is never closed explicitly: torch tensors from `torch.frombuffer` hold the map
        object but not a buffer export, so an explicit close would unmap memory they still use.
        It is unmapped when the last tensor viewing it is freed.
        """
        self._mmap = None

    def keys(self) -> list[str]:
        """Tensor names in index (sorted) order, 0-byte placeholders included."""
        return self.info.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.info.names)

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata object (a copy)."""
        copy: dict[str, Any] = json.loads(json.dumps(self.info.metadata))
        return copy

    def get_tensor(self, name: str) -> Any:
        """One tensor: torch (framework 'pt') or numpy (framework 'np', BF16 decoded to float32)."""
        info = self.info.tensor(name)
        if info.is_placeholder:
            raise FormatError(
                f"{self.path}: tensor {name!r}: a 0-byte placeholder of shape {list(info.shape)}; "
                f"it has no data (aprender's tied-embedding stand-in: tie it to {EMBED})"
            )
        if self._framework == "np":
            return decode_array(info, self._mmap)
        return decode_tensor(info, self._mmap, device=self._device)

    def get_array(self, name: str, *, raw_bf16: bool = False) -> np.ndarray:
        """One tensor as numpy, whatever the framework (BF16 as float32, or raw uint16 bits)."""
        return decode_array(self.info.tensor(name), self._mmap, raw_bf16=raw_bf16)


def safe_open(
    path: str | os.PathLike[str], framework: str = "pt", device: str = "cpu", *, verify_footer: bool = False
) -> AprFile:
    """Open an APR v2 file lazily, like `safetensors.safe_open`: validated header, metadata and
    index; tensors read on demand from a memory map.

    The header CRC is always checked; the footer CRC (a pass over the whole file) only with
    `verify_footer=True`. framework 'np' gives numpy arrays and needs no torch.
    """
    return AprFile(path, framework=framework, device=device, verify_footer=verify_footer)


def parse_bytes(data: bytes, name: str = "<bytes>", *, verify_footer: bool = True) -> AprInfo:
    """Validate an in-memory APR image (`name` labels the errors); see `parse`."""
    return parse(data, name, verify_footer=verify_footer)


def read_header(path: str | os.PathLike[str], *, verify_footer: bool = True) -> AprInfo:
    """Parse and validate a file's header, metadata and index (and by default its footer CRC)."""
    with AprFile(path, framework="np", verify_footer=verify_footer) as f:
        return f.info


def load_file(
    path: str | os.PathLike[str], device: str = "cpu", *, verify_footer: bool = True
) -> dict[str, Any]:
    """Load every tensor of an APR v2 file as torch tensors keyed by name, like safetensors.

    Dtypes are preserved (BF16 -> torch.bfloat16, F16 -> torch.float16, ...); quantized types
    are dequantized to float32. A 0-byte `lm_head.weight` placeholder is left out, and a
    missing one is not invented: `read_header(path).lm_head_tied` tells the model loader to
    tie it to the embedding. Both CRCs are checked unless `verify_footer=False`.

    The footer CRC is the one read of the file: it runs over the private map, and the tensors
    are views of the pages it checked (no second copy). Like safetensors' map, a file rewritten
    in place afterwards would show through untouched pages; shiptwo's writers replace files
    atomically (a new inode), which never does.
    """
    with AprFile(path, framework="pt", device=device, verify_footer=verify_footer) as f:
        return {
            t.name: decode_tensor(t, f._mmap, device=device) for t in f.info.tensors if not t.is_placeholder
        }


def load_arrays(path: str | os.PathLike[str], *, verify_footer: bool = True) -> dict[str, np.ndarray]:
    """Torch-free `load_file`: numpy arrays (BF16 and quantized decoded to float32)."""
    with AprFile(path, framework="np", verify_footer=verify_footer) as f:
        return {t.name: decode_array(t, f._mmap) for t in f.info.tensors if not t.is_placeholder}
