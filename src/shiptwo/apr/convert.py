"""Convert between APR v2 and safetensors / Hugging Face model directories.

Import copies each tensor's bytes unchanged (BF16 stays BF16, code 30) and maps config.json to
APR metadata. A tied model gets aprender's convention: a physical `lm_head.weight` copy of the
embedding plus `"tied_embeddings": true`. Export gives back what the source held: for a tied
model, no `lm_head.weight`.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from shiptwo.apr.constants import (
    EMBED,
    LM_HEAD,
    MAX_SHAPE_EXTENT,
    PLAIN_ITEMSIZE,
    SAFETENSORS_DTYPE,
    DType,
)
from shiptwo.apr.metadata import ImportReport, metadata_from_config, numel
from shiptwo.apr.reader import AprFile
from shiptwo.apr.writer import FileRange, RawTensor, write_raw
from shiptwo.errors import FormatError, UsageError

# What the safetensors library refuses, refused here the same way, before anything is allocated:
# a header over its 100,000,000-byte cap, and JSON nested 128 levels deep (serde_json's recursion
# limit; measured against safetensors 0.8: 127 levels read, 128 refused).
_MAX_ST_HEADER = 100_000_000
_MAX_ST_DEPTH = 127


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of a safetensors source: dtype code, shape and a view of its bytes."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    data: memoryview
    file: str
    offset: int  # absolute offset of the bytes in `file`


@dataclass
class Source:
    """The tensors of one or more safetensors files (an HF dir's shards), plus its config."""

    path: str
    tensors: dict[str, SourceTensor] = field(default_factory=dict)
    st_metadata: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    _maps: list[mmap.mmap] = field(default_factory=list, repr=False)

    def close(self) -> None:
        self.tensors.clear()
        for m in self._maps:
            with contextlib.suppress(BufferError):  # a caller still holds a view: closed when collected
                m.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_safetensors(path: Path, source: Source) -> None:
    spath = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise FormatError(f"{spath}: safetensors header: the file has {size} bytes, fewer than 8")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise FormatError(f"{spath}: cannot open: {exc.strerror or exc}") from exc
    source._maps.append(m)
    (n,) = struct.unpack_from("<Q", m, 0)
    if n > _MAX_ST_HEADER:
        raise FormatError(
            f"{spath}: safetensors header: length {n} exceeds the {_MAX_ST_HEADER}-byte cap "
            "(the file is corrupt or not safetensors)"
        )
    if n > size - 8:
        raise FormatError(f"{spath}: safetensors header: length {n} exceeds the file ({size} bytes)")
    base = 8 + n
    entries, metadata = parse_st_header(bytes(m[8:base]), size - base, spath)
    source.st_metadata.update(metadata)
    view = memoryview(m)
    for name, (code, shape, begin, end) in entries.items():
        if name in source.tensors:
            raise FormatError(
                f"{spath}: tensor {name!r} appears in more than one shard "
                f"(also in {source.tensors[name].file})"
            )
        source.tensors[name] = SourceTensor(
            name, code, shape, view[base + begin : base + end], spath, base + begin
        )


def parse_st_header(
    raw: bytes, data_size: int, spath: str
) -> tuple[dict[str, tuple[DType, tuple[int, ...], int, int]], dict[str, str]]:
    """Validate a safetensors JSON header as the safetensors library does; one FormatError per refusal.

    Returns {name: (APR dtype code, shape, begin, end)} in header order and the `__metadata__`
    map. What the library refuses is refused: bytes that are not UTF-8 JSON (NaN and Infinity
    included), nesting past serde_json's limit, a duplicate key, an entry without a string dtype,
    a list of non-negative integer dims or two offsets, a size that is not shape x dtype, and
    offsets that do not tile the data section exactly from 0 to its end, in some order, with no
    gap, overlap or trailing byte. A `__metadata__` must map strings to strings.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{spath}: safetensors header: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{spath}: safetensors header: not JSON ({str(exc)[:200]})") from None
    if _depth(header) > _MAX_ST_DEPTH:
        raise FormatError(f"{spath}: safetensors header: nests deeper than {_MAX_ST_DEPTH} levels")
    if not isinstance(header, dict):
        raise FormatError(f"{spath}: safetensors header: not a JSON object")
    try:
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(
            f"{spath}: safetensors header: holds a lone surrogate {exc.object[exc.start : exc.end]!r} "
            "(JSON text may escape one; no UTF-8 string can hold it)"
        ) from None
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise FormatError(
            f"{spath}: safetensors __metadata__: {_clip(metadata)} is not a map of strings to strings"
        )
    entries: dict[str, tuple[DType, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        where = f"{spath}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise FormatError(
                f"{where}: malformed header entry {_clip(entry)} (needs dtype, shape and data_offsets)"
            )
        dtype_s, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        code = SAFETENSORS_DTYPE.get(dtype_s) if isinstance(dtype_s, str) else None
        if code is None:
            shown = dtype_s if isinstance(dtype_s, str) and dtype_s.isprintable() else _clip(dtype_s)
            raise FormatError(
                f"{where}: dtype {shown} has no APR code (APR holds {', '.join(SAFETENSORS_DTYPE)})"
            )
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise FormatError(f"{where}: shape {_clip(shape)} is not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
            raise FormatError(
                f"{where}: data_offsets {_clip(offsets)} is not two non-negative integers [begin, end]"
            )
        if _extent(shape) > MAX_SHAPE_EXTENT:
            raise FormatError(
                f"{where}: shape {shape}: its non-zero dims multiply past the {MAX_SHAPE_EXTENT} values "
                "numpy and torch can index, even for a tensor with no elements"
            )
        begin, end = offsets
        if not begin <= end <= data_size or end - begin != numel(tuple(shape)) * PLAIN_ITEMSIZE[code]:
            raise FormatError(
                f"{where}: data_offsets [{begin}, {end}) do not fit shape "
                f"{shape} x {dtype_s} in a {data_size}-byte data section"
            )
        entries[name] = (code, tuple(shape), begin, end)
    covered = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin != covered:
            what = "overlaps the tensor before it" if begin < covered else "leaves a gap before it"
            raise FormatError(
                f"{spath}: tensor {name!r}: data_offsets [{begin}, {end}) {what} (expected to start at "
                f"{covered}); tensors must tile the data section"
            )
        covered = end
    if covered != data_size:
        raise FormatError(
            f"{spath}: safetensors data section: {data_size} bytes, but the tensors fill {covered}: "
            "the file is truncated or has trailing bytes"
        )
    return entries, metadata or {}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _extent(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= max(d, 1)
    return n


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def _is_uint(value: Any) -> bool:
    # JSON true/false are Python ints; safetensors (serde) takes neither as a number.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _clip(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def open_source(path: str | os.PathLike[str]) -> Source:
    """Open a .safetensors file or a Hugging Face model dir (config.json + one or more shards)."""
    root = Path(path)
    source = Source(str(root))
    if root.is_dir():
        config_path = root / "config.json"
        if config_path.is_file():
            try:
                source.config = json.loads(config_path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise FormatError(f"{config_path}: not UTF-8 JSON ({exc})") from exc
        index_path = root / "model.safetensors.index.json"
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (UnicodeDecodeError, ValueError, KeyError) as exc:
                raise FormatError(f"{index_path}: no readable weight_map ({exc})") from exc
            shards = sorted({root / name for name in weight_map.values()})
        else:
            shards = sorted(root.glob("*.safetensors"))
        if not shards:
            raise FormatError(
                f"{root}: no *.safetensors weights in this directory "
                "(pytorch_model.bin is not read; convert it)"
            )
        for shard in shards:
            _read_safetensors(shard, source)
    elif root.is_file():
        _read_safetensors(root, source)
    else:
        raise UsageError(f"{root}: no such file or directory")
    return source


def import_model(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> ImportReport:
    """Import a .safetensors file, an HF model dir or a GGUF into an APR v2 file.

    The format is recognised by the file's bytes, not its name: a GGUF goes through
    `shiptwo.apr.gguf_import` (which says what it keeps and what it dequantizes); safetensors
    bytes are copied unchanged.

    A tied source (no `lm_head.weight`, an embedding present, config not saying untied) gets a
    physical `lm_head.weight` copy and `"tied_embeddings": true`, as aprender writes it.
    """
    from shiptwo.ggml import is_gguf

    if Path(src).is_file() and is_gguf(src):
        from shiptwo.apr.gguf_import import import_gguf

        return import_gguf(src, out)
    with open_source(src) as source:
        raws, meta = plan_import(source, src)
        write_raw(out, raws, meta)
        dtypes: dict[str, int] = {}
        for r in raws:
            dtypes[r.dtype.name] = dtypes.get(r.dtype.name, 0) + 1
        tied = bool(meta.get("tied_embeddings"))
        return ImportReport(str(out), len(raws), int(meta["total_size"]), tied, dtypes)


def plan_import(source: Source, src: str | os.PathLike[str]) -> tuple[list[RawTensor], dict[str, Any]]:
    """The tensors and metadata an import of an open safetensors source writes; nothing written.

    A tied source (no `lm_head.weight`, an embedding present, config not saying untied) gets a
    physical `lm_head.weight` copy and `"tied_embeddings": true`, as aprender writes it.
    """
    config = source.config or {}
    tie_cfg = config.get("tie_word_embeddings")
    has_head = LM_HEAD in source.tensors
    has_embed = EMBED in source.tensors
    if not has_head and has_embed and tie_cfg is False:
        raise FormatError(
            f"{src}: {LM_HEAD} is missing but config.json says tie_word_embeddings: false; "
            "the source is incomplete"
        )
    tied = has_embed and (not has_head or tie_cfg is True)
    raws = [
        RawTensor(t.name, t.dtype, t.shape, FileRange(t.file, t.offset, t.data.nbytes))
        for t in source.tensors.values()
    ]
    if tied and not has_head:
        embed = source.tensors[EMBED]
        raws.append(
            RawTensor(
                LM_HEAD, embed.dtype, embed.shape, FileRange(embed.file, embed.offset, embed.data.nbytes)
            )
        )
    meta: dict[str, Any] = metadata_from_config(config) if config else {"model_type": ""}
    meta.update(
        {
            "name": Path(src).stem if Path(src).is_file() else Path(src).name,
            "source": str(src),
            "original_format": "safetensors",
            "param_count": sum(numel(r.shape) for r in raws),
            "total_size": sum(r.data.size for r in raws),
        }
    )
    if tied:
        meta["tied_embeddings"] = True
        meta["hf_lm_head_stored"] = has_head
    if source.st_metadata:
        meta["source_metadata"] = dict(source.st_metadata)
    return raws, meta


def export_tensors(apr: AprFile, *, keep_tied_copy: bool = False) -> Iterator[tuple[str, Any]]:
    """The torch tensors an export writes: all but a tied lm_head copy (unless kept).

    Quantized tensors come out dequantized to float32 (safetensors has no APR Q4/Q8 or K-quants).
    """
    meta = apr.info.metadata
    drop_head = (
        not keep_tied_copy
        and meta.get("tied_embeddings") is True
        and meta.get("hf_lm_head_stored") is not True
    )
    for info in apr.info.tensors:
        if info.name == LM_HEAD and (drop_head or info.is_placeholder):
            continue
        yield info.name, apr.get_tensor(info.name)


def export_model(
    apr_path: str | os.PathLike[str], out: str | os.PathLike[str], *, keep_tied_copy: bool = False
) -> int:
    """Export an APR v2 file to one .safetensors file; returns the number of tensors written.

    The safetensors `__metadata__` recorded at import is written back in its order, through a
    deterministic writer (`shiptwo.apr.stwriter`), so an imported single-file model exports to
    the same bytes.
    """
    from shiptwo.apr.stwriter import save_safetensors

    with AprFile(apr_path, framework="pt", verify_footer=True) as apr:
        tensors = dict(export_tensors(apr, keep_tied_copy=keep_tied_copy))
        st_meta = apr.info.metadata.get("source_metadata")
        if not isinstance(st_meta, dict) or not all(isinstance(v, str) for v in st_meta.values()):
            st_meta = {"format": "pt"}
        save_safetensors(tensors, out, metadata=st_meta)
    return len(tensors)


__all__ = [
    "ImportReport",
    "Source",
    "SourceTensor",
    "export_model",
    "import_model",
    "metadata_from_config",
    "open_source",
]
