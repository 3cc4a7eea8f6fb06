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

from shiptwo.apr.constants import EMBED, LM_HEAD, PLAIN_ITEMSIZE, SAFETENSORS_DTYPE, DType
from shiptwo.apr.metadata import ImportReport, metadata_from_config, numel
from shiptwo.apr.reader import AprFile
from shiptwo.apr.writer import FileRange, RawTensor, write_raw
from shiptwo.errors import FormatError, UsageError

# A safetensors header larger than this is refused before it is read (the library caps at 100 MB).
_MAX_ST_HEADER = 100 * 1024 * 1024


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
    if n > min(_MAX_ST_HEADER, size - 8):
        raise FormatError(f"{spath}: safetensors header length {n} exceeds the file ({size} bytes)")
    try:
        header = json.loads(bytes(m[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{spath}: safetensors header is not UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{spath}: safetensors header is not a JSON object")
    base = 8 + n
    view = memoryview(m)
    for name, entry in header.items():
        if name == "__metadata__":
            source.st_metadata.update(entry or {})
            continue
        try:
            dtype_s, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{spath}: tensor {name!r}: malformed header entry {entry!r}") from exc
        code = SAFETENSORS_DTYPE.get(dtype_s)
        if code is None:
            raise FormatError(
                f"{spath}: tensor {name!r}: dtype {dtype_s} has no APR code "
                f"(APR holds {', '.join(SAFETENSORS_DTYPE)})"
            )
        if not 0 <= begin <= end <= size - base or end - begin != numel(shape) * PLAIN_ITEMSIZE[code]:
            raise FormatError(
                f"{spath}: tensor {name!r}: data_offsets [{begin}, {end}) do not fit shape "
                f"{shape} x {dtype_s} in a {size - base}-byte data section"
            )
        if name in source.tensors:
            raise FormatError(
                f"{spath}: tensor {name!r} appears in more than one shard "
                f"(also in {source.tensors[name].file})"
            )
        source.tensors[name] = SourceTensor(
            name, code, tuple(shape), view[base + begin : base + end], spath, base + begin
        )


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
        count = sum(numel(r.shape) for r in raws)
        nbytes = sum(r.data.size for r in raws)
        meta.update(
            {
                "name": Path(src).stem if Path(src).is_file() else Path(src).name,
                "source": str(src),
                "original_format": "safetensors",
                "param_count": count,
                "total_size": nbytes,
            }
        )
        if tied:
            meta["tied_embeddings"] = True
            meta["hf_lm_head_stored"] = has_head
        if source.st_metadata:
            meta["source_metadata"] = dict(source.st_metadata)
        write_raw(out, raws, meta)
        dtypes: dict[str, int] = {}
        for r in raws:
            dtypes[r.dtype.name] = dtypes.get(r.dtype.name, 0) + 1
        del raws
        return ImportReport(
            str(out), len(source.tensors) + (1 if tied and not has_head else 0), nbytes, tied, dtypes
        )


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
