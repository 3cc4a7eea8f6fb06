"""Issue 14: every file the harness reads is lstat'ed first (PV007-PV010, PV406, PV601).

A symlink to /dev/zero or out of the project, a FIFO, a dangling or looping link, a directory
that cannot be listed, an oversized file, a `tests:` entry that leaves the root: each is a
finding naming the file, never a hang, a read until memory runs out, or a silent skip.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shiptwo.cli import main
from shiptwo.errors import EvidenceError
from shiptwo.harness.contract.yamlsafe import MAX_NODES, parse_yaml
from shiptwo.harness.covers import UNREADABLE, covered_files
from shiptwo.harness.evidence import read_evidence, read_run_record, run_record, write_run_record
from shiptwo.harness.safefile import CONTRACT_LIMIT, RUN_RECORD_LIMIT

from .contract_project import GOOD, Project, edit, only


@contextmanager
def deadline(seconds: float = 5.0) -> Iterator[None]:
    """Fail instead of hanging: a FIFO that gets opened blocks until SIGALRM interrupts it."""

    def fire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: something opened a FIFO or read /dev/zero")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_contract_linked_to_dev_zero_is_refused_unread(project: Project) -> None:
    project.contract(GOOD)
    (project.root / "contracts" / "zero.yaml").symlink_to("/dev/zero")

    with deadline():
        f = only(project.validate().findings, "PV009")

    assert f.path == "contracts/zero.yaml"
    assert "symlink to /dev/zero leads outside" in f.message and str(project.root) in f.message


def test_a_fifo_among_the_contracts_is_refused_by_name(project: Project) -> None:
    project.contract(GOOD)
    os.mkfifo(project.root / "contracts" / "pipe.yaml")

    with deadline():
        f = only(project.validate().findings, "PV008")

    assert (f.path, f.severity.value) == ("contracts/pipe.yaml", "error")
    assert "is a FIFO (named pipe), not a regular file" in f.message


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_broken_symlink_among_the_contracts_is_a_finding(project: Project, kind: str) -> None:
    project.contract(GOOD)
    link = project.root / "contracts" / "broken.yaml"
    if kind == "dangling":
        link.symlink_to("gone.yaml")
    else:
        link.symlink_to("broken.yaml")

    f = only(project.validate().findings, "PV008")

    assert f.path == "contracts/broken.yaml"
    assert (
        "dangling symlink to gone.yaml" if kind == "dangling" else "symlink cannot be resolved"
    ) in f.message


def test_the_cli_exits_1_for_a_fifo_not_0(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(GOOD)
    os.mkfifo(project.root / "contracts" / "pipe.yaml")

    with deadline():
        code = main(["pv", "validate", str(project.root / "contracts")])

    assert code == 1
    assert "contracts/pipe.yaml:1:1: error PV008 file-not-regular" in capsys.readouterr().out


def test_a_symlink_inside_the_project_is_followed(project: Project) -> None:
    project.write("shared/real.yaml", GOOD)
    (project.root / "contracts" / "demo-v1.yaml").symlink_to(project.root / "shared" / "real.yaml")

    result = project.validate()

    assert result.findings == []
    assert [c.id for c in result.contracts] == ["demo-v1"]


def test_a_subdirectory_that_cannot_be_listed_is_a_finding(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.contract(GOOD)
    locked = project.root / "contracts" / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # what a 0o000 directory does to a non-root user
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    f = only(project.validate().findings, "PV007")

    assert f.path == "contracts/locked"
    assert "cannot list directory: Permission denied" in f.message


def test_a_contract_over_the_size_limit_says_so(project: Project) -> None:
    path = project.root / "contracts" / "huge.yaml"
    with open(path, "wb") as fh:
        fh.truncate(CONTRACT_LIMIT + 1)  # sparse: its size is read, its bytes never are

    f = only(project.validate().findings, "PV010")

    assert f.path == "contracts/huge.yaml"
    assert f"is {CONTRACT_LIMIT + 1:,} bytes, over the 16 MiB limit" in f.message


def test_a_large_contract_without_aliases_is_no_alias_bomb(project: Project) -> None:
    # Twice MAX_NODES values spelled out: the count is of alias copies, not of values.
    many = "".join(f"  - reference number {i}\n" for i in range(2 * MAX_NODES))
    text = edit(GOOD, ("references:\n  - shiptwo tests\n", "references:\n" + many))
    project.contract(text)

    result = project.validate()

    assert result.findings == []
    assert len(result.contracts) == 1


def test_a_billion_laughs_is_still_refused() -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]

    parsed = parse_yaml("\n".join(levels).encode())

    assert [p.kind for p in parsed.problems] == ["alias-bomb"]
    assert f"more than {MAX_NODES:,} values" in parsed.problems[0].message


def test_a_test_file_linked_to_dev_zero_or_a_fifo_is_refused(project: Project) -> None:
    project.contract(GOOD)
    (project.root / "falsifiers" / "test_zero.py").symlink_to("/dev/zero")
    os.mkfifo(project.root / "falsifiers" / "test_pipe.py")

    with deadline():
        findings = project.validate().findings

    outside, special = only(findings, "PV009"), only(findings, "PV008")
    assert outside.path == "falsifiers/test_zero.py" and "symlink to /dev/zero" in outside.message
    assert special.path == "falsifiers/test_pipe.py" and "FIFO" in special.message


@pytest.mark.parametrize("entry", ["../outside/test_x.py::test_x", "/tmp/outside/test_x.py::test_x"])
def test_a_tests_entry_outside_the_root_is_a_finding_never_read(project: Project, entry: str) -> None:
    outside = project.root.parent / "outside"
    outside.mkdir(exist_ok=True)
    if not (outside / "test_x.py").exists():
        os.mkfifo(outside / "test_x.py")  # reading it would block: the deadline proves it is not read
    entry = entry.replace("/tmp/outside", str(outside))
    project.contract(edit(GOOD, ("- falsifiers/test_demo.py::test_demo", f"- {entry}")))

    with deadline():
        findings = project.validate().findings

    f = only(findings, "PV406")
    assert "falsifiers[0].tests[0]" in f.message
    assert (
        "climbs out of the project root" if entry.startswith("..") else "is an absolute path"
    ) in f.message
    assert not [x for x in findings if x.rule in ("PV401", "PV403")]


def _record(directory: Path) -> Path:
    record = run_record(
        run_id="20261130T000000Z-abcdef",
        sequence=1,
        started_at="2026-11-30T00:00:00.000000Z",
        finished_at="2026-11-30T00:00:01.000000Z",
        exit_status=0,
        git={"commit": None, "dirty": None},
        host={"hostname": "h"},
        gates={},
        artifacts={},
        covers={},
        tests=[
            {
                "nodeid": "falsifiers/test_demo.py::test_demo",
                "falsifiers": ["FALSIFY-DEMO-001"],
                "outcome": "passed",
            }
        ],
    )
    return write_run_record(directory, record)


def test_run_records_linked_to_dev_zero_or_fifos_are_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    _record(runs)
    (runs / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(runs / "pipe.json")

    with deadline():
        records, errors = read_evidence([runs])

    assert [r.run_id for r in records] == ["20261130T000000Z-abcdef"]
    messages = sorted(str(e) for e in errors)
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert messages[0].startswith(f"{runs / 'pipe.json'}: run record refused: is a FIFO")
    assert messages[1].startswith(
        f"{runs / 'zero.json'}: run record refused: symlink to /dev/zero leads outside"
    )


def test_a_run_record_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(RUN_RECORD_LIMIT + 1)

    with pytest.raises(
        EvidenceError, match=r"big\.json: run record refused: is 67,108,865 bytes, over the 64 MiB limit"
    ):
        read_run_record(path)


def test_an_evidence_directory_that_cannot_be_listed_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    _record(runs)
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == runs:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    records, errors = read_evidence([runs])

    assert records == []
    assert [str(e) for e in errors] == [f"{runs}: cannot list run records: Permission denied"]


def test_the_cli_reports_a_fifo_in_the_evidence(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(GOOD)
    runs = project.root / "evidence" / "runs"
    runs.mkdir(parents=True)
    os.mkfifo(runs / "pipe.json")

    with deadline():
        code = main(["pv", "validate", str(project.root / "contracts")])

    out = capsys.readouterr().out
    assert code == 1
    assert "error PV601 evidence-unreadable" in out and "pipe.json: run record refused: is a FIFO" in out


def test_a_covered_file_linked_out_of_the_root_is_not_hashed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("x = 1\n")
    secret = tmp_path / "secret.py"
    secret.write_text("password = 1\n")
    (root / "src" / "b.py").symlink_to(secret)

    files = covered_files(root, ["src"])

    assert files["src/b.py"] == UNREADABLE
    assert files["src/a.py"] != UNREADABLE


def test_the_new_rules_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "contract-format.md").read_text()
    for code in ("PV008", "PV009", "PV010", "PV406"):
        assert code in doc
    assert "16 MiB" in doc and "64 MiB" in doc
