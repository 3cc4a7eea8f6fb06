"""Issue 14: text and `--format github` output show controls from YAML, file names and records as
escapes, so no key can forge a workflow command or drive the terminal."""

from __future__ import annotations

import re

import pytest

from shiptwo.cli import main
from shiptwo.harness.report import visible

from .contract_project import GOOD, Project, edit

FORGED_KEY = '"sneaky\\n::error file=x::forged": 1\n'
ANSI_KEY = '"\\e[31mred\\e[0m": 1\n'
OURS = re.compile(r"^::(error|warning) file=contracts/[^,]*,line=\d+,col=\d+,title=PV\d{3} [a-z-]+::")


def run(project: Project, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    main(["pv", "validate", *flags, str(project.root / "contracts")])
    return capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_a_newline_in_a_key_forges_no_line(
    project: Project, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    project.contract(GOOD + FORGED_KEY)

    out = run(project, capsys, "--format", fmt)

    assert "forged" in out  # the key is reported...
    for line in out.splitlines():  # ...on shiptwo's own line, never one of its own
        assert not line.startswith("::") or OURS.match(line), line
        assert not line.startswith("::error file=x")
    assert "sneaky\\n::error file=x::forged" in out


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_an_ansi_escape_reaches_stdout_visible(
    project: Project, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    project.contract(GOOD + ANSI_KEY)

    out = run(project, capsys, "--format", fmt)

    assert "\x1b" not in out
    assert "\\x1b[31mred\\x1b[0m" in out


def test_a_file_name_with_a_newline_stays_on_its_line(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.contract(GOOD)
    project.write("contracts/evil\n::error file=y::x.yaml", "- not a contract\n")
    project.write("contracts/bad\x1b[2J.yaml", "a: [\n")

    out = run(project, capsys)

    assert "\x1b" not in out
    assert not [line for line in out.splitlines() if line.startswith("::")]
    assert "contracts/bad\\x1b[2J.yaml:" in out


def test_github_properties_escape_their_separators(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.contract(edit(GOOD, ("id: demo-v1", "id: demo-v1\nfoo%bar: 1")), stem="a,b:c")

    out = run(project, capsys, "--format", "github")

    assert "file=contracts/a%2Cb%3Ac.yaml," in out
    assert "foo%25bar" in out and "foo%bar" not in out


def test_visible_escapes_c0_c1_and_bidi_but_not_text() -> None:
    assert visible("a\nb\rc\x00d\x7f\x85\u202e\u2028é\tz") == "a\\nb\\rc\\x00d\\x7f\\x85\\u202e\\u2028é\tz"
