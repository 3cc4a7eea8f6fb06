"""The harness core never imports torch or tokenizers (STYLE.md: heavy imports where used)."""

from __future__ import annotations

import subprocess
import sys


def test_pv_validate_and_plugin_import_no_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from shiptwo.cli import build_parser\n"
        "build_parser()\n"
        "import shiptwo, shiptwo.contract.validate, shiptwo.contract.evaluate, shiptwo.plugin, shiptwo.status\n"
        "heavy = sorted(m for m in ('torch', 'tokenizers', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_public_names_resolve() -> None:
    import shiptwo

    assert shiptwo.Qwen2.__name__ == "Qwen2"
    assert callable(shiptwo.load_tokenizer)
