"""What the pytest plugin knows in one session, shared by its parts (binding, controls, recorder).

Kept free of the contract machinery: the plugin imports this on every pytest run, also in a
project without contracts, and must stay cheap there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shiptwo.harness.contract.model import Contract, Control, Falsifier

REQUIRE_ENV = "SHIPTWO_REQUIRE"
FIXTURE = "falsifier_control"  # the fixture that tells a bound test which control to plant
# user_properties key prefix; user_properties travel from xdist workers to the controller.
PROP = "shiptwo"


@dataclass
class State:
    root: Path
    contracts_dir: Path
    evidence_dir: Path
    require: frozenset[str]
    record: bool
    record_host: bool = False  # hostname, user and absolute paths in the run record (opt in)
    configured: bool = False  # the project has [tool.shiptwo] or shiptwo contracts: report and check
    falsifiers: dict[str, Falsifier] = field(default_factory=dict)
    contract_problems: list[str] = field(default_factory=list)
    started: str = ""  # set when the session starts
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeid -> test entry
    run_id: str = ""  # set by the recorder, on the controller
    record_path: Path | None = None
    record_error: str | None = None
    git: dict[str, Any] | None = None
    contracts: list[Contract] = field(default_factory=list)
    contracts_cached: bool = False  # validated by an earlier session, nothing they rest on changed since
    covers: dict[str, dict[str, str]] = field(default_factory=dict)  # falsifier -> file -> sha256 at start
    # Controller bookkeeping: the report phases seen per node id (a test that never reached its
    # teardown never finished), and each control run's (falsifier, control, real run's node id).
    phases: dict[str, set[str]] = field(default_factory=dict)
    control_of: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    interrupted_workers: set[str] = field(default_factory=set)


STATE = pytest.StashKey[State]()
CONTROL: pytest.StashKey[Control] = pytest.StashKey()  # the control planted on this item's run


class MeasurementError(Exception):
    """A test recorded a measurement its falsifiers do not declare, or a non-number."""


def falsifier_ids(item: pytest.Item) -> list[str]:
    """The falsifier ids the markers of `item` claim, in order, each once."""
    ids: list[str] = []
    for mark in item.iter_markers("falsifier"):
        if len(mark.args) != 1 or not isinstance(mark.args[0], str) or mark.kwargs:
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.falsifier('FALSIFY-<AREA>-<NNN>') with one id"
            )
        if mark.args[0] not in ids:
            ids.append(mark.args[0])
    return ids


def prop(report: pytest.TestReport | pytest.CollectReport | pytest.Item, name: str) -> Any:
    """The value of this plugin's user property `name` (the first), or None."""
    return next((v for k, v in getattr(report, "user_properties", ()) if k == f"{PROP}.{name}"), None)
