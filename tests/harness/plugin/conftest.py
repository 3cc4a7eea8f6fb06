"""A small real project for the plugin to run: one contract, tests that reach every status."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CONTRACT = """\
schema: shiptwo.contract/v1
# A demo contract: every falsifier below is built to reach one status.
id: demo-v1
version: 1.0.0
title: Demo contract
obligations:
  - id: DEMO-001
    statement: Something true.   # trailing comment
falsifiers:
  - id: FALSIFY-DEMO-PASS-001
    obligations: [DEMO-001]
    prediction: passes with a plausible number
    measurements:
      loss:
        unit: nats
        pass: {max: 9.38}
        plausible: {min: 1.5, max: 2.5}
  - id: FALSIFY-DEMO-FAIL-001
    obligations: [DEMO-001]
    prediction: the test fails
  - id: FALSIFY-DEMO-SUSPECT-001
    obligations: [DEMO-001]
    prediction: passes with an implausible number
    measurements:
      val_loss:
        unit: nats
        pass: {max: 9.38}
        plausible: {min: 1.5, max: 2.5}
  - id: FALSIFY-DEMO-GATED-001
    obligations: [DEMO-001]
    prediction: needs a Qwen snapshot
    requires: [qwen-artifacts]
  - id: FALSIFY-DEMO-ERROR-001
    obligations: [DEMO-001]
    prediction: its fixture breaks
  - id: FALSIFY-DEMO-UNBOUND-001
    obligations: [DEMO-001]
    prediction: no test claims it
  - id: FALSIFY-DEMO-NOTRUN-001
    obligations: [DEMO-001]
    prediction: bound but never run
status: DRAFT
"""

TESTS = """\
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")
def test_pass(record_measurement):
    record_measurement("loss", 2.0)

@pytest.mark.falsifier("FALSIFY-DEMO-FAIL-001")
def test_fail():
    assert 1 + 1 == 3

@pytest.mark.falsifier("FALSIFY-DEMO-SUSPECT-001")
def test_suspect(record_measurement):
    record_measurement("val_loss", 0.00081)

@pytest.mark.falsifier("FALSIFY-DEMO-GATED-001")
def test_gated():
    pass

@pytest.mark.falsifier("FALSIFY-DEMO-ERROR-001")
def test_error(broken):
    pass

@pytest.mark.falsifier("FALSIFY-DEMO-NOTRUN-001")
def test_notrun():
    pass

def test_plain():
    pass
"""

EXPECTED = {
    "FALSIFY-DEMO-PASS-001": "DISCHARGED",
    "FALSIFY-DEMO-FAIL-001": "FALSIFIED",
    "FALSIFY-DEMO-SUSPECT-001": "NUMERICALLY-PASSED-METHODOLOGY-SUSPECT",
    "FALSIFY-DEMO-GATED-001": "HOST-GATED",
    "FALSIFY-DEMO-ERROR-001": "ERROR",
    "FALSIFY-DEMO-UNBOUND-001": "UNBOUND",
    "FALSIFY-DEMO-NOTRUN-001": "NOT-RUN",
}


@pytest.fixture(autouse=True)
def _gate_results_do_not_outlive_the_test() -> Iterator[None]:
    """Gate results are cached per process, and the tests here change what gates read (an empty
    model cache, a fake snapshot) and run sessions in-process. A result cached under that
    environment would outlive it: a real-model falsifier later in the same xdist worker found
    `qwen-artifacts` closed and errored (seen in a fresh-clone CI run)."""
    yield
    from shiptwo.harness import gates

    gates.clear_cache()


@pytest.fixture
def demo(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("SHIPTWO_QWEN_DIR", raising=False)
    monkeypatch.delenv("SHIPTWO_REQUIRE", raising=False)
    # An empty cache: the qwen-artifacts gate would otherwise open on a fetched snapshot.
    monkeypatch.setenv("SHIPTWO_CACHE_DIR", str(pytester.path / ".empty-cache"))
    from shiptwo.harness import gates

    gates.clear_cache()
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n")
    (pytester.path / "contracts").mkdir()
    (pytester.path / "contracts" / "demo-v1.yaml").write_text(CONTRACT)
    (pytester.path / "falsifiers").mkdir()
    (pytester.path / "falsifiers" / "test_demo.py").write_text(TESTS)
    return pytester


@pytest.fixture
def make_project(demo: pytest.Pytester) -> Any:
    """A project of one contract and one test file, in place of the demo's: make_project(contract, tests)."""

    def make(contract: str, tests: str, **files: str) -> pytest.Pytester:
        (demo.path / "contracts" / "demo-v1.yaml").unlink()
        (demo.path / "falsifiers" / "test_demo.py").unlink()
        data = yaml.safe_load(contract)
        (demo.path / "contracts" / f"{data['id']}.yaml").write_text(contract)
        (demo.path / "falsifiers" / "test_subject.py").write_text(tests)
        for rel, text in files.items():
            path = demo.path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return demo

    return make


def _pv_json(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run `shiptwo pv validate --format json` in-process on `root`."""
    import contextlib
    import io

    from shiptwo.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["pv", "validate", str(root / "contracts"), "--format", "json", *extra])
    return code, json.loads(out.getvalue())


@pytest.fixture
def pv_json() -> Callable[..., tuple[int, dict[str, Any]]]:
    """`shiptwo pv validate --format json` on a project root, in-process: (exit code, report)."""
    return _pv_json


@pytest.fixture
def expected() -> dict[str, str]:
    return dict(EXPECTED)
