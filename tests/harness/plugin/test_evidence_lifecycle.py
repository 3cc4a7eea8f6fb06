"""Evidence over time: write-back that moves only with a status, prune, several evidence
directories (a GPU host's records joining CI's), and `--check` in a clone without records."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from shiptwo.cli import main

NOT_RUN = ("-k", "not notrun")


def pv(root: Path, *args: str, contracts: str = "contracts") -> tuple[int, str, str]:
    """`shiptwo pv <args>` in-process on `root`'s `contracts`: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    command, *rest = args
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pv", command, str(root / contracts), *rest])
    return code, out.getvalue(), err.getvalue()


def verdicts(root: Path, *evidence: str) -> dict[str, tuple[str, str | None]]:
    """falsifier id -> (status, the run that decided it), as `pv validate --format json` reports them."""
    _, out, _ = pv(root, "validate", "--format", "json", *evidence)
    return {
        f["id"]: (f["status"], f.get("run")) for c in json.loads(out)["contracts"] for f in c["falsifiers"]
    }


def records(root: Path, where: str = "evidence/runs") -> list[Path]:
    """The run records under `where`, oldest first (as written: by their sequence numbers)."""
    return sorted((root / where).glob("*.json"), key=lambda p: json.loads(p.read_text())["sequence"])


def contract_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "contracts").glob("*.yaml"))}


def fix_the_failing_test(root: Path) -> None:
    tests = root / "falsifiers" / "test_demo.py"
    tests.write_text(tests.read_text().replace("assert 1 + 1 == 3", "assert 1 + 1 == 2"))


def open_the_qwen_gate(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    """A fake Qwen snapshot: the `qwen-artifacts` gate opens, as on the GPU host."""
    where.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (where / name).write_text("{}")
    monkeypatch.setenv("SHIPTWO_QWEN_DIR", str(where))
    from shiptwo.harness import gates

    gates.clear_cache()


# Write-back moves only with a status or its deciding run.


def test_a_run_that_decides_nothing_new_leaves_every_contract_byte_identical(demo: pytest.Pytester) -> None:
    demo.runpytest(*NOT_RUN)
    pv(demo.path, "validate", "--write")
    written = contract_bytes(demo.path)
    assert b"status: HOST-GATED\n    evidence: {run: '" in written["demo-v1.yaml"]
    demo.runpytest("-k", "gated")  # CI again, without the artifacts: the gated falsifier skipped again
    demo.runpytest("-k", "notrun", "--co")  # collected only: no record
    assert len(records(demo.path)) == 2
    code, _, err = pv(demo.path, "validate", "--write")
    assert contract_bytes(demo.path) == written and "wrote" not in err
    # A real change still writes: the failing test now passes.
    fix_the_failing_test(demo.path)
    demo.runpytest("-k", "test_fail")
    newest = json.loads(records(demo.path)[-1].read_text())["run_id"]
    _, _, err = pv(demo.path, "validate", "--write")
    text = (demo.path / "contracts" / "demo-v1.yaml").read_text()
    assert "wrote" in err and f"status: DISCHARGED\n    evidence: {{run: '{newest}'" in text


def test_the_oldest_skip_that_says_the_same_decides_a_host_gated_status(demo: pytest.Pytester) -> None:
    demo.runpytest("-k", "gated")
    first = json.loads(records(demo.path)[0].read_text())["run_id"]
    demo.runpytest("-k", "gated")
    assert verdicts(demo.path)["FALSIFY-DEMO-GATED-001"] == ("HOST-GATED", first)


# Prune.


@pytest.fixture
def superseded(demo: pytest.Pytester) -> pytest.Pytester:
    """Three records: the first decides nothing any more (the second re-ran all of it)."""
    demo.runpytest("-k", "not notrun and not gated")
    demo.runpytest("-k", "not notrun and not gated")
    demo.runpytest("-k", "gated")
    assert len(records(demo.path)) == 3
    return demo


def test_prune_removes_what_decides_nothing_and_statuses_stay(superseded: pytest.Pytester) -> None:
    root = superseded.path
    first, *rest = records(root)
    before = verdicts(root)
    pv(root, "validate", "--write")
    written = contract_bytes(root)
    code, out, _ = pv(root, "prune", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["removed"] == [f"evidence/runs/{first.name}"] and report["dry_run"] is False
    assert [k["path"] for k in report["kept"]] == [f"evidence/runs/{p.name}" for p in rest]
    assert "FALSIFY-DEMO-PASS-001" in report["kept"][0]["falsifiers"]
    assert report["kept"][1]["reason"] == "decides FALSIFY-DEMO-GATED-001"
    assert records(root) == rest
    assert verdicts(root) == before
    assert pv(root, "validate", "--write")[2] == "" and contract_bytes(root) == written
    # Nothing left to prune: a second prune removes nothing.
    code, out, _ = pv(root, "prune")
    assert code == 0 and out.splitlines()[-1] == "removed 0 of 2 run records; kept 2"


def test_prune_dry_run_removes_nothing(superseded: pytest.Pytester) -> None:
    before = records(superseded.path)
    code, out, _ = pv(superseded.path, "prune", "--dry-run")
    assert code == 0 and records(superseded.path) == before
    assert out.splitlines()[0] == f"would remove evidence/runs/{before[0].name}"
    assert out.splitlines()[-1] == "would remove 1 of 3 run records; kept 2"


def test_prune_keep_n_keeps_the_newest_too(superseded: pytest.Pytester) -> None:
    before = records(superseded.path)
    code, out, _ = pv(superseded.path, "prune", "--keep", "3")
    assert code == 0 and records(superseded.path) == before
    assert f"kept evidence/runs/{before[0].name}: among the 3 newest (--keep)" in out
    assert pv(superseded.path, "prune", "--keep", "-1")[2] == (
        "error: --keep -1: not a count of records; give 0 or more\n"
    )


def test_prune_refuses_while_contracts_have_errors(superseded: pytest.Pytester) -> None:
    path = superseded.path / "contracts" / "demo-v1.yaml"
    path.write_text(path.read_text().replace("title: Demo contract", "titel: Demo contract"))
    before = records(superseded.path)
    code, out, err = pv(superseded.path, "prune")
    assert code == 2 and out == "" and records(superseded.path) == before
    assert re.match(r"error: not pruning while there are \d+ error finding\(s\) in the contracts or run", err)
    assert "PV10" in err and len(err.splitlines()) == 1


def test_prune_of_named_contracts_keeps_records_of_the_others(superseded: pytest.Pytester) -> None:
    root = superseded.path
    other = (root / "contracts" / "demo-v1.yaml").read_text().replace("id: demo-v1", "id: other-v1")
    for old, new in (("DEMO", "OTHER"), ("Demo", "Other")):
        other = other.replace(old, new)
    (root / "contracts" / "other-v1.yaml").write_text(other)
    tests = (
        (root / "falsifiers" / "test_demo.py")
        .read_text()
        .replace("DEMO", "OTHER")
        .replace("def test_", "def test_other_")
    )
    (root / "falsifiers" / "test_other.py").write_text(tests)
    superseded.runpytest("-k", "test_other_pass")
    other_record = records(root)[-1]
    code, out, _ = pv(root, "prune", contracts="contracts/demo-v1.yaml")
    assert code == 0 and other_record.exists(), out
    assert f"kept evidence/runs/{other_record.name}: mentions FALSIFY-OTHER-PASS-001" in out


# Several evidence directories: a GPU host's record joins CI's.


def test_a_gpu_hosts_record_joins_cis_evidence(
    demo: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The GPU host: the gate is open; its record goes to its own directory, the artifact CI downloads.
    open_the_qwen_gate(monkeypatch, tmp_path / "qwen")
    demo.runpytest("-k", "gated", "--shiptwo-evidence", "gpu-runs")
    (gpu_record,) = records(demo.path, "gpu-runs")
    gpu_run = json.loads(gpu_record.read_text())["run_id"]
    # CI: no artifacts, the gated falsifier skips.
    monkeypatch.delenv("SHIPTWO_QWEN_DIR")
    from shiptwo.harness import gates

    gates.clear_cache()
    demo.runpytest(*NOT_RUN)
    assert verdicts(demo.path)["FALSIFY-DEMO-GATED-001"][0] == "HOST-GATED"
    both = ("--evidence", str(demo.path / "evidence" / "runs"), "--evidence", str(demo.path / "gpu-runs"))
    joined = verdicts(demo.path, *both)
    assert joined["FALSIFY-DEMO-GATED-001"] == ("DISCHARGED", gpu_run)
    assert joined["FALSIFY-DEMO-PASS-001"][0] == "DISCHARGED"
    # Committed and downloaded too: the same record counts once.
    shutil.copy(gpu_record, demo.path / "evidence" / "runs")
    _, out, _ = pv(demo.path, "validate", "--format", "json", *both)
    assert json.loads(out)["summary"]["runs"] == 2 and not [
        f for f in json.loads(out)["findings"] if f["rule"].startswith("PV6")
    ]
    # Two different records under one run id: an error naming both, and neither decides.
    tampered = json.loads(gpu_record.read_text())
    tampered["tests"][0]["outcome"] = "failed"
    (demo.path / "evidence" / "runs" / gpu_record.name).write_text(json.dumps(tampered))
    code, out, _ = pv(demo.path, "validate", "--format", "json", *both)
    findings = json.loads(out)["findings"]
    assert code == 1 and [f["rule"] for f in findings if f["rule"].startswith("PV6")] == ["PV601"]
    findings = [f for f in findings if f["rule"] == "PV601"]
    assert f"run_id '{gpu_run}' is also the run id of " in findings[0]["message"]
    assert verdicts(demo.path, *both)["FALSIFY-DEMO-GATED-001"][0] == "HOST-GATED"


def test_an_evidence_directory_that_is_not_one_is_a_usage_error(demo: pytest.Pytester) -> None:
    missing = demo.path / "artifacts" / "gpu-runs"
    code, out, err = pv(
        demo.path, "validate", "--evidence", str(demo.path / "contracts"), "--evidence", str(missing)
    )
    assert (code, out) == (2, "")
    assert err == f"error: --evidence {missing}: not a directory of run records\n"


# --check in a clone without the records.


def test_check_in_a_clone_without_records_takes_written_statuses_at_their_word(demo: pytest.Pytester) -> None:
    fix_the_failing_test(demo.path)
    demo.runpytest(*NOT_RUN)
    pv(demo.path, "validate", "--write")
    run = json.loads(records(demo.path)[0].read_text())["run_id"]
    shutil.rmtree(demo.path / "evidence")  # a fresh clone of a project that does not commit records
    code, out, _ = pv(demo.path, "validate", "--check", "-q")
    assert code == 0, out
    assert (
        f"PV604 evidence-absent: FALSIFY-DEMO-PASS-001: YAML says DISCHARGED from run {run}, which is in no "
        "evidence directory, and no record here mentions it; not checked" in out
    )
    assert "PV602" not in out
    assert pv(demo.path, "validate", "--check", "--strict")[0] == 1
    # A status that names no run is checked as ever: nothing supports it.
    path = demo.path / "contracts" / "demo-v1.yaml"
    text = path.read_text()
    notrun = text.index("id: FALSIFY-DEMO-NOTRUN-001")
    path.write_text(text[:notrun] + text[notrun:].replace("status: NOT-RUN", "status: DISCHARGED", 1))
    code, out, _ = pv(demo.path, "validate", "--check", "-q")
    assert code == 1
    assert (
        "PV602 status-out-of-date: FALSIFY-DEMO-NOTRUN-001: YAML says DISCHARGED, evidence says NOT-RUN"
        in out
    )


def test_check_without_records_still_fails_a_written_falsified(demo: pytest.Pytester) -> None:
    demo.runpytest(*NOT_RUN)
    pv(demo.path, "validate", "--write")
    shutil.rmtree(demo.path / "evidence")
    code, out, _ = pv(demo.path, "validate", "--check", "-q")
    assert (
        code == 1
        and "PV602" not in out
        and "PV604 evidence-absent: FALSIFY-DEMO-FAIL-001: YAML says FALSIFIED" in out
    )
