"""Real Python to score a model on: windows of CPython's own stdlib source, tokenized.

Every machine running this interpreter holds these files byte for byte, so the falsifiers and the
benchmark measure the same tokens everywhere without shipping a corpus.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Different files, real code; the first four are the falsifiers' 4 x 256 evaluation batch.
EVAL_MODULES = ("textwrap.py", "shlex.py", "fnmatch.py", "getopt.py", "argparse.py", "dataclasses.py")
EVAL_SEQ = 256


def python_windows(tokenizer_json: Path, *, rows: int = 4, seq: int = EVAL_SEQ) -> Any:
    """A (rows, seq + 1) int64 tensor: the first seq + 1 ids of each of the first `rows` modules."""
    import torch
    from tokenizers import Tokenizer

    if not 1 <= rows <= len(EVAL_MODULES):
        raise ValueError(f"rows must be 1..{len(EVAL_MODULES)}, got {rows}")
    tok = Tokenizer.from_file(str(tokenizer_json))
    out = []
    for name in EVAL_MODULES[:rows]:
        ids = tok.encode((STDLIB / name).read_text(encoding="utf-8")).ids
        if len(ids) <= seq:
            raise RuntimeError(f"{STDLIB / name}: only {len(ids)} tokens, need {seq + 1}")
        out.append(ids[: seq + 1])
    return torch.tensor(out, dtype=torch.long)
