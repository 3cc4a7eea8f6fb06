"""The style guide's lint, run by the test suite so CI enforces it: ruff's rule set and mypy strict.

Both read their configuration from pyproject.toml; these tests only run them and show what they
printed when they fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: it comes with the test extra (pip install -e '.[test]')")
    result = _run(ruff, "check", "--no-cache", "src", "tests", "falsifiers", "benchmarks")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_strict_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
