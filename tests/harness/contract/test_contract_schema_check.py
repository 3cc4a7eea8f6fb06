"""The schema engine (jsonschema-rs) agrees with jsonschema, the reference implementation, as oracle.

On the shipped contracts and on contracts mutated at random: valid or not, and at which paths.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.harness.contract.schema import _validator, contract_schema, finite
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


def oracle_paths(doc: Any) -> set[tuple[Any, ...]]:
    """Where jsonschema (Python, the oracle) finds errors in `doc`."""
    schema = contract_schema()
    oracle = jsonschema.validators.validator_for(schema)(schema)
    return {tuple(e.absolute_path) for e in oracle.iter_errors(doc)}


def engine_paths(doc: Any) -> set[tuple[Any, ...]]:
    return {tuple(e.instance_path) for e in _validator().iter_errors(finite(doc))}


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


def test_the_shipped_schema_is_valid_json_schema() -> None:
    schema = contract_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)


@pytest.mark.parametrize("index", range(len(BASES)))
def test_shipped_contracts_are_valid_for_both(index: int) -> None:
    assert oracle_paths(BASES[index]) == set()
    assert _validator().is_valid(BASES[index])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_engine_agrees_with_the_oracle(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(BASES))
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate(
            doc,
            data.draw(st.sampled_from(locations(doc))),
            data.draw(st.sampled_from(["delete", "replace", "add"])),
            data.draw(st.sampled_from(VALUES)),
            data.draw(st.sampled_from(KEYS)),
        )
    expected = oracle_paths(doc)
    assert _validator().is_valid(finite(doc)) == (not expected)
    assert engine_paths(doc) == expected
