"""The pre-commit hook and the GitHub Action run commands that shiptwo's parser accepts.

Both files spell `shiptwo pv validate ...` as text; parsing that text with the real argparse
parser means a renamed flag or a dropped `--format` choice fails here, not in a user's CI.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from shiptwo.cli import build_parser
from shiptwo.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> Any:
    return yaml.safe_load((REPO / name).read_text(encoding="utf-8"))


def parses(command: str) -> Any:
    """The namespace `shiptwo` builds from `command` (a shell line starting with `shiptwo`)."""
    words = shlex.split(command)
    assert words[0] == "shiptwo", command
    return build_parser().parse_args(words[1:])


def test_pre_commit_hook_runs_validate_check() -> None:
    (hook,) = load(".pre-commit-hooks.yaml")

    assert hook["id"] == "shiptwo-validate"
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    args = parses(hook["entry"] + " " + " ".join(hook.get("args", [])))
    assert (args.command, args.pv_command, args.check) == ("pv", "validate", True)
    files = re.compile(hook["files"])
    assert files.search("contracts/demo-v1.yaml") and files.search("sub/contracts/x/y.yml")
    assert not files.search("src/shiptwo/cli.py") and not files.search("contracts.yaml")


def action_commands() -> list[str]:
    """Every `shiptwo ...` command line in action.yml's steps, with the step's env filled in."""
    action = load("action.yml")
    assert action["runs"]["using"] == "composite"
    commands = []
    for step in action["runs"]["steps"]:
        for line in step.get("run", "").splitlines():
            line = line.strip()
            if not line.startswith("shiptwo "):
                continue
            # `${CONTRACTS:+"$CONTRACTS"}`: the path when one is given; `$ARGS`: the extra words.
            line = line.replace('${CONTRACTS:+"$CONTRACTS"}', '"contracts dir"').replace("$ARGS", "--strict")
            commands.append(line.split(">>")[0].split("||")[0])
            assert set(step["env"]) <= {"CONTRACTS", "ARGS"}
    return commands


def test_action_validates_with_annotations_and_writes_a_summary() -> None:
    action = load("action.yml")
    commands = action_commands()

    assert len(commands) == 2
    check, summary = (parses(c) for c in commands)
    assert (check.pv_command, check.check, check.format) == ("validate", True, "github")
    assert summary.format == "markdown" and not summary.check
    assert check.paths == [Path("contracts dir")] and check.strict
    steps = action["runs"]["steps"]
    assert '>> "$GITHUB_STEP_SUMMARY"' in steps[-1]["run"] and steps[-1]["if"] == "${{ always() }}"
    assert steps[0]["uses"].startswith("actions/setup-python@")
    assert steps[0]["with"]["python-version"] == "${{ inputs.python-version }}"
    assert {"contracts", "python-version", "args"} <= set(action["inputs"])


def test_action_passes_inputs_through_the_environment_only() -> None:
    """An input pasted into a `run:` script could inject shell; only `env:` may name one."""
    for step in load("action.yml")["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step["run"]


def test_the_parse_check_would_catch_a_drift() -> None:
    with pytest.raises(UsageError, match="invalid choice: 'sarf'"):
        parses("shiptwo pv validate --check --format sarf")
