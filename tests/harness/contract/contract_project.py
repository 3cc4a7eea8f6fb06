"""A tiny project on disk (pyproject.toml, contracts/, falsifiers/) for validation tests."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

from shiptwo.harness.contract.findings import Finding
from shiptwo.harness.contract.validate import ValidationResult, validate_paths

# A contract that validates clean against TEST_DEMO; every red case is an edit of it.
GOOD = """\
schema: shiptwo.contract/v1
id: demo-v1
version: 1.0.0
title: Demo contract
description: A small contract the validation tests break one way at a time.
references:
  - shiptwo tests
requires: []
obligations:
  - id: DEMO-001
    statement: The demo holds.
  - id: DEMO-002
    statement: The demo holds twice.
falsifiers:
  - id: FALSIFY-DEMO-001
    obligations: [DEMO-001]
    prediction: The demo test passes.
    if_fails: Nothing demonstrates anything.
    tests:
      - falsifiers/test_demo.py::test_demo
    controls: [{id: demo-broken, defect: the demo is broken on purpose}]
    measurements:
      error:
        unit: nats
        pass: {max: 0.5}
        plausible: {min: 0.0, max: 0.5}
  - id: FALSIFY-DEMO-002
    obligations: [DEMO-002]
    prediction: The grouped demo test passes.
    tests:
      - falsifiers/test_demo.py::TestGroup::test_twice
    controls: [{id: group-broken, defect: the group is broken on purpose}]
status: DRAFT
changelog:
  - {version: 1.0.0, date: 2026-11-21, change: first version}
"""

TEST_DEMO = """\
import pytest


@pytest.mark.falsifier("FALSIFY-DEMO-001")
def test_demo(falsifier_control):
    assert falsifier_control is None


class TestGroup:
    @pytest.mark.falsifier("FALSIFY-DEMO-002")
    def test_twice(self, falsifier_control):
        assert falsifier_control is None


def test_unmarked():
    pass
"""


def edit(text: str, *replacements: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced; fails loudly when `old` is not there exactly once."""
    for old, new in replacements:
        assert text.count(old) == 1, f"edit target {old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def without_tests(text: str) -> str:
    """`text` with every `tests:` list removed (a contract that binds no test by name)."""
    return "".join(
        line for line in text.splitlines(keepends=True) if "tests:" not in line and "::" not in line
    )


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the `nth` line containing `needle`; with nth=1 the needle must be unique."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth and (nth > 1 or len(hits) == 1), f"{needle!r} is on lines {hits}"
    return hits[nth - 1]


def col_of(text: str, line: int, needle: str) -> int:
    """1-based column where `needle` starts on `line` of `text`."""
    return text.splitlines()[line - 1].index(needle) + 1


class Project:
    """A project root in a temp dir: write contracts and test files, then validate."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
        (root / "contracts").mkdir()
        (root / "falsifiers").mkdir()

    def contract(self, text: str, stem: str = "demo-v1") -> Path:
        return self.write(f"contracts/{stem}.yaml", text)

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def validate(self, *paths: str) -> ValidationResult:
        targets = [self.root / p for p in paths] if paths else [self.root / "contracts"]
        return validate_paths(targets)


def only(findings: list[Finding], rule: str) -> Finding:
    """The single finding of `rule`; fails with every finding listed otherwise."""
    hits = [f for f in findings if f.rule == rule]
    assert len(hits) == 1, f"expected one {rule}, got: {[(f.rule, f.line, f.message) for f in findings]}"
    return hits[0]


def settle(root: Path) -> None:
    """Date every file under `root` 10 s back: a file the cache sees as just written is never
    trusted (it may have changed while validation ran), and these tests write files and load at once."""
    past = time.time() - 10
    for top, _, names in os.walk(root):
        for name in names:
            os.utime(Path(top, name), (past, past), follow_symlinks=False)
