"""GGML tensor types: their codes, their block sizes, and our own vectorized dequantizers.

The block layouts are those of ggml-common.h: every quantized type stores blocks of `values`
numbers in `nbytes` bytes, little-endian, the f16 scales inside the block. Each kernel takes the
blocks as an (n, nbytes) uint8 array and writes (n, values) float32 with the arithmetic of
ggml's reference `dequantize_row_*` (same products in the same order), so results are bit-equal
to ggml's and gguf-py's. Large tensors are cut into chunks that run on a thread pool: numpy
releases the GIL inside its loops, and chunks small enough for the cache keep the temporaries
cheap.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shiptwo.errors import FormatError

QK_K = 256  # values per K-quant super-block


class GgmlType(enum.IntEnum):
    """ggml's `enum ggml_type` (the codes stored in a GGUF tensor info); gaps are retired types."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


# The one table of block geometry: type -> (values per block, bytes per block), from the struct
# definitions in ggml-common.h (Q8_1 is 36 bytes there: two f16 and 32 int8).
BLOCK: dict[GgmlType, tuple[int, int]] = {
    GgmlType.F32: (1, 4),
    GgmlType.F16: (1, 2),
    GgmlType.Q4_0: (32, 2 + 16),
    GgmlType.Q4_1: (32, 2 + 2 + 16),
    GgmlType.Q5_0: (32, 2 + 4 + 16),
    GgmlType.Q5_1: (32, 2 + 2 + 4 + 16),
    GgmlType.Q8_0: (32, 2 + 32),
    GgmlType.Q8_1: (32, 2 + 2 + 32),
    GgmlType.Q2_K: (QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    GgmlType.Q3_K: (QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    GgmlType.Q4_K: (QK_K, 2 + 2 + 12 + QK_K // 2),
    GgmlType.Q5_K: (QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    GgmlType.Q6_K: (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    GgmlType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GgmlType.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    GgmlType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GgmlType.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8),
    GgmlType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GgmlType.IQ4_NL: (32, 2 + 16),
    GgmlType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GgmlType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    GgmlType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    GgmlType.I8: (1, 1),
    GgmlType.I16: (1, 2),
    GgmlType.I32: (1, 4),
    GgmlType.I64: (1, 8),
    GgmlType.F64: (1, 8),
    GgmlType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GgmlType.BF16: (1, 2),
    GgmlType.TQ1_0: (QK_K, 2 + 4 * 13),
    GgmlType.TQ2_0: (QK_K, 2 + 64),
    GgmlType.MXFP4: (32, 1 + 16),
}


def tensor_nbytes(ggml_type: GgmlType, numel: int) -> int:
    """Bytes a tensor of `numel` values takes (numel must be a whole number of blocks)."""
    values, nbytes = BLOCK[ggml_type]
    return numel // values * nbytes


# --- kernels: (n, block bytes) uint8 -> out (n, block values) float32 -------------------------

_NIBBLE_SHIFT = np.array([0, 4], dtype=np.uint8)
_CRUMB_SHIFT = np.array([0, 2, 4, 6], dtype=np.uint8)


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 at byte `start` of every block, as an (n, 1) float32 column (exact)."""
    return blocks[:, start : start + 2].view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 2k): all low nibbles, then all high nibbles (the legacy-quant order)."""
    return (qs[:, None, :] >> _NIBBLE_SHIFT[None, :, None] & 0x0F).reshape(len(qs), -1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 4) bytes of a little-endian u32 -> (n, 32) uint8 of bit j shifted to 0x10."""
    return np.unpackbits(qh, axis=1, bitorder="little") << 4


def _plain(dtype: str) -> Callable[[np.ndarray, np.ndarray], None]:
    def kernel(blocks: np.ndarray, out: np.ndarray) -> None:
        out[:] = blocks.view(dtype)

    return kernel


def _bf16(blocks: np.ndarray, out: np.ndarray) -> None:
    # bfloat16 is the top half of a float32: widening is a shift, exact.
    out.view(np.uint32)[:] = blocks.view("<u2").astype(np.uint32) << 16


def _q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles(blocks[:, 2:]).view(np.int8) - np.int8(8)
    np.multiply(_f16(blocks, 0), q, out=out)


def _q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_f16(blocks, 0), _nibbles(blocks[:, 4:]), out=out)
    out += _f16(blocks, 2)


def _q5_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = (_nibbles(blocks[:, 6:]) | _high_bits(blocks[:, 2:6])).view(np.int8) - np.int8(16)
    np.multiply(_f16(blocks, 0), q, out=out)


def _q5_1(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_f16(blocks, 0), _nibbles(blocks[:, 8:]) | _high_bits(blocks[:, 4:8]), out=out)
    out += _f16(blocks, 2)


def _q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_f16(blocks, 0), blocks[:, 2:].view(np.int8), out=out)


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit mins (ggml's get_scale_min_k4)."""
    lo, hi = packed[:, 0:4], packed[:, 4:8]
    top = packed[:, 8:12]
    scales = np.concatenate([lo & 63, (top & 0x0F) | (lo >> 6 << 4)], axis=1)
    mins = np.concatenate([hi & 63, (top >> 4) | (hi >> 6 << 4)], axis=1)
    return scales, mins


def _q2_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = len(blocks)
    sc = blocks[:, :16]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    dl = (d * (sc & 0x0F)).reshape(n, 16, 1)
    ml = (dmin * (sc >> 4)).reshape(n, 16, 1)
    # Two halves of 128 values, each four 2-bit planes of 32 bytes; 16 values per scale.
    q = blocks[:, 16:80].reshape(n, 2, 1, 32) >> _CRUMB_SHIFT[None, None, :, None] & 3
    np.subtract(dl * q.reshape(n, 16, 16), ml, out=out.reshape(n, 16, 16))


def _q3_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = len(blocks)
    hmask, qs, packed = blocks[:, :32], blocks[:, 32:96], blocks[:, 96:108]
    # Sixteen 6-bit scales: low nibbles from bytes 0..7 (low halves first), 2 high bits from 8..11.
    low = (packed[:, None, :8] >> _NIBBLE_SHIFT[None, :, None] & 0x0F).reshape(n, 16)
    high = (packed[:, None, 8:12] >> _CRUMB_SHIFT[None, :, None] & 3).reshape(n, 16)
    scales = (low | high << 4).view(np.int8) - np.int8(32)
    dl = (_f16(blocks, 108) * scales).reshape(n, 16, 1)
    q = (qs.reshape(n, 2, 1, 32) >> _CRUMB_SHIFT[None, None, :, None] & 3).reshape(n, 8, 32)
    # hmask bit b (b = half*4 + plane) set means "no -4 offset" for that value.
    h = np.unpackbits(hmask[:, None, :], axis=1, bitorder="little")
    qv = q.view(np.int8) - ((h ^ 1) << 2).view(np.int8)
    np.multiply(dl, qv.reshape(n, 16, 16), out=out.reshape(n, 16, 16))


def _q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = len(blocks)
    scales, mins = _k_scales_mins(blocks[:, 4:16])
    dl = (_f16(blocks, 0) * scales).reshape(n, 8, 1)
    ml = (_f16(blocks, 2) * mins).reshape(n, 8, 1)
    # Four chunks of 32 bytes: 32 low nibbles (sub-block 2c), then 32 high nibbles (2c + 1).
    q = blocks[:, 16:].reshape(n, 4, 1, 32) >> _NIBBLE_SHIFT[None, None, :, None] & 0x0F
    np.subtract(dl * q.reshape(n, 8, 32), ml, out=out.reshape(n, 8, 32))


def _q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = len(blocks)
    scales, mins = _k_scales_mins(blocks[:, 4:16])
    dl = (_f16(blocks, 0) * scales).reshape(n, 8, 1)
    ml = (_f16(blocks, 2) * mins).reshape(n, 8, 1)
    ql = (blocks[:, 48:].reshape(n, 4, 1, 32) >> _NIBBLE_SHIFT[None, None, :, None] & 0x0F).reshape(n, 8, 32)
    # Bit s of qh[l] is the fifth bit of value l in sub-block s.
    qh = np.unpackbits(blocks[:, None, 16:48], axis=1, bitorder="little") << 4
    np.subtract(dl * (ql | qh), ml, out=out.reshape(n, 8, 32))


def _q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = len(blocks)
    ql, qh = blocks[:, :128], blocks[:, 128:192]
    scales = blocks[:, 192:208].view(np.int8)
    # ggml multiplies (d * scale) first, then the 6-bit value: that order rounds, so keep it.
    dl = (_f16(blocks, 208) * scales).reshape(n, 16, 1)
    # Per half of 128 values: groups g = 0..3 of 32 take the low/high nibbles of ql[0:32]/ql[32:64]
    # (g = shift * 2 + which) and bits 2g..2g+1 of qh[0:32].
    low = ql.reshape(n, 2, 1, 2, 32) >> _NIBBLE_SHIFT[None, None, :, None, None] & 0x0F
    high = qh.reshape(n, 2, 1, 32) >> _CRUMB_SHIFT[None, None, :, None] & 3
    q = (low.reshape(n, 2, 4, 32) | high << 4).view(np.int8) - np.int8(32)
    np.multiply(dl, q.reshape(n, 16, 16), out=out.reshape(n, 16, 16))


KERNELS: dict[GgmlType, Callable[[np.ndarray, np.ndarray], None]] = {
    GgmlType.F32: _plain("<f4"),
    GgmlType.F16: _plain("<f2"),
    GgmlType.BF16: _bf16,
    GgmlType.F64: _plain("<f8"),
    GgmlType.Q4_0: _q4_0,
    GgmlType.Q4_1: _q4_1,
    GgmlType.Q5_0: _q5_0,
    GgmlType.Q5_1: _q5_1,
    GgmlType.Q8_0: _q8_0,
    GgmlType.Q2_K: _q2_k,
    GgmlType.Q3_K: _q3_k,
    GgmlType.Q4_K: _q4_k,
    GgmlType.Q5_K: _q5_k,
    GgmlType.Q6_K: _q6_k,
}
SUPPORTED: frozenset[GgmlType] = frozenset(KERNELS)

# About 1 MiB of float32 output per chunk: big enough to amortize the Python call, small enough
# that a chunk's temporaries stay in cache.
_CHUNK_VALUES = 1 << 18
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    # One pool per process: a forked child (a DataLoader worker, torchrun) inherits the pool
    # object but not its threads, and would wait on it forever.
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (
            os.getpid(),
            ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="shiptwo-dequant"),
        )
    return _pool[1]


def dequantize(raw: np.ndarray, ggml_type: GgmlType, numel: int, *, what: str = "tensor") -> np.ndarray:
    """Decode `numel` values of `ggml_type` from the uint8 array `raw`; a new 1-D float32 array.

    `what` names the tensor in errors ("model.gguf: tensor 'x'"). A type without a kernel (the
    IQ and ternary types, Q8_1/Q8_K, integers) is a FormatError naming it.
    """
    kernel = KERNELS.get(ggml_type)
    if kernel is None:
        names = ", ".join(t.name for t in sorted(SUPPORTED))
        raise FormatError(
            f"{what}: GGML type {ggml_type.name} ({int(ggml_type)}) has no dequantizer in shiptwo "
            f"(supported: {names}); requantize the model to one of those"
        )
    values, nbytes = BLOCK[ggml_type]
    if numel % values or raw.size != numel // values * nbytes:
        raise FormatError(
            f"{what}: {raw.size} bytes do not hold {numel} {ggml_type.name} values "
            f"({values} values per {nbytes}-byte block)"
        )
    blocks = raw.reshape(-1, nbytes)
    out = np.empty((len(blocks), values), dtype=np.float32)

    def run(span: slice) -> None:
        # A NaN or inf scale decodes to NaN/inf as in ggml, without a warning (errstate is per thread).
        with np.errstate(all="ignore"):
            kernel(blocks[span], out[span])

    step = max(1, _CHUNK_VALUES // values)
    if len(blocks) <= step:
        run(slice(None))
    else:
        list(_executor().map(run, [slice(i, i + step) for i in range(0, len(blocks), step)]))
    return out.reshape(-1)
