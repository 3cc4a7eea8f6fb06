"""Fixtures for the contract tests; the helpers live in contract_project.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from .contract_project import TEST_DEMO, Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """An empty project with falsifiers/test_demo.py, which the GOOD contract binds."""
    p = Project(tmp_path)
    p.write("falsifiers/test_demo.py", TEST_DEMO)
    return p
