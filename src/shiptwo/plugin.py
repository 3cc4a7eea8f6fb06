"""BOOTSTRAP plugin (to be replaced by the full one): marker, record_measurement, gate skips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shiptwo.gates import check_gate


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "falsifier(id): binds this test to a contract falsifier")
    falsifiers: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(config.rootpath) / "contracts").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or doc.get("schema") != "shiptwo.contract/v1":
            continue
        for f in doc.get("falsifiers") or []:
            f = dict(f)
            f["requires"] = list(doc.get("requires") or []) + list(f.get("requires") or [])
            falsifiers[f["id"]] = f
    config.stash[_KEY] = falsifiers


_KEY = pytest.StashKey[dict]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("falsifier"):
        fid = mark.args[0]
        table = item.config.stash[_KEY]
        if fid not in table:
            raise pytest.UsageError(f"{item.nodeid}: unknown falsifier {fid}")
        for gate in table[fid]["requires"]:
            result = check_gate(gate)
            if not result.ok:
                pytest.skip(f"host gate '{gate}' closed: {result.reason}")


@pytest.fixture
def record_measurement(request: pytest.FixtureRequest):
    table = request.config.stash[_KEY]
    ids = [m.args[0] for m in request.node.iter_markers("falsifier")]

    def record(name: str, value: float) -> None:
        for fid in ids:
            spec = (table[fid].get("measurements") or {}).get(name)
            if spec is None:
                raise pytest.UsageError(f"{fid}: measurement {name!r} is not declared")
            rng = spec.get("pass") or {}
            if ("min" in rng and value < rng["min"]) or ("max" in rng and value > rng["max"]):
                pytest.fail(f"{fid}: {name}={value} outside pass range {rng}")

    return record
