"""Run records: what one pytest session observed about the falsifiers, as JSON on disk.

One record per session, written by the pytest plugin on the controller, atomically
(temp file + rename). `pv validate` reads them all to compute statuses.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shiptwo.errors import EvidenceError
from shiptwo.fileio import atomic_write_bytes

RUN_SCHEMA = "shiptwo.run/v1"
RUN_SCHEMA_VERSION = 1
OUTCOMES = ("passed", "failed", "error", "skipped")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class TestResult:
    """One test's outcome in one run, as the status function needs it."""

    __test__ = False  # not a pytest test class, despite the name

    run_id: str
    finished_at: str  # UTC ISO time of the run's end; orders runs
    commit: str | None
    host: str
    nodeid: str
    falsifiers: tuple[str, ...]
    outcome: str  # passed | failed | error | skipped
    measurements: dict[str, list[float | None]] = field(hash=False)  # None: NaN or infinity
    fingerprints: dict[str, str] = field(hash=False)
    skip_reason: str | None = None
    gate: str | None = None  # the host gate that skipped it, if any
    failure: str | None = None
    dirty: bool | None = None  # the work tree differed from `commit` when the run started


@dataclass(frozen=True)
class RunRecord:
    path: Path
    data: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    def results(self) -> Iterator[TestResult]:
        git = self.data.get("git") or {}
        host = (self.data.get("host") or {}).get("hostname", "?")
        for t in self.data.get("tests", []):
            yield TestResult(
                run_id=self.run_id,
                finished_at=self.data["finished_at"],
                commit=git.get("commit"),
                host=host,
                nodeid=t["nodeid"],
                falsifiers=tuple(t.get("falsifiers", ())),
                outcome=t["outcome"],
                measurements={k: list(v) for k, v in (t.get("measurements") or {}).items()},
                fingerprints=dict(t.get("fingerprints") or {}),
                skip_reason=t.get("skip_reason"),
                gate=t.get("gate"),
                failure=t.get("failure"),
                dirty=git.get("dirty"),
            )


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(3).hex()}"


def git_state(root: Path) -> dict[str, Any]:
    """The commit at `root` and whether the work tree differs from it (None/None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def host_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    import sys

    torch = sys.modules.get("torch")  # only report torch if the run imported it anyway
    if torch is not None:
        facts["torch"] = getattr(torch, "__version__", "?")
        try:
            if torch.cuda.is_available():
                facts["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            else:
                facts["cuda_devices"] = []
        except Exception:  # noqa: BLE001 - a broken CUDA install must not cost the run record
            facts["cuda_devices"] = None
    return facts


def write_run_record(directory: Path, record: dict[str, Any]) -> Path:
    """Write one run record atomically as `<run_id>.json` under `directory`."""
    path = directory / f"{record['run_id']}.json"
    try:
        atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise EvidenceError(f"{directory}: cannot write run record {path.name}: {exc.strerror or exc}") from exc
    return path


def read_run_record(path: Path) -> RunRecord:
    """Read and check one run record; a corrupt, truncated or newer one raises EvidenceError."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read run record: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"{path}: run record is not valid JSON (truncated or corrupt?): {exc}; delete it or re-run pytest") from exc
    if not isinstance(data, dict):
        raise EvidenceError(f"{path}: run record is not a JSON object")
    version = data.get("schema_version")
    if data.get("schema") != RUN_SCHEMA or not isinstance(version, int):
        raise EvidenceError(f"{path}: schema: {data.get('schema')!r} is not a shiptwo run record ({RUN_SCHEMA})")
    if version > RUN_SCHEMA_VERSION:
        raise EvidenceError(
            f"{path}: schema_version {version} is newer than this shiptwo reads ({RUN_SCHEMA_VERSION}); upgrade shiptwo"
        )
    for key in ("run_id", "finished_at", "tests"):
        if key not in data:
            raise EvidenceError(f"{path}: run record lacks {key!r}")
    _check_shape(path, data)
    return RunRecord(path, data)


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    """Refuse a record whose fields have the wrong types before anything computes with them."""

    def bad(where: str, want: str) -> EvidenceError:
        return EvidenceError(f"{path}: {where} is not {want}; delete the record or re-run pytest")

    if not isinstance(data["run_id"], str):
        raise bad("run_id", "a string")
    if not isinstance(data["finished_at"], str):
        raise bad("finished_at", "a UTC time string")
    for key in ("git", "host"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "an object")
    if not isinstance(data["tests"], list):
        raise bad("tests", "a list")
    for i, t in enumerate(data["tests"]):
        if not isinstance(t, dict) or not isinstance(t.get("nodeid"), str) or t.get("outcome") not in OUTCOMES:
            raise EvidenceError(f"{path}: tests[{i}] is not a test result (nodeid and outcome {'|'.join(OUTCOMES)})")
        if not isinstance(t.get("falsifiers", []), list) or not all(isinstance(f, str) for f in t.get("falsifiers", [])):
            raise bad(f"tests[{i}].falsifiers", "a list of falsifier ids")
        measurements = t.get("measurements", {})
        if not isinstance(measurements, dict):
            raise bad(f"tests[{i}].measurements", "an object")
        for name, values in measurements.items():
            numbers = isinstance(values, list) and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
            )
            if not numbers:
                raise bad(f"tests[{i}].measurements.{name}", "a list of numbers")
        if not isinstance(t.get("fingerprints", {}), dict):
            raise bad(f"tests[{i}].fingerprints", "an object")
        for key in ("skip_reason", "gate", "failure"):
            if t.get(key) is not None and not isinstance(t[key], str):
                raise bad(f"tests[{i}].{key}", "a string")


def read_run_records(directory: Path) -> tuple[list[RunRecord], list[EvidenceError]]:
    """Every run record under `directory`, oldest first, and the errors of those that could not be read."""
    records: list[RunRecord] = []
    errors: list[EvidenceError] = []
    if not directory.is_dir():
        return records, errors
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(read_run_record(path))
        except EvidenceError as exc:
            errors.append(exc)
    records.sort(key=lambda r: (r.data["finished_at"], r.run_id))
    return records, errors
