"""The compiled schema check agrees with jsonschema, the oracle, on contracts mutated at random."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.harness.contract.schema import _compile, _fast_check, _Uncompilable, _validator
from shiptwo.harness.contract.yamlsafe import parse_yaml

from .contract_project import GOOD

REPO = Path(__file__).resolve().parents[3]
BASES = [parse_yaml(GOOD.encode()).data] + [
    parse_yaml(p.read_bytes()).data for p in sorted((REPO / "contracts").glob("*.yaml"))
]
VALUES = [
    None,
    True,
    0,
    1,
    1.5,
    float("nan"),
    "",
    "x",
    "DRAFT",
    "FALSIFY-X-001",
    "ABC-001",
    "Bad Name",
    [],
    ["a"],
    ["a", "a"],
    [1],
    ["cuda", "cuda"],
    {},
    {"min": 1},
    {"max": "1e-5"},
    {"unit": "x"},
    {"k": 1},
    "VACUOUS",
    "qkv-bias-random",
    "x" * 65,
    [{"id": "a", "defect": "d"}],
    [{"id": "a"}],
    {"id": "a", "defect": "d"},
    {"declared": 1, "refuted": 1},
    {"declared": 1.5, "refuted": 1},
]
KEYS = [
    "extra",
    "unit",
    "min",
    "max",
    "id",
    "pass",
    "plausible",
    "Bad",
    "status",
    "tests",
    "requires",
    "evidence",
    "controls",
    "covers",
    "defect",
    "declared",
]


def valid_by_jsonschema(doc: Any) -> bool:
    return next(iter(_validator().iter_errors(doc)), None) is None


def locations(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            out += locations(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += locations(value, (*path, i))
    return out


def mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any, key: str) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if action == "delete":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = copy.deepcopy(value)
    elif isinstance(parent[path[-1]], dict):
        parent[path[-1]][key] = copy.deepcopy(value)
    return doc


def test_the_shipped_schema_compiles() -> None:
    assert _fast_check() is not None


@pytest.mark.parametrize("index", range(len(BASES)))
def test_valid_contracts_take_the_fast_path(index: int) -> None:
    check = _fast_check()
    assert check is not None
    assert valid_by_jsonschema(BASES[index])
    assert check(BASES[index])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_compiled_check_agrees_with_jsonschema(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(BASES))
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate(
            doc,
            data.draw(st.sampled_from(locations(doc))),
            data.draw(st.sampled_from(["delete", "replace", "add"])),
            data.draw(st.sampled_from(VALUES)),
            data.draw(st.sampled_from(KEYS)),
        )
    check = _fast_check()
    assert check is not None

    assert check(doc) == valid_by_jsonschema(doc)


def test_an_unknown_keyword_falls_back_to_jsonschema() -> None:
    with pytest.raises(_Uncompilable):
        _compile({"type": "object", "patternProperties": {"^x": {}}}, {}, {})
    with pytest.raises(_Uncompilable):
        _compile({"enum": [1, True]}, {}, {})
