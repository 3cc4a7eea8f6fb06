"""shiptwo in someone else's project: one [tool.shiptwo] table read by the plugin and by `pv`.

The walkthrough of issue 12: contracts under `spec/`, run records under `.shiptwo/runs/`, tests
under `tests/`, a gate of the project's own; pytest and `shiptwo pv validate` agree with no flags.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from shiptwo.cli import main
from shiptwo.harness import gates

PYPROJECT = """\
[tool.shiptwo]
contracts = "spec"
evidence = ".shiptwo/runs"
tests = ["tests"]

[tool.shiptwo.gates]
corpus = "projgates:corpus_present"
"""

PROJGATES = """\
import os

def corpus_present():
    return os.environ.get("PERPLEXITY_CORPUS") is not None
"""

CONTRACT = """\
schema: shiptwo.contract/v1
id: perplexity-v1
version: 1.0.0
title: Perplexity of the shipped model
obligations:
  - id: PPL-001
    statement: The model beats uniform on held-out text.
falsifiers:
  - id: FALSIFY-PPL-UNIFORM-001
    obligations: [PPL-001]
    prediction: held-out loss below ln(vocab)
    tests: [tests/test_ppl.py::test_beats_uniform]
    measurements:
      loss:
        unit: nats
        pass: {max: 11.93}
        plausible: {min: 0.5, max: 6.0}
  - id: FALSIFY-PPL-CORPUS-001
    obligations: [PPL-001]
    prediction: the full corpus scores the same
    requires: [corpus]
    tests: [tests/test_ppl.py::test_full_corpus]
  - id: FALSIFY-PPL-LICENCE-001
    obligations: [PPL-001]
    prediction: the licensed eval set scores the same
    requires: [licence]
    tests: [tests/test_ppl.py::test_licensed]
status: DRAFT
"""

CONFTEST = """\
from shiptwo.harness.gates import gate

@gate("licence", closed="no licence key in LICENCE_KEY")
def licence_key():
    import os
    return "LICENCE_KEY" in os.environ
"""

TESTS = """\
import pytest

@pytest.mark.falsifier("FALSIFY-PPL-UNIFORM-001")
def test_beats_uniform(record_measurement):
    record_measurement("loss", 2.1)

@pytest.mark.falsifier("FALSIFY-PPL-CORPUS-001")
def test_full_corpus():
    pass

@pytest.mark.falsifier("FALSIFY-PPL-LICENCE-001")
def test_licensed():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    for name in ("SHIPTWO_REQUIRE", "PERPLEXITY_CORPUS", "LICENCE_KEY"):
        monkeypatch.delenv(name, raising=False)
    gates.clear_cache()
    gates._REGISTRY.project.clear()
    monkeypatch.syspath_prepend(str(pytester.path))
    pytester.makepyprojecttoml(
        PYPROJECT + '\n[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider -p no:randomly"\n'
    )
    (pytester.path / "projgates.py").write_text(PROJGATES)
    (pytester.path / "spec").mkdir()
    (pytester.path / "spec" / "perplexity-v1.yaml").write_text(CONTRACT)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "conftest.py").write_text(CONFTEST)
    (pytester.path / "tests" / "test_ppl.py").write_text(TESTS)
    monkeypatch.chdir(pytester.path)
    yield pytester
    # pytester runs in this process: the project's gates must not outlive its tests.
    gates._REGISTRY.project.clear()
    gates.clear_cache()


def _pv(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pv", "validate", *args])
    return code, out.getvalue() + err.getvalue()


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {f["id"]: f["status"] for c in report["contracts"] for f in c["falsifiers"]}


def test_walkthrough_with_custom_paths_and_gates(project: pytest.Pytester) -> None:
    result = project.runpytest("-q")
    result.assert_outcomes(passed=1, skipped=2)
    records = list((project.path / ".shiptwo" / "runs").glob("*.json"))
    assert len(records) == 1, "the run record goes where [tool.shiptwo] evidence says"
    assert not (project.path / "evidence").exists()
    code, out = _pv("--format", "json")  # no PATH, no --evidence: all from [tool.shiptwo]
    assert code == 0, out
    assert _statuses(json.loads(out)) == {
        "FALSIFY-PPL-UNIFORM-001": "DISCHARGED",
        "FALSIFY-PPL-CORPUS-001": "HOST-GATED",
        "FALSIFY-PPL-LICENCE-001": "HOST-GATED",
    }
    assert "no licence key in LICENCE_KEY" in result.stdout.str() or "licence" in json.dumps(json.loads(out))


def test_project_gates_open_and_can_be_required(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERPLEXITY_CORPUS", "/data/corpus")
    monkeypatch.setenv("LICENCE_KEY", "k")
    result = project.runpytest("-q", "--shiptwo-require", "corpus,licence")
    result.assert_outcomes(passed=3)


def test_required_project_gate_closed_is_an_error(project: pytest.Pytester) -> None:
    result = project.runpytest("-q", "--shiptwo-require", "licence")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*licence*no licence key in LICENCE_KEY*"])


def test_unknown_required_gate_lists_project_gates(project: pytest.Pytester) -> None:
    result = project.runpytest("-q", "--shiptwo-require", "license")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*required host gate(s) license unknown*corpus*licence*"])


def test_pv_validate_sees_markers_under_the_configured_tests(project: pytest.Pytester) -> None:
    (project.path / "tests" / "test_more.py").write_text(
        "import pytest\n\n@pytest.mark.falsifier('FALSIFY-PPL-UNIFORM-001')\ndef test_unlisted():\n    pass\n"
    )
    code, out = _pv("-q")
    assert code == 1, out
    assert "PV405" in out and "tests/test_more.py::test_unlisted" in out


def test_pv_validate_flags_unknown_gate_but_knows_the_projects(project: pytest.Pytester) -> None:
    spec = project.path / "spec" / "perplexity-v1.yaml"
    spec.write_text(spec.read_text().replace("requires: [corpus]", "requires: [corpse]"))
    code, out = _pv("-q")
    assert code == 1
    assert "'corpse' is not a host gate" in out and "did you mean 'corpus'" in out
    assert "'licence' is not a host gate" not in out, "the conftest's @gate is a known gate"


def test_schema_error_is_reported_as_itself_under_q(project: pytest.Pytester) -> None:
    spec = project.path / "spec" / "perplexity-v1.yaml"
    spec.write_text(spec.read_text().replace("title:", "titel:"))
    result = project.runpytest("-q")
    assert result.ret != 0
    text = result.stdout.str() + result.stderr.str()
    assert "PV101" in text and "titel" in text, text


def test_schema_error_fails_a_session_with_no_bound_test(project: pytest.Pytester) -> None:
    spec = project.path / "spec" / "perplexity-v1.yaml"
    spec.write_text(spec.read_text().replace("title:", "titel:"))
    (project.path / "tests" / "test_ppl.py").write_text("def test_plain():\n    pass\n")
    result = project.runpytest("-q")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*shiptwo contract errors*", "*perplexity-v1.yaml*PV101*"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('contract = "spec"', "key 'contract' is unknown; known keys: contracts"),
        ("tests = 3", "tests = 3 must be a list"),
        ('tests = [""]', "every entry must be a non-empty string"),
        ('gates = {corpus = "projgates"}', 'must be "module:function"'),
        ('train = {val_loss_max = "high"}', "val_loss_max = 'high' must be a number"),
    ],
)
def test_bad_config_is_one_line_in_pytest_and_pv(project: pytest.Pytester, table: str, message: str) -> None:
    (project.path / "pyproject.toml").write_text(f"[tool.shiptwo]\n{table}\n")
    result = project.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    code, out = _pv("spec")
    assert code == 2 and message in out and "pyproject.toml" in out
    assert "Traceback" not in out


def test_gate_module_that_does_not_load_is_named(project: pytest.Pytester) -> None:
    (project.path / "pyproject.toml").write_text(
        '[tool.shiptwo]\ncontracts = "spec"\n[tool.shiptwo.gates]\ncorpus = "nosuchmod:probe"\n'
    )
    result = project.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*corpus = 'nosuchmod:probe': cannot load it*"])


def test_silent_in_a_project_that_has_not_asked(pytester: pytest.Pytester) -> None:
    """Someone else's contracts/ YAML is not parsed, reported, or announced in the header."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n")
    (pytester.path / "contracts").mkdir()
    (pytester.path / "contracts" / "api.yaml").write_text("openapi: 3.1.0\nschema: [not: ours\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    # pytest's own header names the interpreter (a checkout in a directory called shiptwo puts
    # the word in its path), the rootdir and the installed plugins: none of those lines is ours.
    ours = [
        line
        for line in result.stdout.lines
        if not line.startswith(("platform ", "rootdir:", "configfile:", "plugins:", "cachedir:"))
    ]
    assert [line for line in ours if "shiptwo" in line] == []
    assert "openapi" not in "\n".join(ours)
