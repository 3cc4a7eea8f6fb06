"""What keeps the plugin cheap where it has nothing to do, checked without timing anything.

In a project without shiptwo contracts a pytest session must not run git, parse YAML or load the
contract machinery; with contracts it does all three (the control that shows the probes work),
but a session that finds them validated in pytest's cache, and unchanged, parses nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ..contract.contract_project import settle
from .conftest import CONTRACT

HEAVY = ("yaml", "jsonschema_rs", "shiptwo.harness.contract.validate", "shiptwo.harness.recorder")


def _probed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, cache: bool = False
) -> tuple[Path, Path]:
    """A git on PATH that logs its calls, and a conftest that saves sys.modules at the end."""
    shim = pytester.path / "bin"
    shim.mkdir()
    log = pytester.path / "git.log"
    git = shim / "git"
    git.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = rev-parse ] && echo deadbeef\nexit 0\n')
    git.chmod(git.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    modules = pytester.path / "modules.txt"
    pytester.makeconftest(
        "import sys\n\n"
        "def pytest_unconfigure(config):\n"
        f"    open({str(modules)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
    )
    pytester.makeini(f"[pytest]\naddopts = {'' if cache else '-p no:cacheprovider'} -p no:randomly\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    return log, modules


def _with_a_contract(pytester: pytest.Pytester) -> None:
    """A contract and a test bound to one of its falsifiers."""
    (pytester.path / "contracts").mkdir()
    (pytester.path / "contracts" / "demo-v1.yaml").write_text(CONTRACT)
    pytester.makepyfile(
        test_y="import pytest\n\n@pytest.mark.falsifier('FALSIFY-DEMO-FAIL-001')\n"
        "def test_fail():\n    pass\n"
    )


def test_no_contracts_no_git_no_parsing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    log, modules = _probed(pytester, monkeypatch)
    (pytester.path / "contracts").mkdir()
    (pytester.path / "contracts" / "openapi.yaml").write_text("openapi: 3.1.0\n")  # not ours
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert not log.exists(), f"git ran: {log.read_text()}"
    loaded = set(modules.read_text().split())
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "tomllib" not in loaded  # no pyproject.toml here, so nothing to parse it for


def test_control_with_contracts_the_probes_see_git_and_parsing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, modules = _probed(pytester, monkeypatch)
    _with_a_contract(pytester)
    pytester.runpytest_subprocess("--shiptwo-no-record")
    calls = log.read_text().splitlines()
    assert any("rev-parse" in c for c in calls)
    status = [c for c in calls if "status" in c]
    assert status and all(c.startswith("--no-optional-locks") for c in status), calls
    assert set(HEAVY) <= set(modules.read_text().split())


def test_collect_only_runs_no_git_and_digests_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pytest --collect-only` runs no test, so no run record can come of it.
    log, _ = _probed(pytester, monkeypatch)
    _with_a_contract(pytester)
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    assert "test_y.py::test_fail" in result.stdout.str()
    assert not log.exists(), f"git ran: {log.read_text()}"
    assert not (pytester.path / "evidence").exists()


VALIDATOR = ("yaml", "jsonschema_rs", "shiptwo.harness.contract.validate")


def test_unchanged_contracts_are_not_validated_again(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, modules = _probed(pytester, monkeypatch, cache=True)
    _with_a_contract(pytester)
    settle(pytester.path)  # files written just now are not trusted yet, whatever they hold

    def session(*args: str) -> set[str]:
        pytester.runpytest_subprocess("--collect-only", "-q", *args).assert_outcomes()
        return set(modules.read_text().split()) & set(VALIDATOR)

    assert session() == set(VALIDATOR)  # the first session validates: the control
    assert session() == set()
    assert session("--cache-clear") == set(VALIDATOR)
    assert session() == set()
    header = "shiptwo: contracts=contracts (1 contracts, 7 falsifiers{}), evidence=*"
    pytester.runpytest_subprocess("--collect-only").stdout.fnmatch_lines(
        [header.format("; unchanged since validated")]
    )
    pytester.runpytest_subprocess("--collect-only", "--cache-clear").stdout.fnmatch_lines([header.format("")])


def test_a_contract_broken_after_a_cached_session_fails_the_next(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _probed(pytester, monkeypatch, cache=True)
    _with_a_contract(pytester)
    settle(pytester.path)
    assert pytester.runpytest_subprocess("--shiptwo-no-record", "-k", "test_x").ret == 0
    contract = pytester.path / "contracts" / "demo-v1.yaml"
    contract.write_text(contract.read_text().replace("obligations: [DEMO-001]", "obligations: [DEMO-009]", 1))
    result = pytester.runpytest_subprocess("--shiptwo-no-record", "-k", "test_x")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*shiptwo contract errors*", "*PV303*DEMO-009*"])
