"""The corpora benchmarks share: real Python, the standard library sources of this interpreter."""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path


def stdlib_sources() -> Iterator[str]:
    """Each standard library `.py` file's text, sorted by path (site-packages and files that are
    not UTF-8 left out), so a run on one interpreter reads the same corpus every time."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.rglob("*.py")):
        if "site-packages" in p.parts:
            continue
        try:
            yield p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
