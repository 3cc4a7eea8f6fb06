"""Whole runs of `validate_paths` and `shiptwo pv validate|rules`: every finding, exit codes, formats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.harness.contract.rules import BY_CODE
from shiptwo.harness.contract.validate import validate_paths

from .contract_project import GOOD, Project, edit, without_tests

REPO = Path(__file__).resolve().parents[3]

THREE_PROBLEMS = (
    ("description:", "descripton:"),  # PV101
    ("status: DRAFT", "status: DONE"),  # PV103
    ("plausible: {min: 0.0, max: 0.5}", "plausible: {min: 0.5, max: 0.1}"),  # PV503
)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# validate_paths: everything is reported.


def test_a_file_with_three_problems_yields_three_findings(project: Project) -> None:
    project.contract(edit(GOOD, *THREE_PROBLEMS))

    findings = project.validate().findings

    assert [(f.rule, f.line) for f in findings] == [("PV101", 5), ("PV503", 26), ("PV103", 33)]


def test_two_bad_files_are_both_reported(project: Project) -> None:
    project.contract(edit(GOOD, ("status: DRAFT", "status: DONE")))
    project.contract(
        without_tests(GOOD.replace("demo-v1", "other-v1").replace("FALSIFY-DEMO", "FALSIFY-OTHER")).replace(
            "requires: []", "requires: [tpu]"
        ),
        stem="other-v1",
    )
    project.write("contracts/broken.yaml", "schema: [\n")

    result = project.validate()

    assert [(f.path, f.rule) for f in result.findings] == [
        ("contracts/broken.yaml", "PV001"),
        ("contracts/demo-v1.yaml", "PV103"),
        ("contracts/other-v1.yaml", "PV501"),
    ]
    # A contract whose data is sound enough is still read; the one with a schema error is not.
    assert [c.id for c in result.contracts] == ["other-v1"]


def test_yaml_without_the_schema_key_is_skipped_and_counted(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.contract(GOOD)
    project.write("contracts/notes.yaml", "owner: someone\nreview: weekly\n")
    project.write("contracts/list.yml", "- a\n- b\n")

    result = project.validate()

    assert result.findings == []
    assert sorted(p.name for p in result.skipped) == ["list.yml", "notes.yaml"]
    code, out, _ = run_cli(capsys, "pv", "validate", str(project.root / "contracts"))
    assert code == 0
    assert "2 non-contract YAML skipped" in out
    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "json", str(project.root / "contracts"))
    assert json.loads(out)["summary"]["skipped_files"] == ["contracts/list.yml", "contracts/notes.yaml"]


def test_the_shipped_contracts_validate_clean() -> None:
    result = validate_paths([REPO / "contracts"])

    assert [(f.path, f.line, f.rule, f.message) for f in result.findings] == []
    assert len(result.contracts) == len(list((REPO / "contracts").glob("*.yaml")))


# The command line.


def test_exit_0_for_a_valid_contract(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(GOOD)

    code, out, _ = run_cli(capsys, "pv", "validate", str(project.root / "contracts"))

    assert code == 0
    assert "demo-v1 1.0.0  DRAFT" in out
    assert "FALSIFY-DEMO-001" in out
    assert "1 contracts, 2 falsifiers" in out
    assert "0 errors, 0 warnings" in out


def test_exit_0_with_only_warnings(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(edit(GOOD, ("{version: 1.0.0,", "{version: 0.9.0,")))

    code, out, _ = run_cli(capsys, "pv", "validate", str(project.root / "contracts/demo-v1.yaml"))

    assert code == 0
    assert "warning PV204 changelog-version" in out


def test_a_falsifier_without_controls_warns_and_strict_makes_it_an_error(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.contract(
        edit(GOOD, ("    controls: [{id: group-broken, defect: the group is broken on purpose}]\n", ""))
    )

    code, out, _ = run_cli(capsys, "pv", "validate", str(project.root / "contracts"))

    assert code == 0
    assert (
        "contracts/demo-v1.yaml:27:5: warning PV701 no-controls: falsifiers[1].controls: FALSIFY-DEMO-002 "
        "declares none" in out
    )
    code, out, _ = run_cli(capsys, "pv", "validate", "--strict", str(project.root / "contracts"))
    assert code == 1
    assert "error PV701 no-controls" in out and "1 error, 0 warnings" in out


def test_covers_takes_paths_globs_and_directories(project: Project) -> None:
    for rel in (
        "src/pkg/model.py",
        "src/pkg/train.py",
        "src/pkg/sub/ops.py",
        "src/pkg/__pycache__/model.cpython-311.pyc",
    ):
        project.write(rel, "x = 1\n")
    project.contract(
        edit(
            GOOD,
            (
                "    if_fails:",
                "    covers: [src/pkg/model.py, 'src/pkg/t*.py', src/pkg/sub, 'src/**/ops.py']\n    "
                "if_fails:",
            ),
        )
    )

    result = project.validate()

    assert result.findings == []
    from shiptwo.harness.covers import covered_files

    assert list(covered_files(project.root, result.contracts[0].falsifiers[0].covers)) == [
        "src/pkg/model.py",
        "src/pkg/sub/ops.py",
        "src/pkg/train.py",
    ]


def test_exit_1_for_error_findings(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(edit(GOOD, *THREE_PROBLEMS))

    code, out, _ = run_cli(capsys, "pv", "validate", str(project.root / "contracts"))

    assert code == 1
    assert (
        "contracts/demo-v1.yaml:5:1: error PV101 unknown-key: descripton: unknown key; did you mean "
        "'description'?" in out
    )
    assert "3 errors, 0 warnings" in out


def test_exit_2_for_a_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "pv", "validate", str(tmp_path / "nope"))

    assert code == 2
    assert err.startswith("error: ") and "nope: no such file or directory" in err


@pytest.mark.parametrize(
    "contents",
    [{}, {"ci.yaml": "on: push\n"}, {"README.md": "# x\n"}],
    ids=["empty", "non-contract-yaml", "no-yaml"],
)
def test_exit_2_for_a_directory_with_no_contracts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], contents: dict[str, str]
) -> None:
    for name, text in contents.items():
        (tmp_path / name).write_text(text)

    code, _, err = run_cli(capsys, "pv", "validate", str(tmp_path))

    assert code == 2
    assert "error: nothing to check: no shiptwo.contract/v1 YAML under" in err


def test_exit_2_for_an_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "pv", "validate", "--format", "xml")

    assert code == 2
    assert "invalid choice: 'xml'" in err


def test_json_has_the_spec_fields(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(GOOD)
    project.contract(
        without_tests(GOOD.replace("demo-v1", "other-v1").replace("FALSIFY-DEMO", "FALSIFY-OTHER")).replace(
            "status: DRAFT", "status: DONE"
        ),
        stem="other-v1",
    )

    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "json", str(project.root / "contracts"))

    assert code == 1
    doc = json.loads(out)
    [contract, invalid] = doc["contracts"]
    assert {k: contract[k] for k in ("id", "path", "version", "status", "valid")} == {
        "id": "demo-v1",
        "path": "contracts/demo-v1.yaml",
        "version": "1.0.0",
        "status": "DRAFT",
        "valid": True,
    }
    # A contract with error findings is still listed, without a status, so consumers see it exists.
    assert {k: invalid[k] for k in ("id", "path", "version", "status", "falsifiers", "valid")} == {
        "id": "other-v1",
        "path": "contracts/other-v1.yaml",
        "version": "1.0.0",
        "status": None,
        "falsifiers": [],
        "valid": False,
    }
    assert [(f["id"], f["status"]) for f in contract["falsifiers"]] == [
        ("FALSIFY-DEMO-001", "NOT-RUN"),
        ("FALSIFY-DEMO-002", "NOT-RUN"),
    ]
    [finding] = doc["findings"]
    assert {k: finding[k] for k in ("rule", "severity", "path", "line")} == {
        "rule": "PV103",
        "severity": "error",
        "path": "contracts/other-v1.yaml",
        "line": 29,
    }
    assert "'DONE' is not one of" in finding["message"]


def test_github_format_emits_annotations(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.contract(edit(GOOD, ("{version: 1.0.0,", "{version: 0.9.0,"), ("status: DRAFT", "status: DONE")))

    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "github", str(project.root / "contracts"))

    assert code == 1
    lines = out.splitlines()
    assert re.fullmatch(
        r"::error file=contracts/demo-v1\.yaml,line=33,col=1,title=PV103 bad-value::status: 'DONE' .*",
        lines[0],
    )
    assert lines[1].startswith("::warning file=contracts/demo-v1.yaml,line=34,")


def test_rules_lists_every_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "pv", "rules")

    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == sorted(BY_CODE)
    assert "PV101  unknown-key" in out

    code, out, _ = run_cli(capsys, "pv", "rules", "--format", "json")
    assert [r["code"] for r in json.loads(out)] == sorted(BY_CODE)


def test_rule_codes_are_stable_and_unique() -> None:
    assert all(re.fullmatch(r"PV\d{3}", code) for code in BY_CODE)
    assert len({r.name for r in BY_CODE.values()}) == len(BY_CODE)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02binary\xff\xfe",
        b"a: &a [*a]\n",
        b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        b"schema: shiptwo.contract/v1\n",
        b"schema: shiptwo.contract/v1\nid: 7\nversion: [1]\ntitle: {}\nobligations: x\nfalsifiers: [1, "
        b"[2]]\n",
        b'schema: shiptwo.contract/v1\nfalsifiers:\n  - id: FALSIFY-X-001\n    tests: [7, "a\\x00.py::t", '
        b"../../etc/x.py::t, falsifiers/test_loop.py::t]\n",
        b"schema: {a: 1}\n",
    ],
    ids=["binary", "recursive-alias", "deep", "only-schema", "wrong-types", "odd-tests", "schema-mapping"],
)
def test_bad_input_never_prints_a_traceback(
    project: Project, capsys: pytest.CaptureFixture[str], raw: bytes
) -> None:
    project.write("contracts/demo-v1.yaml", raw)
    (project.root / "falsifiers/test_loop.py").symlink_to("test_loop.py")  # a symlink loop

    code, out, err = run_cli(capsys, "pv", "validate", "--format", "json", str(project.root / "contracts"))

    assert code == 1
    assert json.loads(out)["findings"]
    assert err == ""


def test_a_nesting_bomb_in_a_subprocess(project: Project) -> None:
    # Unguarded, libyaml's composer overflows the C stack here: the process would die by SIGSEGV.
    project.write("contracts/demo-v1.yaml", b"a: " + b"[" * 200_000 + b"]" * 200_000 + b"\n")

    proc = subprocess.run(
        [sys.executable, "-m", "shiptwo", "pv", "validate", "contracts"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 1, proc.stderr
    assert "contracts/demo-v1.yaml:1:" in proc.stdout
    assert "PV001 yaml-syntax: values nest more than 100 levels deep" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_validate_writes_nothing_without_write(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    path = project.contract(GOOD)
    before = sorted(p.relative_to(project.root) for p in project.root.rglob("*"))

    run_cli(capsys, "pv", "validate", str(project.root / "contracts"))
    run_cli(capsys, "pv", "validate", "--check", str(project.root / "contracts"))

    assert path.read_text() == GOOD
    assert sorted(p.relative_to(project.root) for p in project.root.rglob("*")) == before


def test_github_format_escapes_separators_in_file_names(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write("contracts/a,b/demo-v1.yaml", edit(GOOD, ("status: DRAFT", "status: DONE")))

    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "github", str(project.root / "contracts"))

    assert code == 1
    assert out.startswith("::error file=contracts/a%2Cb/demo-v1.yaml,line=33,col=1,title=PV103 bad-value::")


def test_a_file_named_twice_is_validated_once(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    path = project.contract(GOOD)
    monkeypatch.chdir(project.root)

    result = validate_paths([Path("contracts"), path, Path("./contracts/demo-v1.yaml")])

    assert result.findings == []
    assert [c.id for c in result.contracts] == ["demo-v1"]
