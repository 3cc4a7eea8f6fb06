"""`pv validate --write` and `--check`: statuses go in, nothing else moves."""

from __future__ import annotations

import difflib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shiptwo.cli import main

COMMENTED = """\
# Demo contract -- a file full of comments, quoting styles and folded text.
schema: shiptwo.contract/v1   # the discriminator
id: demo-v1
version: "1.0.0"   # quoted on purpose
title: 'Demo contract'
description: >
  Folded text that a re-dump would
  re-wrap.
obligations:
  # the only obligation
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
        plausible: {min: 1.5, max: 2.5}   # the seeds' range
    # a comment between falsifiers stays with the next one
  - id: FALSIFY-DEMO-FAIL-001
    obligations: [DEMO-001]
    prediction: |
      the test fails
    status: DISCHARGED   # a stale hand-written status, to be corrected
  - id: FALSIFY-DEMO-SUSPECT-001
    obligations: [DEMO-001]
    prediction: passes with an implausible number
    measurements:
      val_loss: {unit: nats, pass: {max: 9.38}, plausible: {min: 1.5, max: 2.5}}
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

# trailing comment block
changelog:
  - {version: 1.0.0, date: 2026-11-21, change: first}
"""


@pytest.fixture
def ran(demo: pytest.Pytester) -> pytest.Pytester:
    (demo.path / "contracts" / "demo-v1.yaml").write_text(COMMENTED)
    demo.runpytest("-k", "not notrun")
    return demo


def pv(root: Path, *args: str) -> int:
    return main(["pv", "validate", str(root / "contracts"), *args])


def test_write_changes_only_status_lines(ran: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    path = ran.path / "contracts" / "demo-v1.yaml"
    before = path.read_text()
    assert pv(ran.path, "--write") == 1  # a FALSIFIED falsifier still exits 1
    after = path.read_text()
    changed = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed, "statuses were written"
    assert all(line[1:].lstrip().startswith(("status:", "evidence:")) for line in changed), changed
    removed = [line for line in changed if line.startswith("-")]
    assert removed == ["-    status: DISCHARGED   # a stale hand-written status, to be corrected"]
    kept = [line for line in after.splitlines() if not line.lstrip().startswith(("status:", "evidence:"))]
    assert kept == [
        line for line in before.splitlines() if not line.lstrip().startswith(("status:", "evidence:"))
    ]
    # The hand-written comment outlives the status it annotated (issue 14).
    assert "    status: FALSIFIED   # a stale hand-written status, to be corrected\n" in after
    assert "\nstatus: FALSIFIED\n# trailing comment block" not in after
    assert "status: FALSIFIED\n\n# trailing comment block\nchangelog:" in after
    assert (
        "    status: HOST-GATED\n    evidence: {run: '" in after
        and "reason: 'host gate ''qwen-artifacts'' closed" in after
    )
    assert "    status: UNBOUND\n" in after
    assert "measured: {val_loss: 0.00081}" in after
    assert "wrote" in capsys.readouterr().err


def test_second_write_is_a_no_op_and_check_passes(
    ran: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ran.path / "contracts" / "demo-v1.yaml"
    pv(ran.path, "--write")
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    capsys.readouterr()
    pv(ran.path, "--write")
    assert path.read_bytes() == first and path.stat().st_mtime_ns == mtime
    assert "wrote" not in capsys.readouterr().err
    # --check agrees now: the only exit-1 cause left is the FALSIFIED falsifier itself.
    assert pv(ran.path, "--check", "--format", "json") == 1
    assert "PV602" not in capsys.readouterr().out


def test_check_fails_when_yaml_and_evidence_disagree(
    ran: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = ran.path / "falsifiers" / "test_demo.py"
    tests.write_text(
        tests.read_text()
        .replace("assert 1 + 1 == 3", "assert 1 + 1 == 2")
        .replace('raise RuntimeError("fixture broke")', "return 1")
    )
    ran.runpytest("-k", "fail or error")
    pv(ran.path, "--write")
    assert pv(ran.path, "--check") == 0  # nothing falsified, YAML agrees
    ran.runpytest("-k", "gated", "--shiptwo-require", "qwen-artifacts")  # the gated one now errors
    capsys.readouterr()
    assert pv(ran.path, "--check") == 1
    out = capsys.readouterr().out
    assert (
        "PV602 status-out-of-date: FALSIFY-DEMO-GATED-001: YAML says HOST-GATED, evidence says ERROR" in out
    )


def test_without_write_no_file_changes(ran: pytest.Pytester) -> None:
    path = ran.path / "contracts" / "demo-v1.yaml"
    before = path.read_bytes()
    pv(ran.path)
    pv(ran.path, "--check")
    assert path.read_bytes() == before


def test_killed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "demo-v1.yaml"
    target.write_text(COMMENTED)
    script = f"""
import os, sys, time
import shiptwo.fileio as ev
def slow_fsync(fd):
    print("writing", flush=True)
    time.sleep(60)
os.fsync = slow_fsync
ev.atomic_write_bytes(__import__("pathlib").Path({str(target)!r}), b"half" * 100000)
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == COMMENTED
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["demo-v1.yaml"]


def test_write_refuses_when_contracts_have_errors(
    ran: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ran.path / "contracts" / "demo-v1.yaml"
    path.write_text(COMMENTED.replace("title: 'Demo contract'", "titel: 'Demo contract'"))
    before = path.read_bytes()
    assert pv(ran.path, "--write") == 1
    assert path.read_bytes() == before
    assert "not writing statuses while there are error findings" in capsys.readouterr().err
