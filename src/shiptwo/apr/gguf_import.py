"""Import a GGUF into APR v2: what is kept byte for byte, and what is dequantized.

APR's dtype codes below 32 follow GGML's numbering only where APR holds the same layout: Q4_K
(12) and Q6_K (14) are GGML's super-blocks, so those tensors are copied unchanged. APR's codes 6
and 8 are I8 and a legacy alias of APR Q4, not GGML's Q5_0 and Q8_0, so those (and every other
GGML block type) are dequantized to F32, which is exact: each value is an f16 scale times a small
integer. F32, F16 and BF16 tensors keep their bytes. Names and the config come from the GGUF
through `shiptwo.ggml.qwen2`, the one table that maps GGUF names to Hugging Face ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shiptwo.apr.constants import EMBED, LM_HEAD, DType
from shiptwo.apr.metadata import ImportReport, metadata_from_config, numel
from shiptwo.apr.writer import FileRange, RawTensor, raw_nbytes, to_raw, write_raw

if TYPE_CHECKING:
    from shiptwo.ggml import GgufFile

# GGML type name -> the APR code whose bytes are identical (kept as they are).
KEPT: dict[str, DType] = {
    "F32": DType.F32,
    "F16": DType.F16,
    "BF16": DType.BF16,
    "Q4_K": DType.Q4_K,
    "Q6_K": DType.Q6_K,
}


def import_gguf(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> ImportReport:
    """Write the tensors of a qwen2 GGUF as an APR v2 file (see the module doc for what is kept)."""
    from shiptwo.ggml import open_gguf

    with open_gguf(src) as gguf:
        raws, meta = plan_gguf(gguf)
        write_raw(out, raws, meta)
    dtypes: dict[str, int] = {}
    for r in raws:
        dtypes[r.dtype.name] = dtypes.get(r.dtype.name, 0) + 1
    return ImportReport(str(out), len(raws), int(meta["total_size"]), meta["tied_embeddings"], dtypes)


def plan_gguf(gguf: GgufFile) -> tuple[list[RawTensor], dict[str, Any]]:
    """The tensors and metadata an import of an open GGUF writes: every check, nothing written.

    Dequantized tensors are computed here; kept ones are file ranges of the GGUF, read when written.
    """
    from shiptwo.ggml.qwen2 import hf_config_from_gguf, iter_hf_tensors

    src_path = Path(gguf.path)
    config = hf_config_from_gguf(gguf)
    raws: list[RawTensor] = []
    kept = dequantized = 0
    for hf_name, tensor in iter_hf_tensors(gguf):
        code = KEPT.get(tensor.ggml_type.name)
        if code is not None:
            raws.append(
                RawTensor(hf_name, code, tensor.shape, FileRange(str(src_path), tensor.offset, tensor.nbytes))
            )
            kept += 1
        else:
            raws.append(to_raw(hf_name, gguf.dequantize(tensor.name)))
            dequantized += 1
    names = {r.name for r in raws}
    tied = LM_HEAD not in names
    if tied:  # aprender's convention: a physical copy of the embedding plus the flag
        embed = next(r for r in raws if r.name == EMBED)
        raws.append(RawTensor(LM_HEAD, embed.dtype, embed.shape, embed.data))
    meta: dict[str, Any] = metadata_from_config(config)
    meta.update(
        {
            "name": src_path.stem,
            "source": str(src_path),
            "original_format": "gguf",
            "gguf_version": gguf.version,
            "gguf_general": {
                k: v
                for k, v in gguf.metadata.items()
                if k.startswith("general.") and isinstance(v, str | int | float | bool)
            },
            "gguf_tensors_kept": kept,
            "gguf_tensors_dequantized": dequantized,
            "param_count": sum(numel(r.shape) for r in raws),
            "total_size": sum(raw_nbytes(r.data) for r in raws),
            "tied_embeddings": tied,
        }
    )
    return raws, meta
