"""One red case per validation rule: each edit of the GOOD contract trips exactly the rule named.

Each case asserts the code, severity, file, line, column and the words of the message that tell
the author what to fix; `also` lists the other findings the same edit honestly causes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shiptwo.harness.contract.rules import BY_CODE, Severity

from .contract_project import GOOD, TEST_DEMO, Project, col_of, edit, line_of, only, without_tests

CONTRACT = "contracts/demo-v1.yaml"
TESTS_1 = "      - falsifiers/test_demo.py::test_demo\n"
CONTROLS_1 = "    controls: [{id: demo-broken, defect: the demo is broken on purpose}]\n"
CONTROLS_2 = "    controls: [{id: group-broken, defect: the group is broken on purpose}]\n"


@dataclass(frozen=True)
class Case:
    rule: str
    edits: tuple[tuple[str, str], ...]
    at: tuple[str, int] | str | int  # the line: a needle on it (and which occurrence), or its number
    col: str | None  # needle on that line where the finding's column points
    words: tuple[str, ...]  # must all appear in the message
    also: tuple[str, ...] = ()  # other rules the edit trips
    files: dict[str, str] = field(default_factory=dict)


def add_test_entry(entry: str) -> tuple[str, str]:
    return (TESTS_1, f"{TESTS_1}      - {entry}\n")


CASES = {
    # Schema (PV1xx).
    "PV101-top-level": Case(
        "PV101",
        (("description:", "descripton:"),),
        "descripton:",
        "descripton",
        ("descripton", "unknown key", "did you mean 'description'"),
    ),
    "PV101-falsifier": Case(
        "PV101",
        (("    if_fails:", "    if_fail:"),),
        "if_fail:",
        "if_fail",
        ("falsifiers[0].if_fail", "did you mean 'if_fails'"),
    ),
    "PV101-measurement": Case(
        "PV101",
        (("pass: {max: 0.5}", "pas: {max: 0.5}"),),
        "pas: {max",
        "pas",
        ("falsifiers[0].measurements.error.pas", "did you mean 'pass'"),
    ),
    "PV101-range": Case(
        "PV101",
        (("plausible: {min: 0.0, max: 0.5}", "plausible: {min: 0.0, mx: 0.5}"),),
        "mx: 0.5",
        "mx",
        ("plausible.mx", "did you mean 'max'"),
    ),
    "PV101-no-close-match": Case(
        "PV101",
        (("requires: []", "requires: []\nowner: someone"),),
        "owner:",
        "owner",
        ("owner", "unknown key; remove it"),
    ),
    "PV102": Case(
        "PV102",
        (("    prediction: The grouped demo test passes.\n", ""),),
        "- id: FALSIFY-DEMO-002",
        "id",
        ("falsifiers[1]", "'prediction' is a required property"),
    ),
    "PV103-enum": Case(
        "PV103",
        (("status: DRAFT", "status: DONE"),),
        "status: DONE",
        "status",
        ("status", "'DONE' is not one of", "DRAFT"),
    ),
    "PV103-1e-5-is-a-string": Case(
        "PV103",
        (("pass: {max: 0.5}", "pass: {max: 1e-5}"),),
        "1e-5",
        "max",
        ("pass.max", "'1e-5' is a string, not a number", "1.0e-5"),
    ),
    "PV103-obligation-named-twice": Case(
        "PV103",
        (("obligations: [DEMO-001]", "obligations: [DEMO-001, DEMO-001]"),),
        "[DEMO-001, DEMO-001]",
        "obligations",
        ("falsifiers[0].obligations", "non-unique"),
    ),
    "PV103-obligation-id-pattern": Case(
        "PV103",
        (
            ("  - id: DEMO-002\n", "  - id: demo-002\n"),
            ("obligations: [DEMO-002]", "obligations: [demo-002]"),
        ),
        "  - id: demo-002",
        "id",
        ("obligations[1].id", "'demo-002' does not match"),
    ),
    "PV103-measurement-name": Case(
        "PV103",
        (("      error:", "      Error:"),),
        "Error:",
        "Error",
        ("measurements.Error", "bad name", "'Error'"),
    ),
    "PV103-nan-bound": Case(
        "PV103",
        (("pass: {max: 0.5}", "pass: {max: .nan}"),),
        ".nan",
        "max",
        ("pass.max", ".nan is not a bound"),
    ),
    "PV103-schema-version": Case(
        "PV103",
        (("schema: shiptwo.contract/v1", "schema: shiptwo.contract/v9"),),
        "schema:",
        "schema",
        ("'shiptwo.contract/v9' is not supported", "'shiptwo.contract/v1'"),
    ),
    # Identity and naming (PV2xx).
    "PV201": Case(
        "PV201",
        (("id: demo-v1", "id: demo-v2"),),
        "id: demo-v2",
        "id",
        ("'demo-v2'", "file stem 'demo-v1'", "rename"),
    ),
    "PV202-not-semver": Case(
        "PV202",
        (("\nversion: 1.0.0", "\nversion: '1.0'"),),
        "version: '1.0'",
        "version",
        ("'1.0' is not semver", "MAJOR.MINOR.PATCH"),
        also=("PV204",),  # the changelog's 1.0.0 is no longer the version
    ),
    "PV202-unquoted-float": Case(
        "PV202",
        (("\nversion: 1.0.0", "\nversion: 1.0"),),
        3,
        "version",
        ("1.0 is not a string", "quote it"),
    ),
    "PV203": Case(
        "PV203",
        (("id: FALSIFY-DEMO-001", "id: FALSIFY-demo-1"),),
        "id: FALSIFY-demo-1",
        "id",
        ("'FALSIFY-demo-1'", "FALSIFY-<AREA>-<NNN>"),
        files={"falsifiers/test_demo.py": TEST_DEMO.replace("FALSIFY-DEMO-001", "FALSIFY-demo-1")},
    ),
    "PV204": Case(
        "PV204",
        (("{version: 1.0.0,", "{version: 0.9.0,"),),
        "changelog:",
        "changelog",
        ("no entry for version 1.0.0",),
    ),
    # Cross references (PV3xx).
    "PV301": Case(
        "PV301",
        (("falsifiers:\n", "  - id: DEMO-001\n    statement: Said again.\nfalsifiers:\n"),),
        ("- id: DEMO-001", 2),
        "id",
        ("obligations[2].id", "'DEMO-001' repeats obligations[0]"),
    ),
    "PV302-within-a-contract": Case(
        "PV302",
        (("  - id: FALSIFY-DEMO-002", "  - id: FALSIFY-DEMO-001"),),
        ("- id: FALSIFY-DEMO-001", 2),
        "id",
        ("falsifiers[1].id", "'FALSIFY-DEMO-001' is already declared at contracts/demo-v1.yaml:15"),
        # test_twice, marked 002, is now listed under a falsifier it does not mark, and 002 is gone.
        also=("PV405",),
    ),
    "PV303": Case(
        "PV303",
        (("obligations: [DEMO-001]", "obligations: [DEMO-001, DEMO-0001]"),),
        "DEMO-0001",
        "DEMO-0001",
        ("falsifiers[0].obligations[1]", "'DEMO-0001' is not an obligation", "did you mean 'DEMO-001'"),
    ),
    "PV304": Case(
        "PV304",
        (("falsifiers:\n", "  - id: DEMO-003\n    statement: Nobody checks this.\nfalsifiers:\n"),),
        "id: DEMO-003",
        "id",
        ("'DEMO-003' is covered by no falsifier",),
    ),
    # Tests named in `tests:` (PV4xx).
    "PV401": Case(
        "PV401",
        (add_test_entry("falsifiers/test_gone.py::test_demo"),),
        "test_gone.py",
        "falsifiers/",
        ("falsifiers[0].tests[1]", "falsifiers/test_gone.py does not exist"),
    ),
    "PV402-function": Case(
        "PV402",
        (add_test_entry("falsifiers/test_demo.py::test_demoo"),),
        "test_demoo",
        "falsifiers/",
        ("defines no test 'test_demoo'", "did you mean 'test_demo'"),
    ),
    "PV402-class": Case(
        "PV402",
        (add_test_entry("falsifiers/test_demo.py::TestGrup::test_twice"),),
        "TestGrup",
        "falsifiers/",
        ("falsifiers/test_demo.py defines no class 'TestGrup'",),
    ),
    "PV402-method": Case(
        "PV402",
        (add_test_entry("falsifiers/test_demo.py::TestGroup::test_thrice"),),
        "test_thrice",
        "falsifiers/",
        ("defines no test 'TestGroup::test_thrice'",),
    ),
    "PV403": Case(
        "PV403",
        (add_test_entry("falsifiers/test_broken.py::test_x"),),
        "test_broken.py",
        "falsifiers/",
        ("falsifiers/test_broken.py is not valid Python", "SyntaxError"),
        files={"falsifiers/test_broken.py": "def test_x(:\n    pass\n"},
    ),
    "PV404": Case(
        "PV404",
        (add_test_entry("falsifiers/test_demo.py:test_demo"),),
        "test_demo.py:test_demo",
        "falsifiers/",
        ("'falsifiers/test_demo.py:test_demo' is not", "path/test_x.py::test_name"),
    ),
    "PV405-listed-without-marker": Case(
        "PV405",
        (add_test_entry("falsifiers/test_demo.py::test_unmarked"),),
        "test_unmarked",
        "falsifiers/",
        ("test_unmarked carries no @pytest.mark.falsifier('FALSIFY-DEMO-001')",),
    ),
    "PV405-marked-not-listed": Case(
        "PV405",
        (("    tests:\n      - falsifiers/test_demo.py::TestGroup::test_twice\n", "    tests: []\n"),),
        "tests: []",
        "tests",
        (
            "falsifiers/test_demo.py::TestGroup::test_twice is marked falsifier('FALSIFY-DEMO-002')",
            "not listed",
        ),
    ),
    # Gates and measurements (PV5xx).
    "PV501-contract": Case(
        "PV501",
        (("requires: []", "requires: [qwen-tokeniser]"),),
        "qwen-tokeniser",
        "qwen-tokeniser",
        ("requires: 'qwen-tokeniser' is not a host gate", "did you mean 'qwen-tokenizer'"),
    ),
    "PV501-falsifier": Case(
        "PV501",
        (("    if_fails:", "    requires: [cuda, gpus]\n    if_fails:"),),
        "gpus",
        "gpus",
        ("falsifiers[0].requires[1]: 'gpus' is not a host gate", "cuda"),
    ),
    "PV502": Case(
        "PV502",
        (("pass: {max: 0.5}", "pass: {}"),),
        "pass: {}",
        "pass",
        ("measurements.error.pass", "neither min nor max"),
    ),
    "PV503": Case(
        "PV503",
        (("plausible: {min: 0.0, max: 0.5}", "plausible: {min: 0.5, max: 0.1}"),),
        "plausible:",
        "plausible",
        ("measurements.error.plausible", "min 0.5 > max 0.1", "swap"),
    ),
    "PV504": Case(
        "PV504",
        (("plausible: {min: 0.0, max: 0.5}", "plausible: {min: 0.6, max: 0.9}"),),
        "plausible:",
        "plausible",
        ("measurements.error", "does not overlap the pass range"),
    ),
    "PV505": Case(
        "PV505",
        (("        pass: {max: 0.5}\n        plausible: {min: 0.0, max: 0.5}\n", ""),),
        "      error:",
        "error",
        ("measurements.error", "neither `pass` nor `plausible`"),
    ),
    # Controls and covered code (PV7xx), and the schema's words on them.
    "PV701-absent": Case(
        "PV701",
        ((CONTROLS_2, ""),),
        "- id: FALSIFY-DEMO-002",
        "id",
        (
            "falsifiers[1].controls: FALSIFY-DEMO-002 declares none",
            "add controls: [{id: <slug>, defect:",
            "falsifier_control",
        ),
    ),
    "PV701-empty-list": Case(
        "PV701",
        ((CONTROLS_2, "    controls: []\n"),),
        "controls: []",
        "controls",
        ("falsifiers[1].controls: FALSIFY-DEMO-002 declares none", "add controls:"),
    ),
    "PV702": Case(
        "PV702",
        (
            (
                CONTROLS_1,
                "    controls:\n      - {id: demo-broken, defect: one}\n      - {id: demo-broken, defect: "
                "two}\n",
            ),
        ),
        "defect: two}",
        "id",
        ("falsifiers[0].controls[1].id: 'demo-broken' repeats controls[0]", "give each control its own id"),
    ),
    "PV703": Case(
        "PV703",
        ((CONTROLS_1, CONTROLS_1 + "    covers: [src/shiptwo/modle.py]\n"),),
        "covers:",
        "src/",
        (
            "falsifiers[0].covers[0]: 'src/shiptwo/modle.py' matches no file under",
            "fix the path or glob (renamed?), or remove it",
        ),
        files={"src/shiptwo/qwen2/model.py": "x = 1\n"},
    ),
    "PV704-absolute": Case(
        "PV704",
        ((CONTROLS_1, CONTROLS_1 + "    covers: [/etc/passwd]\n"),),
        "covers:",
        "/etc",
        ("falsifiers[0].covers[0]: '/etc/passwd' is an absolute path", "relative to the project root"),
    ),
    "PV704-climbs-out": Case(
        "PV704",
        ((CONTROLS_1, CONTROLS_1 + "    covers: [src/../../elsewhere/x.py]\n"),),
        "covers:",
        "src/",
        ("'src/../../elsewhere/x.py' climbs out of the project root with '..'",),
    ),
    "PV101-control-key": Case(
        "PV101",
        (("defect: the demo is broken", "defects: the demo is broken"),),
        "defects:",
        "defects",
        ("falsifiers[0].controls[0].defects: unknown key; did you mean 'defect'?",),
        also=("PV102",),  # and `defect` is now missing
    ),
    "PV101-comma-in-flow-text": Case(
        "PV101",
        (("defect: the demo is broken on purpose}", "defect: weights at N(0, 0.02) on purpose}"),),
        "N(0, 0.02)",
        "0.02)",
        (
            "falsifiers[0].controls[0].0.02) on purpose: unknown key",
            "a ',' or ': ' inside unquoted text",
            "quote the text",
        ),
    ),
    "PV102-control-defect": Case(
        "PV102",
        (("{id: demo-broken, defect: the demo is broken on purpose}", "{id: demo-broken}"),),
        "{id: demo-broken}",
        "{",
        (
            "falsifiers[0].controls[0]: 'defect' is a required property",
            "say in one sentence which defect the test plants",
        ),
    ),
    "PV103-control-id": Case(
        "PV103",
        (("{id: demo-broken,", "{id: Demo_Broken,"),),
        "Demo_Broken",
        "id",
        ("falsifiers[0].controls[0].id: 'Demo_Broken' does not match", "short slug", "e.g. qkv-bias-random"),
    ),
    "PV103-control-id-too-long": Case(
        "PV103",
        (("{id: demo-broken,", "{id: " + "x" * 65 + ","),),
        "xxxxx",
        "id",
        ("falsifiers[0].controls[0].id: '" + "x" * 65 + "' is too long", "at most 64 characters"),
    ),
    "PV103-control-defect-empty": Case(
        "PV103",
        (("defect: the demo is broken on purpose}", "defect: ''}"),),
        "defect: ''",
        "defect",
        ("falsifiers[0].controls[0].defect: '' should be non-empty", "say in one sentence which defect"),
    ),
    "PV103-controls-not-a-list": Case(
        "PV103",
        ((CONTROLS_1, "    controls: demo-broken\n"),),
        "controls: demo-broken",
        "controls",
        (
            "falsifiers[0].controls: 'demo-broken' is not of type 'array'",
            "write a list of controls, each {id: qkv-bias-random",
        ),
    ),
    "PV103-control-not-a-mapping": Case(
        "PV103",
        ((CONTROLS_1, "    controls: [demo-broken]\n"),),
        "controls: [demo-broken]",
        "demo-broken",
        (
            "falsifiers[0].controls[0]: 'demo-broken' is not of type 'object'",
            "write each control as {id: qkv-bias-random",
        ),
    ),
    "PV103-covers-not-a-list": Case(
        "PV103",
        ((CONTROLS_1, CONTROLS_1 + "    covers: src/shiptwo/qwen2/model.py\n"),),
        "covers:",
        "covers",
        (
            "falsifiers[0].covers: 'src/shiptwo/qwen2/model.py' is not of type 'array'",
            "write a list of paths or globs",
        ),
        files={"src/shiptwo/qwen2/model.py": "x = 1\n"},
    ),
    "PV103-covers-twice": Case(
        "PV103",
        (
            (
                CONTROLS_1,
                CONTROLS_1 + "    covers: [src/shiptwo/qwen2/model.py, src/shiptwo/qwen2/model.py]\n",
            ),
        ),
        "covers:",
        "covers",
        (
            "falsifiers[0].covers: ['src/shiptwo/qwen2/model.py', 'src/shiptwo/qwen2/model.py'] has "
            "non-unique elements",
            "name each path or glob once",
        ),
        files={"src/shiptwo/qwen2/model.py": "x = 1\n"},
    ),
    "PV103-covers-entry": Case(
        "PV103",
        ((CONTROLS_1, CONTROLS_1 + "    covers: [7]\n"),),
        "covers:",
        "7",
        (
            "falsifiers[0].covers[0]: 7 is not of type 'string'",
            "give a path or glob relative to the project root",
        ),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rule_fires_on_its_red_case(project: Project, case: Case) -> None:
    text = edit(GOOD, *case.edits)
    project.contract(text)
    for rel, body in case.files.items():
        project.write(rel, body)

    findings = project.validate().findings

    assert {f.rule for f in findings} == {case.rule, *case.also}, [(f.rule, f.message) for f in findings]
    f = only(findings, case.rule)
    assert f.severity is BY_CODE[case.rule].severity
    assert f.name == BY_CODE[case.rule].name
    assert f.path == CONTRACT
    if isinstance(case.at, int):
        assert f.line == case.at
    else:
        needle, nth = case.at if isinstance(case.at, tuple) else (case.at, 1)
        assert f.line == line_of(text, needle, nth)
    if case.col is not None:
        assert f.column == col_of(text, f.line, case.col)
    for word in case.words:
        assert word in f.message


def test_good_contract_is_clean(project: Project) -> None:
    project.contract(GOOD)

    result = project.validate()

    assert result.findings == []
    [contract] = result.contracts
    assert [f.id for f in contract.falsifiers] == ["FALSIFY-DEMO-001", "FALSIFY-DEMO-002"]
    assert result.markers == {
        "FALSIFY-DEMO-001": ["falsifiers/test_demo.py::test_demo"],
        "FALSIFY-DEMO-002": ["falsifiers/test_demo.py::TestGroup::test_twice"],
    }


def test_every_validation_rule_has_a_red_case() -> None:
    covered = {case.rule for case in CASES.values()} | {
        "PV001",
        "PV002",
        "PV003",
        "PV004",
        "PV005",
        "PV006",
        "PV007",
        "PV302",
        "PV305",
        # Files refused unread: tests/harness/test_safe_inputs.py.
        "PV008",
        "PV009",
        "PV010",
        "PV406",
    }
    validation_rules = {code for code in BY_CODE if not code.startswith("PV6")}
    assert validation_rules <= covered


# Rules whose red case needs more than one edit of one file.


def test_pv302_duplicate_falsifier_id_across_contracts(project: Project) -> None:
    project.contract(GOOD)
    other = without_tests(
        edit(GOOD, ("id: demo-v1", "id: other-v1"), ("- id: FALSIFY-DEMO-002", "- id: FALSIFY-OTHER-002"))
    )
    project.contract(other, stem="other-v1")

    findings = project.validate().findings

    assert [x.rule for x in findings] == ["PV302"]
    f = findings[0]
    assert f.severity is Severity.ERROR
    assert (f.path, f.line, f.column) == ("contracts/other-v1.yaml", line_of(other, "FALSIFY-DEMO-001"), 5)
    assert "'FALSIFY-DEMO-001' is already declared at contracts/demo-v1.yaml:15" in f.message
    assert "unique across all contracts" in f.message


def test_pv305_duplicate_contract_id_in_two_directories(project: Project) -> None:
    project.write("contracts/a/demo-v1.yaml", GOOD)
    project.write("contracts/b/demo-v1.yaml", without_tests(GOOD.replace("FALSIFY-DEMO-", "FALSIFY-SECOND-")))

    findings = project.validate().findings

    assert [x.rule for x in findings] == ["PV305"]
    f = findings[0]
    assert (f.path, f.line, f.column, f.severity) == ("contracts/b/demo-v1.yaml", 2, 1, Severity.ERROR)
    assert "'demo-v1' is also declared by contracts/a/demo-v1.yaml" in f.message


def test_pv405_marker_names_an_undeclared_falsifier(project: Project) -> None:
    project.contract(GOOD)
    project.write(
        "falsifiers/test_more.py",
        'import pytest\n\n\n@pytest.mark.falsifier("FALSIFY-DEMO-003")\ndef test_more():\n    pass\n',
    )

    f = only(project.validate().findings, "PV405")

    assert (f.path, f.line) == ("falsifiers/test_more.py", 4)
    assert "test_more: marker falsifier('FALSIFY-DEMO-003') names no falsifier of any contract" in f.message
    assert "did you mean 'FALSIFY-DEMO-001'" in f.message or "did you mean 'FALSIFY-DEMO-002'" in f.message


def test_module_and_class_markers_bind_their_tests(project: Project) -> None:
    project.contract(
        edit(
            GOOD,
            (
                TESTS_1,
                "      - falsifiers/test_module.py::test_a\n      - "
                "falsifiers/test_module.py::TestB::test_b[1]\n",
            ),
        )
    )
    project.write(
        "falsifiers/test_module.py",
        'import pytest\n\npytestmark = [pytest.mark.falsifier("FALSIFY-DEMO-001")]\n\n\ndef test_a():\n    '
        "pass\n\n\n"
        "@pytest.mark.slow\nclass TestB:\n    def test_b(self):\n        pass\n",
    )
    project.write(
        "falsifiers/test_demo.py", TEST_DEMO.replace('@pytest.mark.falsifier("FALSIFY-DEMO-001")\n', "")
    )

    result = project.validate()

    assert result.findings == []
    assert result.markers["FALSIFY-DEMO-001"] == [
        "falsifiers/test_module.py::TestB::test_b",
        "falsifiers/test_module.py::test_a",
    ]


def test_a_tests_entry_spelled_with_dot_slash_matches_its_marker(project: Project) -> None:
    project.contract(edit(GOOD, (TESTS_1, "      - ./falsifiers/test_demo.py::test_demo\n")))

    assert project.validate().findings == []


def test_validating_one_file_does_not_flag_the_other_contracts_markers(project: Project) -> None:
    project.contract(GOOD)
    other = without_tests(GOOD.replace("demo-v1", "other-v1").replace("FALSIFY-DEMO", "FALSIFY-OTHER"))
    project.contract(other, stem="other-v1")

    assert project.validate("contracts/other-v1.yaml").findings == []
    assert project.validate("contracts/demo-v1.yaml").findings == []


def test_a_test_file_rewritten_in_place_is_read_again(project: Project) -> None:
    project.contract(GOOD)
    assert project.validate().findings == []
    # Same mtime is likely (coarse clocks); the size differs, so the cached scan is not reused.
    path: Path = project.root / "falsifiers/test_demo.py"
    stat = path.stat()
    path.write_text(TEST_DEMO.replace('@pytest.mark.falsifier("FALSIFY-DEMO-002")\n    ', ""))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert [f.rule for f in project.validate().findings] == ["PV405"]
