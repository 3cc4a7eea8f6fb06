"""Evidence tied to the code it ran on: a falsifier's `covers` files, digested in the run record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shiptwo.cli import main

CONTRACT = """\
schema: shiptwo.contract/v1
id: cov-v1
version: 1.0.0
title: Evidence tied to its code
obligations:
  - id: COV-001
    statement: The kernels compute what the reference computes.
falsifiers:
  - id: FALSIFY-COV-KERNEL-001
    obligations: [COV-001]
    prediction: the kernel matches the reference
    covers: [src/subject.py, src/kernels]
    controls:
      - {id: off-by-one, defect: the kernel skips its last element}
  - id: FALSIFY-COV-PLAIN-001
    obligations: [COV-001]
    prediction: the plain check passes
    controls:
      - {id: off-by-one, defect: the kernel skips its last element}
status: DRAFT
"""

TESTS = """\
import pytest


@pytest.mark.falsifier("FALSIFY-COV-KERNEL-001")
def test_kernel(falsifier_control):
    assert falsifier_control != "off-by-one"


@pytest.mark.falsifier("FALSIFY-COV-PLAIN-001")
def test_plain(falsifier_control):
    assert falsifier_control != "off-by-one"
"""

SOURCES = {
    "src/subject.py": "def kernel(x):\n    return sum(x)\n",
    "src/kernels/cuda.py": "BLOCK = 256\n",
    "src/other.py": "UNRELATED = 1\n",
}
KERNEL = "FALSIFY-COV-KERNEL-001"


@pytest.fixture
def cov(make_project: Any) -> pytest.Pytester:
    project: pytest.Pytester = make_project(CONTRACT, TESTS, **SOURCES)
    project.runpytest().assert_outcomes(passed=4)
    return project


def statuses(pv_json: Any, root: Path) -> dict[str, dict[str, Any]]:
    _, report = pv_json(root)
    return {f["id"]: f for c in report["contracts"] for f in c["falsifiers"]}


def test_the_run_record_keeps_a_digest_of_the_covered_files(cov: pytest.Pytester) -> None:
    (path,) = (cov.path / "evidence" / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert list(record["covers"]) == [KERNEL], "only falsifiers that declare covers"
    cover = record["covers"][KERNEL]
    assert sorted(cover["files"]) == ["src/kernels/cuda.py", "src/subject.py"]
    assert len(cover["digest"]) == 64


def test_editing_a_covered_file_makes_its_falsifier_stale(cov: pytest.Pytester, pv_json: Any) -> None:
    assert statuses(pv_json, cov.path)[KERNEL]["status"] == "DISCHARGED"
    (cov.path / "src" / "subject.py").write_text("def kernel(x):\n    return sum(x[:-1])\n")
    (cov.path / "src" / "kernels" / "fused.py").write_text("BLOCK = 128\n")
    verdict = statuses(pv_json, cov.path)[KERNEL]
    assert verdict["status"] == "STALE"
    assert verdict["reason"].startswith("covered code changed since run ")
    assert verdict["reason"].endswith(": src/kernels/fused.py (new), src/subject.py (edited)")
    assert statuses(pv_json, cov.path)["FALSIFY-COV-PLAIN-001"]["status"] == "DISCHARGED", "it covers nothing"
    # A fresh run on the new code speaks for it again.
    cov.runpytest()
    assert statuses(pv_json, cov.path)[KERNEL]["status"] == "DISCHARGED"


def test_editing_an_uncovered_file_changes_nothing(cov: pytest.Pytester, pv_json: Any) -> None:
    (cov.path / "src" / "other.py").write_text("UNRELATED = 2\n")
    (cov.path / "src" / "kernels" / "__pycache__").mkdir()
    (cov.path / "src" / "kernels" / "__pycache__" / "cuda.cpython-311.pyc").write_bytes(b"\x00")
    assert statuses(pv_json, cov.path)[KERNEL]["status"] == "DISCHARGED"


def test_a_deleted_covered_file_is_named(cov: pytest.Pytester, pv_json: Any) -> None:
    (cov.path / "src" / "kernels" / "cuda.py").unlink()
    assert statuses(pv_json, cov.path)[KERNEL]["reason"].endswith(": src/kernels/cuda.py (deleted)")


def test_evidence_from_before_covers_was_declared_is_stale(make_project: Any, pv_json: Any) -> None:
    project = make_project(
        CONTRACT.replace("    covers: [src/subject.py, src/kernels]\n", ""), TESTS, **SOURCES
    )
    project.runpytest()
    path = project.path / "contracts" / "cov-v1.yaml"
    path.write_text(CONTRACT)
    verdict = statuses(pv_json, project.path)[KERNEL]
    assert verdict["status"] == "STALE"
    assert verdict["reason"].endswith(
        "recorded no digest of the files it covers; re-run it to tie the evidence to the code"
    )


def test_write_back_names_the_changed_files(cov: pytest.Pytester) -> None:
    (cov.path / "src" / "subject.py").write_text("def kernel(x):\n    return 0\n")
    contracts = str(cov.path / "contracts")
    assert main(["pv", "validate", contracts, "--write"]) == 0, "STALE is not a refutation"
    text = (cov.path / "contracts" / "cov-v1.yaml").read_text()
    assert "    status: STALE\n    evidence: {run: '" in text
    assert "reason: 'covered code changed since run " in text and ": src/subject.py (edited)'" in text
    before = text
    main(["pv", "validate", contracts, "--write"])
    assert (cov.path / "contracts" / "cov-v1.yaml").read_text() == before


def test_a_stale_falsifier_is_a_warning_on_github_as_in_sarif(
    cov: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    (cov.path / "src" / "subject.py").write_text("def kernel(x):\n    return sum(x[:-1])\n")
    main(["pv", "validate", str(cov.path / "contracts"), "--format", "github"])
    github = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")]
    assert len(github) == 1 and github[0].startswith("::warning file=contracts/cov-v1.yaml,")
    assert f"title={KERNEL} STALE::covered code changed since run " in github[0]
    main(["pv", "validate", str(cov.path / "contracts"), "--format", "sarif"])
    results = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [("status/STALE", "warning")]
