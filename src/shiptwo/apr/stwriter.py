"""A deterministic safetensors writer: the same tensors and metadata give the same bytes, always.

`safetensors.torch.save_file` writes the `__metadata__` map in a hash order that changes from one
process to the next, so a file with two or more metadata keys never round-trips byte for byte
(found by FALSIFY-QWEN-BF16-PARITY-001 on the real snapshot). This writer keeps the metadata in
the order given and lays tensors out as the safetensors library does (dtype, widest first, then
name), with the header padded by spaces to a multiple of 8, so a file the library wrote with one
metadata key, or in the order recorded at import, comes back identical.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shiptwo.apr.constants import SAFETENSORS_NAME, DType
from shiptwo.apr.writer import open_temp_beside, replace_into, to_raw

# The library's tensor order: by dtype in this rank (its enum order, reversed), then by name.
_DTYPE_RANK = {
    name: rank for rank, name in enumerate(("I64", "F64", "F32", "I32", "BF16", "F16", "I8", "U8"))
}
_CHUNK = 8 << 20


def save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write torch tensors (or numpy arrays) as a .safetensors file, atomically and deterministically."""
    raws = [to_raw(name, t) for name, t in tensors.items()]
    raws.sort(key=lambda r: (_DTYPE_RANK[SAFETENSORS_NAME[DType(r.dtype)]], r.name))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for r in raws:
        size = memoryview(r.data).nbytes
        header[r.name] = {
            "dtype": SAFETENSORS_NAME[DType(r.dtype)],
            "shape": list(r.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    target = Path(path)
    fd, tmp = open_temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            for r in raws:
                view = memoryview(r.data).cast("B")
                for start in range(0, view.nbytes, _CHUNK):
                    out.write(view[start : start + _CHUNK])
            out.flush()
            os.fsync(out.fileno())
        replace_into(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
