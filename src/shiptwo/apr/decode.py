"""Decode APR v2 tensor bytes to numpy or torch: plain dtypes as stored, quantized ones dequantized.

The tensor core is numpy over a buffer (a memory map or bytes); torch is imported only when a
torch tensor is asked for. `shiptwo.apr.reader` hands these the records its parse validated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shiptwo.apr.constants import (
    APR_Q4_BLOCK,
    APR_Q4_BLOCK_BYTES,
    GGML_SUPER_BLOCK,
    NUMPY_TYPESTR,
    PLAIN_ITEMSIZE,
    QUANT_CANONICAL,
    TORCH_DTYPES,
    DType,
)
from shiptwo.apr.records import TensorInfo
from shiptwo.errors import FormatError

if TYPE_CHECKING:
    import numpy as np
    import torch


def decode_array(info: TensorInfo, buf: Any, *, raw_bf16: bool = False) -> np.ndarray:
    """Decode one tensor from `buf` to numpy: plain dtypes as stored (copied), BF16 and
    quantized types to float32 (BF16 as raw uint16 bits with `raw_bf16`)."""
    import numpy as np

    if info.is_placeholder:
        raise FormatError(
            f"tensor {info.name!r} is a 0-byte placeholder (tied to the embedding); it has no data"
        )
    if info.dtype in PLAIN_ITEMSIZE:
        arr = np.frombuffer(buf, dtype=NUMPY_TYPESTR[info.dtype], count=info.numel, offset=info.start).copy()
        if info.dtype is DType.BF16 and not raw_bf16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.reshape(info.shape)
    raw = np.frombuffer(buf, dtype=np.uint8, count=info.size, offset=info.start)
    return dequantize(raw, info.dtype, info.numel).reshape(info.shape)


def dequantize(raw: np.ndarray, dtype: DType, numel: int) -> np.ndarray:
    """Dequantize APR Q8/Q4 (and their legacy codes) or GGML Q4_K/Q6_K bytes to float32."""
    import numpy as np

    canonical = QUANT_CANONICAL[dtype]
    if numel == 0:
        return np.zeros(0, dtype=np.float32)
    if canonical is DType.APR_Q8:
        scale = raw[:4].view("<f4")[0]
        values: np.ndarray = raw[4 : 4 + numel].view(np.int8).astype(np.float32) * scale
        return values
    if canonical is DType.APR_Q4:
        blocks = raw.reshape(-1, APR_Q4_BLOCK_BYTES)
        scales = blocks[:, :2].copy().view("<f2").astype(np.float32)
        # aprender zeroes a NaN, infinite or subnormal block scale rather than propagate it.
        bad = ~np.isfinite(scales) | (np.abs(scales) < np.float32(6.103515625e-05))
        scales[bad] = 0.0
        packed = blocks[:, 2:]
        nibbles = np.empty((blocks.shape[0], APR_Q4_BLOCK), dtype=np.int8)
        nibbles[:, 0::2] = packed & 0x0F  # low nibble first
        nibbles[:, 1::2] = packed >> 4
        values = (nibbles.astype(np.float32) - 8.0) * scales
        return values.reshape(-1)[:numel]
    from shiptwo.ggml.quants import GgmlType
    from shiptwo.ggml.quants import dequantize as ggml_dequantize

    # APR's codes 12 and 14 are GGML's super-block layouts; a padded last block is decoded whole.
    qtype = GgmlType.Q4_K if canonical is DType.Q4_K else GgmlType.Q6_K
    padded = -(-numel // GGML_SUPER_BLOCK) * GGML_SUPER_BLOCK
    return ggml_dequantize(raw, qtype, padded)[:numel]


def decode_tensor(info: TensorInfo, buf: Any, *, device: str = "cpu") -> torch.Tensor:
    """Decode one tensor to torch, dtype preserved (BF16 -> bfloat16); quantized -> float32.

    Over a writable buffer (AprFile's private copy-on-write map) a plain tensor is zero-copy:
    its pages are read when touched, and writes to it never reach the file. Over a read-only
    buffer (bytes) it is copied.
    """
    import torch

    if info.dtype not in PLAIN_ITEMSIZE:
        return torch.from_numpy(decode_array(info, buf)).to(device)
    if info.is_placeholder:
        decode_array(info, buf)  # raises the placeholder error
    dtype = getattr(torch, TORCH_DTYPES[info.dtype])
    if info.numel == 0:
        tensor = torch.empty(info.shape, dtype=dtype)
    elif isinstance(buf, (bytes, memoryview)) and memoryview(buf).readonly:
        tensor = copy_tensor(memoryview(buf)[info.start : info.start + info.size], info.dtype, info.shape)
    else:
        tensor = torch.frombuffer(buf, dtype=dtype, count=info.numel, offset=info.start).reshape(info.shape)
    return tensor if device == "cpu" else tensor.to(device)


def copy_tensor(data: Any, dtype: DType, shape: tuple[int, ...]) -> torch.Tensor:
    """A torch tensor of a plain `dtype` holding a copy of `data` (its shape x dtype bytes, as stored).

    The copy is the caller's own: writing to it never reaches a file that `data` views.
    """
    import torch

    torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
    if not memoryview(data).nbytes:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(bytearray(data), dtype=torch_dtype).reshape(shape)
