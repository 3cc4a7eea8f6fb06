"""CRC-32 for APR's header and footer checksums: zlib's polynomial, computed by ISA-L when installed.

The footer CRC covers every byte of the file, so its speed bounds a verified load. zlib's
crc32 runs at about 2-3 GB/s on one core, slower than reading the file from the page cache;
ISA-L's (python-isal, in the `apr` extra) runs at about 25 GB/s, faster than the read, so a
verified load costs about one read pass. The values are the same: `isal_zlib.crc32` is a
drop-in for `zlib.crc32`. An install without the `apr` extra (the harness alone) has no isal
and gets zlib, slower but identical.
"""

from __future__ import annotations

import functools
import zlib
from types import ModuleType
from typing import Any


@functools.cache
def _isal_zlib() -> ModuleType | None:
    # Imported on the first checksum, not with the CLI that registers the apr commands.
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def crc32(data: Any, value: int = 0) -> int:
    """CRC-32 of `data` (bytes or any contiguous buffer: a memory map, a memoryview) continuing
    from `value`, exactly as `zlib.crc32(data, value)`."""
    isal_zlib = _isal_zlib()
    if isal_zlib is None:
        return zlib.crc32(data, value)
    # The module's attribute, looked up on each call: a test counts the calls that reach ISA-L.
    result: int = isal_zlib.crc32(data, value)
    return result


def crc32_backend() -> str:
    """The library `crc32` uses: 'isal' (ISA-L, from the `apr` extra) or 'zlib' (the fallback)."""
    return "zlib" if _isal_zlib() is None else "isal"
