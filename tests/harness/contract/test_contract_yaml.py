"""The YAML text itself (PV001-PV007): bad input becomes a finding with a line, never a hang or a crash."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.harness.contract.yamlsafe import MAX_DEPTH, MAX_NODES, parse_yaml

from .contract_project import GOOD, Project, edit, line_of, only

CONTRACT = "contracts/demo-v1.yaml"

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def merge_bomb(levels: int = 8) -> str:
    """Merge keys (<<) of merges: each level repeats the one below nine times."""
    lines = ["m0: &m0 {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7, k8: 8}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        pytest.param(
            "schema: shiptwo.contract/v1\nid: [unclosed\ntitle: x\n",
            3,
            6,
            "did not find expected ',' or ']'",
            id="unclosed-flow",
        ),
        pytest.param(
            "schema: shiptwo.contract/v1\nid: demo-v1\n\tversion: 1.0.0\n",
            3,
            1,
            "tab character that violates indentation",
            id="tab-indent",
        ),
        pytest.param(
            "schema: shiptwo.contract/v1\n---\nid: demo-v1\n",
            2,
            1,
            "expected a single document",
            id="two-documents",
        ),
        pytest.param(
            "schema: shiptwo.contract/v1\nid: 'open\n",
            3,
            1,
            "found unexpected end of stream",
            id="unclosed-quote",
        ),
        pytest.param(
            "schema: shiptwo.contract/v1\nid: !!python/object:os.system x\n",
            2,
            5,
            "python/object",
            id="python-tag",
        ),
        pytest.param(
            "schema: shiptwo.contract/v1\nid: !!int xyz\n", 2, 5, "'xyz' cannot be read", id="bad-int"
        ),
        pytest.param(
            "schema: shiptwo.contract/v1\nid: demo\x07v1\n",
            2,
            9,
            "control characters are not allowed: character U+0007",
            id="control-char",
        ),
    ],
)
def test_pv001_yaml_that_does_not_parse(
    project: Project, text: str, line: int, column: int, words: str
) -> None:
    project.contract(text)

    findings = project.validate().findings

    assert [f.rule for f in findings] == ["PV001"]
    f = findings[0]
    assert (f.path, f.line, f.column, f.severity.value, f.name) == (
        CONTRACT,
        line,
        column,
        "error",
        "yaml-syntax",
    )
    assert words in f.message
    assert "\n" not in f.message


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# nothing here yet\n"], ids=["empty", "blank-lines", "comment-only"]
)
def test_pv002_file_with_no_document(project: Project, text: str) -> None:
    project.contract(text)

    f = only(project.validate().findings, "PV002")

    assert (f.path, f.line, f.column, f.severity.value) == (CONTRACT, 1, 1, "error")
    assert "holds no YAML document" in f.message


def test_pv003_not_utf8_names_the_byte_and_its_place(project: Project) -> None:
    raw = GOOD.replace("title: Demo contract", "title: Caf\u00e9 contract").encode("latin-1")
    project.contract(raw)  # type: ignore[arg-type]

    f = only(project.validate().findings, "PV003")

    assert (f.line, f.column) == (4, 11)
    assert "not UTF-8: byte 0xe9" in f.message
    assert "save the file as UTF-8" in f.message


def test_pv003_utf16_file(project: Project) -> None:
    project.write("contracts/demo-v1.yaml", GOOD.encode("utf-16"))

    f = only(project.validate().findings, "PV003")

    assert (f.line, f.column) == (1, 1)
    assert "byte 0xff at offset 0" in f.message


def test_a_utf8_byte_order_mark_is_accepted(project: Project) -> None:
    project.write("contracts/demo-v1.yaml", b"\xef\xbb\xbf" + GOOD.encode())

    assert project.validate().findings == []


def test_pv004_every_duplicate_key_is_reported_at_the_repeat(project: Project) -> None:
    text = edit(
        GOOD,
        ("title: Demo contract\n", "title: Demo contract\ntitle: Demo again\n"),
        ("    if_fails: Nothing", "    prediction: Said twice.\n    if_fails: Nothing"),
    )
    project.contract(text)

    findings = project.validate().findings

    assert [f.rule for f in findings] == ["PV004", "PV004"]
    first, second = findings
    assert (first.line, first.column) == (line_of(text, "Demo again"), 1)
    assert "duplicate key 'title' (first at line 4)" in first.message
    assert "keep the last one" in first.message
    assert (second.line, second.column) == (line_of(text, "Said twice"), 5)
    assert "duplicate key 'prediction'" in second.message


def test_pv005_billion_laughs_is_refused_fast(project: Project) -> None:
    project.contract(BILLION_LAUGHS)

    start = time.perf_counter()
    f = only(project.validate().findings, "PV005")
    elapsed = time.perf_counter() - start

    assert elapsed < 5.0  # 9**9 values if expanded; the guard stops at MAX_NODES
    assert f.severity.value == "error"
    assert f"more than {MAX_NODES:,} values" in f.message


def test_pv005_merge_key_bomb_is_refused_fast() -> None:
    start = time.perf_counter()
    parsed = parse_yaml(merge_bomb().encode())
    elapsed = time.perf_counter() - start

    assert [p.kind for p in parsed.problems] == ["alias-bomb"]
    assert parsed.data is None
    assert elapsed < 5.0


@pytest.mark.parametrize(
    "text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n"], ids=["seq", "map", "merge"]
)
def test_pv005_recursive_alias(text: str) -> None:
    parsed = parse_yaml(text.encode())

    [problem] = parsed.problems
    assert (problem.kind, problem.line) == ("alias-bomb", 1)
    assert "contains it" in problem.message


def test_pv006_key_that_is_not_a_scalar(project: Project) -> None:
    text = edit(GOOD, ("requires: []\n", "requires: []\n? [a, b]\n: c\n"))
    project.contract(text)

    f = only(project.validate().findings, "PV006")

    assert (f.line, f.column) == (line_of(text, "? [a, b]"), 3)
    assert "mapping key must be a plain string" in f.message


def test_pv006_merge_key_with_a_scalar() -> None:
    [problem] = parse_yaml(b"a: {<<: 3, b: 1}\n").problems

    assert (problem.kind, problem.line, problem.column) == ("key-type", 1, 9)
    assert "merge key (<<) takes a mapping" in problem.message


def test_pv007_unreadable_file(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    path = project.contract(GOOD)
    real_open = os.open

    def refuse(file: Any, flags: int, *args: Any) -> int:  # as a non-root user on a 0o000 file
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", refuse)

    f = only(project.validate().findings, "PV007")

    assert (f.path, f.line, f.severity.value) == (CONTRACT, 1, "error")
    assert "cannot read: Permission denied" in f.message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000], ids=["just-over", "deep", "very-deep"])
def test_deep_nesting_is_a_finding_not_a_crash(depth: int) -> None:
    # libyaml's composer segfaults past some tens of thousands of levels; the guard runs first.
    parsed = parse_yaml(b"a: " + b"[" * depth + b"]" * depth + b"\n")

    [problem] = parsed.problems
    assert (problem.kind, problem.line) == ("syntax", 1)
    assert f"nest more than {MAX_DEPTH} levels" in problem.message


@pytest.mark.parametrize(
    "text",
    [
        b"a: '" + b"[" * 3_000 + b"'\n",  # brackets inside a quoted scalar
        b'a: "' + b"{" * 3_000 + b'\\""\n',  # inside a double-quoted one, past an escaped quote
        b"a: x # " + b"[" * 3_000 + b"\n",  # inside a comment
        b"a: x" + b"[" * 3_000 + b"\n",  # glued to a plain scalar: no collection opens
    ],
    ids=["single-quoted", "double-quoted", "comment", "plain"],
)
def test_brackets_that_open_nothing_are_not_nesting(text: bytes) -> None:
    parsed = parse_yaml(text)

    assert parsed.problems == ()
    assert isinstance(parsed.data["a"], str)


def test_deep_nesting_finding_names_the_line_and_column() -> None:
    parsed = parse_yaml(b"ok: 1\nb: " + b"[" * 5_000 + b"]" * 5_000 + b"\n")

    [problem] = parsed.problems
    assert (problem.line, problem.column) == (2, 4 + MAX_DEPTH)
    assert problem.message == f"values nest more than {MAX_DEPTH} levels deep"


def test_deep_block_nesting_is_a_finding() -> None:
    parsed = parse_yaml(b"- " * 50_000 + b"x\n")

    assert [p.kind for p in parsed.problems] == ["syntax"]


def test_merge_keys_merge_and_explicit_keys_win() -> None:
    parsed = parse_yaml(
        b"base: &b {unit: nats, pass: {max: 1}}\nm: {<<: *b, unit: bits}\nn: {<<: [{x: 1}, {x: 2, y: 2}]}\n"
    )

    assert parsed.problems == ()
    assert parsed.data["m"] == {"unit": "bits", "pass": {"max": 1}}
    assert parsed.data["n"] == {"x": 1, "y": 2}  # the first mapping of a merge list wins
    assert parsed.position(("m", "unit")) == (2, 13)


def test_positions_point_at_keys_and_items() -> None:
    parsed = parse_yaml(b"a:\n  b: [x, y]\n  c: 2021-01-01\n")

    assert parsed.position(("a", "b")) == (2, 3)
    assert parsed.position(("a", "b", 1)) == (2, 10)
    assert parsed.position(("a", "b", 7)) == (2, 3)  # nearest located ancestor
    assert parsed.data["a"]["c"] == "2021-01-01"  # dates stay text


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_like)
def test_values_match_pyyaml_safe_load(data: object) -> None:
    text = yaml.safe_dump({"v": data})

    parsed = parse_yaml(text.encode())

    assert parsed.problems == ()
    assert parsed.data == yaml.safe_load(text)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200) | st.text(alphabet="ab:-[]{}&*!<>?|'\" \n\t#%@`,.", max_size=80).map(str.encode)
)
def test_parse_yaml_never_raises(raw: bytes) -> None:
    parsed = parse_yaml(raw)

    for problem in parsed.problems:
        assert problem.line >= 1 and problem.column >= 1
        assert "\n" not in problem.message


def test_keys_read_as_written() -> None:
    # `on` is a YAML 1.1 boolean and 1.0 a float; as keys they are names.
    parsed = parse_yaml(b"on: 1\n1.0: 2\n~: 3\n")

    assert parsed.data == {"on": 1, "1.0": 2, "~": 3}


# What makes reading contracts cheap, guarded without timing anything (issue 13).

PLAIN_SCALARS = [
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "nul",
    "y",
    "Y",
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "False",
    "tru",
    "0",
    "-0",
    "+1",
    "1_000",
    "0x1F",
    "0o17",
    "017",
    "0b101",
    "190:20:30",
    "-1.5e3",
    "1.5",
    ".5",
    ".inf",
    "-.Inf",
    "+.INF",
    ".nan",
    ".NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "<<",
    "=",
    "-",
    "+",
    ".",
    "!",
    "&a",
    "*a",
    "a",
    "zeta",
    "1.0.0",
    "12:30",
    "0.5 nats",
    "é",
    "  ",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PLAIN_SCALARS) | st.text(max_size=12), st.booleans(), st.booleans())
def test_tags_resolve_as_pyyaml_resolves_them(value: str, plain: bool, quoted: bool) -> None:
    from shiptwo.harness.contract.yamlsafe import LOADER

    ours, theirs = LOADER(""), yaml.SafeLoader("")
    for kind, v in ((yaml.ScalarNode, value), (yaml.SequenceNode, None), (yaml.MappingNode, None)):
        assert ours.resolve(kind, v, (plain, quoted)) == theirs.resolve(kind, v, (plain, quoted))


def test_shipped_contracts_load_alike_through_our_loader_and_pyyamls() -> None:
    from shiptwo.harness.contract.yamlsafe import LOADER

    repo = Path(__file__).resolve().parents[3]
    texts = [p.read_text("utf-8") for p in sorted((repo / "contracts").rglob("*.yaml"))]
    assert len(texts) >= 7
    for text in texts:
        assert yaml.load(text, Loader=LOADER) == yaml.load(text, Loader=yaml.SafeLoader)


def test_validation_holds_the_collector_off_and_gives_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from shiptwo.harness.contract import validate

    seen: list[bool] = []
    real = validate.parse_yaml

    def spy(raw: bytes) -> Any:
        seen.append(gc.isenabled())
        return real(raw)

    monkeypatch.setattr(validate, "parse_yaml", spy)
    repo = Path(__file__).resolve().parents[3]
    assert gc.isenabled()
    validate.validate_paths([repo / "contracts"], root=repo)
    assert seen and not any(seen)  # off while the heap grows
    assert gc.isenabled()  # and on again
    gc.disable()
    try:
        validate.validate_paths([repo / "contracts"], root=repo)
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_a_long_line_costs_no_second_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    from shiptwo.harness.contract import yamlsafe

    calls: list[str] = []
    monkeypatch.setattr(yamlsafe.yaml, "parse", lambda *a, **k: calls.append("parse") or iter(()))
    prose = "x " * 3_000
    parsed = parse_yaml(f"a:\n  b:\n    - {prose}\n    - c: {prose}\n".encode())

    assert parsed.problems == () and parsed.data["a"]["b"][1]["c"] == prose.strip()
    assert calls == []
    # The control: a line that could open a thousand levels is measured by the event scan.
    parse_yaml(("- " * 600 + "x\n").encode())
    assert calls == ["parse"]


def _event_depth(text: str) -> int:
    depth = deepest = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            deepest = max(deepest, depth)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return deepest


nested = st.recursive(
    st.text(alphabet="ab -:", min_size=1, max_size=30),
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(st.text(alphabet="kq ", min_size=1, max_size=20), children, min_size=1, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(nested, st.integers(2, 9), st.sampled_from([None, False]), st.booleans())
def test_the_depth_bound_is_never_below_the_real_depth(
    data: object, indent: int, flow: bool | None, compact: bool
) -> None:
    from shiptwo.harness.contract import yamlsafe

    text = yaml.safe_dump(data, indent=indent, default_flow_style=flow, width=10_000)
    if compact:  # `- - x` and `- k: v`: collections opening on one line, after indicators
        text = text.replace("-\n" + " " * indent + "- ", "- - ")
    # The cheap bound (every column of the longest line) is forced off, so the finer one is tested.
    monkeypatch_limit = yamlsafe._COMPOSER_SAFE_DEPTH
    try:
        yamlsafe._COMPOSER_SAFE_DEPTH = -1
        bound = yamlsafe.depth_bound(text)
    finally:
        yamlsafe._COMPOSER_SAFE_DEPTH = monkeypatch_limit
    try:
        real = _event_depth(text)
    except yaml.YAMLError:
        return  # a compacting that YAML refuses: nothing to nest
    assert real <= bound


@pytest.mark.parametrize(
    "text",
    [
        "k:\n\ufeff  - - - - - a\n",  # libyaml skips a BOM at the start of any line
        "\ufeff- - - - - a",
        "x: 1\n---\n\ufeff- - - - - - a",
        "[a: [b: [c: [d: e]]]]",  # a flow sequence holding a single pair: two levels a bracket
        "[? a : [? b : [? c : d]]]",
    ],
    ids=["bom-line", "bom-start", "bom-document", "flow-pair", "flow-explicit-pair"],
)
def test_the_depth_bound_holds_for_boms_and_flow_pairs(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shiptwo.harness.contract import yamlsafe

    monkeypatch.setattr(yamlsafe, "_COMPOSER_SAFE_DEPTH", -1)  # the finer bound, not the cheap one
    assert _event_depth(text) <= yamlsafe.depth_bound(text)


def test_a_bom_cannot_hide_deep_block_nesting_from_the_guard() -> None:
    # The prefix rule stops at a BOM; libyaml does not. Found by review: this text crashed the
    # process (a C stack overflow) under PyYAML 6.0.3 once the guard skipped it.
    parsed = parse_yaml(b"k:\n\xef\xbb\xbf" + b"- " * 50_000 + b"a\n")

    assert [p.kind for p in parsed.problems] == ["syntax"]
    assert f"nest more than {MAX_DEPTH} levels" in parsed.problems[0].message
