"""On-disk constants of GGUF v2/v3: magic, versions, header layout, metadata value types, alignment.

The layout itself is described in `shiptwo.ggml.reader`; the GGML tensor types, block sizes and
dequantizers are in `shiptwo.ggml.quants`.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

import numpy as np

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 had 32-bit counts and lengths; nothing current writes it
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS
# numpy and torch index with signed 64-bit integers: dims (zeros left out) multiplying past this
# many values cannot be made into an array at 8 bytes a value, not even one with no elements.
MAX_SHAPE_EXTENT = (2**63 - 1) // 8
MAX_NESTING = 8  # arrays of arrays deeper than this are refused (no real file nests at all)
# The header: magic, u32 version, u64 tensor count, u64 metadata (key/value) count.
HEADER_STRUCT = struct.Struct("<4sIQQ")
MIN_KV_SIZE = 8 + 4 + 1  # empty key, value type, the smallest value
MIN_TENSOR_INFO_SIZE = 8 + 4 + 4 + 8  # empty name, n_dims 0, type, offset


class GgufValueType(enum.IntEnum):
    """The metadata value type codes of the GGUF spec."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: their little-endian numpy dtype (the size is its itemsize).
SCALAR_DTYPES: dict[GgufValueType, np.dtype[Any]] = {
    t: np.dtype(code)
    for t, code in (
        (GgufValueType.UINT8, "u1"),
        (GgufValueType.INT8, "i1"),
        (GgufValueType.UINT16, "<u2"),
        (GgufValueType.INT16, "<i2"),
        (GgufValueType.UINT32, "<u4"),
        (GgufValueType.INT32, "<i4"),
        (GgufValueType.FLOAT32, "<f4"),
        (GgufValueType.BOOL, "u1"),
        (GgufValueType.UINT64, "<u8"),
        (GgufValueType.INT64, "<i8"),
        (GgufValueType.FLOAT64, "<f8"),
    )
}
# The fewest bytes one value of each type can take: caps an array's length by the bytes left.
MIN_VALUE_SIZE = {t: d.itemsize for t, d in SCALAR_DTYPES.items()} | {
    GgufValueType.STRING: 8,
    GgufValueType.ARRAY: 12,
}

# Magics of formats a GGUF path is sometimes mistaken for, so a refusal can say what it is.
OTHER_MAGICS = {
    b"APR\x00": "an APR v2 model file (open it with shiptwo.apr)",
    b"APRN": "an APR v1 file (aprender's classical-ML format)",
    b"PK\x03\x04": "a zip archive (a PyTorch checkpoint?)",
    b"lmgg": "a legacy GGML file (pre-GGUF); convert it with llama.cpp",
    b"ggjt": "a legacy GGJT file (pre-GGUF); convert it with llama.cpp",
    b"FUGG": "a big-endian-swapped magic; not a little-endian GGUF",
}
