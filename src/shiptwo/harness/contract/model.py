"""Parsed contracts as frozen records. Built only from data the schema has accepted."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Range:
    """A closed interval; a missing bound is unbounded on that side."""

    min: float | None = None
    max: float | None = None

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def __str__(self) -> str:
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "+inf" if self.max is None else f"{self.max:g}"
        return f"[{lo}, {hi}]"

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> Range | None:
        if data is None:
            return None
        return cls(data.get("min"), data.get("max"))


@dataclass(frozen=True)
class Measurement:
    name: str
    unit: str
    passing: Range | None  # `pass` in YAML
    plausible: Range | None


@dataclass(frozen=True)
class Obligation:
    id: str
    statement: str


@dataclass(frozen=True, eq=False)
class Control:
    """A defect planted on purpose that the falsifier must be seen catching.

    The `falsifier_control` fixture hands one to a bound test on each control run. It compares
    equal to its id, so a test can write `if falsifier_control == "qkv-bias-random": ...`.
    """

    id: str
    defect: str
    falsifier: str = ""  # the id of the falsifier that declares it

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.id == other
        if isinstance(other, Control):
            return (self.id, self.defect, self.falsifier) == (other.id, other.defect, other.falsifier)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)  # equal to its id, so it must hash like it

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class Falsifier:
    id: str
    contract_id: str
    obligations: tuple[str, ...]
    prediction: str
    if_fails: str
    tests: tuple[str, ...] | None  # None: the YAML has no `tests:` key
    requires: tuple[str, ...]  # contract-level gates first, then the falsifier's own
    measurements: dict[str, Measurement] = field(hash=False)
    status: str | None = None
    evidence: dict[str, Any] | None = field(default=None, hash=False)
    raw: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)
    controls: tuple[Control, ...] = ()  # defects it must be seen catching
    covers: tuple[str, ...] = ()  # paths or globs, relative to the project root, of the code it exercises

    @property
    def fingerprint(self) -> str:
        """sha256 of what the falsifier claims: id, prediction, measurements, requires.

        Evidence recorded against another fingerprint is STALE: the claim was edited since.
        `controls` and `covers` stay out of it: a record is judged against them directly (a
        control it did not run is not-run, a covered file that changed names itself), so
        declaring them does not throw away evidence that still speaks.
        """
        claim = {
            "id": self.id,
            "prediction": " ".join(self.prediction.split()),
            "measurements": self.raw.get("measurements") or {},
            "requires": sorted(self.requires),
        }
        blob = json.dumps(claim, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Contract:
    id: str
    path: Path
    version: str
    title: str
    requires: tuple[str, ...]
    obligations: tuple[Obligation, ...]
    falsifiers: tuple[Falsifier, ...]
    status: str | None

    @classmethod
    def from_data(cls, data: dict[str, Any], path: Path) -> Contract:
        contract_gates = tuple(data.get("requires") or ())
        falsifiers = []
        for f in data["falsifiers"]:
            measurements = {
                name: Measurement(
                    name,
                    spec["unit"],
                    Range.from_data(spec.get("pass")),
                    Range.from_data(spec.get("plausible")),
                )
                for name, spec in (f.get("measurements") or {}).items()
            }
            own = tuple(g for g in f.get("requires") or () if g not in contract_gates)
            falsifiers.append(
                Falsifier(
                    id=f["id"],
                    contract_id=data["id"],
                    obligations=tuple(f["obligations"]),
                    prediction=f["prediction"],
                    if_fails=f.get("if_fails", ""),
                    tests=tuple(f["tests"]) if "tests" in f else None,
                    requires=contract_gates + own,
                    measurements=measurements,
                    status=f.get("status"),
                    evidence=f.get("evidence"),
                    raw=f,
                    controls=tuple(Control(c["id"], c["defect"], f["id"]) for c in f.get("controls") or ()),
                    covers=tuple(f.get("covers") or ()),
                )
            )
        return cls(
            id=data["id"],
            path=path,
            version=str(data["version"]),  # an unquoted 1.0 is reported (PV202) and kept as text
            title=data["title"],
            requires=contract_gates,
            obligations=tuple(Obligation(o["id"], o["statement"]) for o in data["obligations"]),
            falsifiers=tuple(falsifiers),
            status=data.get("status"),
        )
