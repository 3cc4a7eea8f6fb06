"""On-disk constants of APR v2: magic, header layout and CRC, flags, dtype codes and sizes, and names.

Everything here is documented in docs/apr-v2.md (read from aprender's crates/aprender-core/src/format/v2).
No numpy or torch at import time: the CLI imports this to register commands.
"""

from __future__ import annotations

import enum
import struct

from shiptwo.apr.crc import crc32

MAGIC = b"APR\x00"
VERSION = (2, 0)
HEADER_SIZE = 64
# The header: magic, version major and minor, flags, tensor_count, metadata_offset, metadata_size,
# tensor_index_offset, data_offset, checksum (bytes 40..44) and 20 reserved bytes.
HEADER_STRUCT = struct.Struct("<4sBBHIQIQQI20s")
CHECKSUM_OFFSET = 40
ALIGNMENT = 64
FOOTER_SIZE = 4
# aprender caps metadata at 16 MiB; a larger claim is refused before anything is read.
MAX_METADATA_SIZE = 16 * 1024 * 1024
MAX_NAME_LEN = 256
MAX_NDIM = 8
# numpy and torch index with signed 64-bit integers: an array whose dims (zeros left out) times
# 8 bytes per value pass 2^63 - 1 cannot be made, not even with no elements ([0, 2^63] would
# pass a size check at 0 bytes and fail in numpy). A larger shape is refused by name instead.
MAX_SHAPE_EXTENT = (2**63 - 1) // 8
# The smallest index entry: u16 name_len, a 1-byte name, u8 dtype, u8 ndim, u64 offset, u64 size.
MIN_INDEX_ENTRY_SIZE = 2 + 1 + 1 + 1 + 8 + 8

# Magics of other formats, so a refusal can say what the file is instead.
OTHER_MAGICS: dict[bytes, str] = {
    b"APRN": "APR v1 (aprender's classical-ML format), not APR v2",
    b"APR1": "pre-unification APR1, not APR v2",
    b"APR2": "pre-unification APR2, not APR v2",
    b"GGUF": "a GGUF file, not APR v2",
}


def header_crc(head: bytes) -> int:
    """The header checksum: CRC-32 of bytes 0..40 and 44..64 (the checksum field left out)."""
    return crc32(head[CHECKSUM_OFFSET + 4 : HEADER_SIZE], crc32(head[:CHECKSUM_OFFSET]))


def align64(n: int) -> int:
    """Round n up to the next multiple of 64 (the APR section and tensor alignment)."""
    return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


class Flag(enum.IntFlag):
    """Header flag bits (u16 at offset 6)."""

    LZ4 = 0x0001
    ZSTD = 0x0002
    ENCRYPTED = 0x0004
    SIGNED = 0x0008
    SHARDED = 0x0010
    QUANTIZED = 0x0020
    HAS_FILTERBANK = 0x0040
    HAS_MODEL_CARD = 0x0080
    STREAMING = 0x0100
    HAS_VOCAB = 0x0200
    LAYOUT_ROW_MAJOR = 0x0400
    LAYOUT_COLUMN_MAJOR = 0x0800


KNOWN_FLAGS = 0x0FFF
# Payload transforms shiptwo does not implement: reading through them would decode garbage.
UNSUPPORTED_FLAGS = Flag.ENCRYPTED | Flag.SIGNED
# Compression bits. aprender's writer sets LZ4 without compressing (docs/apr-v2.md, Flags), so a
# file with one of these is read when every tensor's stored size is exactly shape x dtype size
# (the payload is demonstrably raw) and refused as compressed otherwise.
COMPRESSION_FLAGS = Flag.LZ4 | Flag.ZSTD


def flag_names(bits: int) -> list[str]:
    """Names of the set flag bits, unknown bits as hex."""
    names = [f.name for f in Flag if bits & f and f.name]
    if bits & ~KNOWN_FLAGS:
        names.append(f"0x{bits & ~KNOWN_FLAGS:04x}")
    return names


class DType(enum.IntEnum):
    """Tensor dtype codes of the index (0-31 follow GGML numbering)."""

    F32 = 0
    F16 = 1
    F64 = 3
    I32 = 4
    I64 = 5
    I8 = 6
    U8 = 7
    Q4_LEGACY = 8
    Q8_LEGACY = 9
    Q4_K = 12
    Q6_K = 14
    BF16 = 30
    APR_Q4 = 128
    APR_Q8 = 129


# Plain (element-wise) dtypes: bytes per element and the little-endian numpy type string.
PLAIN_ITEMSIZE: dict[DType, int] = {
    DType.F32: 4,
    DType.F16: 2,
    DType.F64: 8,
    DType.I32: 4,
    DType.I64: 8,
    DType.I8: 1,
    DType.U8: 1,
    DType.BF16: 2,
}
NUMPY_TYPESTR: dict[DType, str] = {
    DType.F32: "<f4",
    DType.F16: "<f2",
    DType.F64: "<f8",
    DType.I32: "<i4",
    DType.I64: "<i8",
    DType.I8: "i1",
    DType.U8: "u1",
    DType.BF16: "<u2",  # numpy has no bfloat16: raw bits, decoded as bits << 16
}
# The read-only quantized codes and the canonical code each one means.
QUANT_CANONICAL: dict[DType, DType] = {
    DType.APR_Q4: DType.APR_Q4,
    DType.Q4_LEGACY: DType.APR_Q4,
    DType.APR_Q8: DType.APR_Q8,
    DType.Q8_LEGACY: DType.APR_Q8,
    DType.Q4_K: DType.Q4_K,
    DType.Q6_K: DType.Q6_K,
}
APR_Q4_BLOCK = 32  # values per block: f16 scale + 16 nibble bytes
APR_Q4_BLOCK_BYTES = 18
GGML_SUPER_BLOCK = 256
GGML_BLOCK_BYTES: dict[DType, int] = {DType.Q4_K: 144, DType.Q6_K: 210}

# safetensors dtype strings <-> APR codes (the dtypes both formats share).
SAFETENSORS_DTYPE: dict[str, DType] = {
    "F32": DType.F32,
    "F16": DType.F16,
    "BF16": DType.BF16,
    "F64": DType.F64,
    "I32": DType.I32,
    "I64": DType.I64,
    "I8": DType.I8,
    "U8": DType.U8,
}
SAFETENSORS_NAME: dict[DType, str] = {code: name for name, code in SAFETENSORS_DTYPE.items()}
# Plain dtypes -> the name of the torch dtype that holds them (`torch.<name>`), read and write alike.
TORCH_DTYPES: dict[DType, str] = {
    DType.F32: "float32",
    DType.F16: "float16",
    DType.BF16: "bfloat16",
    DType.F64: "float64",
    DType.I32: "int32",
    DType.I64: "int64",
    DType.I8: "int8",
    DType.U8: "uint8",
}

# The two tensor names the format treats specially: aprender writes a tied head as a 0-byte
# `lm_head.weight` placeholder (or a physical copy) of the embedding; the loaders tie it back.
LM_HEAD = "lm_head.weight"
EMBED = "model.embed_tokens.weight"


def expected_nbytes(dtype: DType, numel: int) -> int:
    """Bytes a tensor of `numel` elements takes in `dtype` (unpadded)."""
    if dtype in PLAIN_ITEMSIZE:
        return numel * PLAIN_ITEMSIZE[dtype]
    canonical = QUANT_CANONICAL[dtype]
    if canonical is DType.APR_Q8:
        return 4 + numel if numel else 0
    if canonical is DType.APR_Q4:
        return -(-numel // APR_Q4_BLOCK) * APR_Q4_BLOCK_BYTES
    return -(-numel // GGML_SUPER_BLOCK) * GGML_BLOCK_BYTES[canonical]
