"""APR v2 model files (aprender's single-file tensor container): read, write, convert, compare.

The API mirrors safetensors: `load_file`, `save_file`, `safe_open`. Importing this package
pulls in neither numpy nor torch; they load on first use.
"""

from __future__ import annotations

from shiptwo.apr.constants import DType, Flag
from shiptwo.apr.reader import AprFile, load_arrays, load_file, parse_bytes, read_header, safe_open
from shiptwo.apr.records import AprInfo, Header, TensorInfo
from shiptwo.apr.writer import RawTensor, save_file, write_raw

__all__ = [
    "AprFile",
    "AprInfo",
    "DType",
    "Flag",
    "Header",
    "RawTensor",
    "TensorInfo",
    "load_arrays",
    "load_file",
    "parse_bytes",
    "read_header",
    "safe_open",
    "save_file",
    "write_raw",
]
