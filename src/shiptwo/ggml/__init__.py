"""GGUF files and GGML tensors, read by our own code: no `gguf` package at run time.

`open_gguf(path)` parses and validates a GGUF v2/v3 file (typed metadata, tensor infos in
row-major shape) over a memory map; `GgufFile.raw(name)` is a zero-copy view of a tensor's
bytes and `GgufFile.dequantize(name)` its float32 values. `is_gguf(path)` checks the magic.
The Qwen2 mapping to Hugging Face names and config lives in `shiptwo.ggml.qwen2`, the
tokenizer files in `shiptwo.ggml.tokenizer`; `shiptwo.ggml.quants` holds the GGML type codes,
block sizes and dequantizers.
"""

from __future__ import annotations

from shiptwo.ggml.constants import GgufValueType
from shiptwo.ggml.quants import GgmlType
from shiptwo.ggml.reader import GgufFile, GgufTensor, is_gguf, open_gguf

__all__ = ["GgmlType", "GgufFile", "GgufTensor", "GgufValueType", "is_gguf", "open_gguf"]
