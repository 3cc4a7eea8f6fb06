"""The harness core never imports torch or tokenizers (STYLE.md: heavy imports where used)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_pv_validate_and_plugin_import_no_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from shiptwo.cli import build_parser\n"
        "build_parser()\n"
        "import shiptwo, shiptwo.harness.contract.validate, shiptwo.harness.evaluate, "
        "shiptwo.harness.plugin, shiptwo.harness.status\n"
        "heavy = sorted(m for m in ('torch', 'tokenizers', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_public_names_resolve() -> None:
    import shiptwo

    assert shiptwo.Qwen2.__name__ == "Qwen2"
    assert callable(shiptwo.load_tokenizer)


def test_os_errors_become_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from shiptwo import cli

    def boom(args: argparse.Namespace) -> int:
        raise IsADirectoryError(21, "Is a directory", "/tmp")

    parser = cli.build_parser()
    parser.set_defaults(func=boom)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 1
    assert capsys.readouterr().err == "error: /tmp: Is a directory\n"
