"""`pip install shiptwo` alone (no extras) runs the harness on a user's own project.

The packaging says so (the base requirements are the harness's three), and a subprocess with
every ML library made unimportable runs pytest with the plugin and `shiptwo pv validate` on a
small project of its own: contracts, a bound test with a control, a run record, a status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import requires
from pathlib import Path

# Makes the ML stack unimportable, as in an environment where only `pip install shiptwo` ran.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"torch", "numpy", "tokenizers", "safetensors", "transformers", "gguf", "matplotlib", "tqdm"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None
    sys.meta_path.insert(0, Block())
    """
)

CONTRACT = """\
schema: shiptwo.contract/v1
id: mine-v1
version: 1.0.0
title: My metric stays in range
obligations:
  - id: OB-001
    statement: The metric is small.
falsifiers:
  - id: FALSIFY-MINE-001
    obligations: [OB-001]
    prediction: The metric stays below 1.
    if_fails: The metric broke.
    tests: [tests/test_mine.py::test_metric]
    controls:
      - id: doubled
        defect: "the metric doubled"
    measurements:
      metric: {unit: widgets, pass: {max: 1.0}}
"""

TEST = """\
import pytest


@pytest.mark.falsifier("FALSIFY-MINE-001")
def test_metric(record_measurement, falsifier_control):
    value = 0.6
    if falsifier_control == "doubled":
        value *= 2
    record_measurement("metric", value)
"""


def test_the_base_requirements_are_the_harness_alone() -> None:
    base = sorted(
        r.split(">")[0].split("=")[0].strip().lower() for r in requires("shiptwo") or [] if "extra" not in r
    )
    assert base == ["jsonschema-rs", "pytest", "pyyaml"]


def test_the_harness_runs_a_project_without_the_ml_stack(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "contracts").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n")
    (project / "contracts" / "mine-v1.yaml").write_text(CONTRACT)
    (project / "tests" / "test_mine.py").write_text(TEST)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    tests = run("-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:randomly", "tests")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "control doubled refuted" in tests.stdout
    validate = run("-m", "shiptwo", "pv", "validate", "contracts", "--format", "json")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    [falsifier] = [f for c in json.loads(validate.stdout)["contracts"] for f in c["falsifiers"]]
    assert falsifier["status"] == "DISCHARGED"
    blocked = run("-c", "import torch")
    assert "blocked" in blocked.stderr  # the blocker really is in force in these subprocesses


def test_a_subject_command_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "v.json").write_text('{"a": 0}')
    result = subprocess.run(
        [sys.executable, "-m", "shiptwo", "eval", "--model", str(tmp_path), "--shards", str(tmp_path)],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: this command needs torch, which the 'qwen2' extra installs: pip install 'shiptwo[qwen2]' "
        "(or 'shiptwo[all]')\n"
    )
