"""Run records: what one pytest session observed about the falsifiers, as JSON on disk.

One record per session, built by `run_record` and written by `write_run_record` (atomically,
through `shiptwo.fileio`) on the pytest plugin's controller. `pv validate` reads them all to
compute statuses. Every field is type-checked here, on the way in, so nothing downstream
(status, report, write-back) ever computes with, or writes into a contract, a value of the wrong
shape. The files a falsifier covers are in `covers.py`, the host and git facts in `host.py`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

from shiptwo.errors import EvidenceError
from shiptwo.fileio import atomic_write_bytes
from shiptwo.harness.covers import UNREADABLE, covers_digest
from shiptwo.harness.host import Redaction
from shiptwo.harness.safefile import RUN_RECORD_LIMIT, FileRefused, read_file

RUN_SCHEMA = "shiptwo.run/v1"
# 2: control runs, covered-file digests, a sequence number, the crashed and interrupted outcomes.
RUN_SCHEMA_VERSION = 2
OUTCOMES = ("passed", "failed", "error", "skipped", "crashed", "interrupted")
# What one control run showed: its defect caught (refuted), not caught (survived), the run broke
# some other way (error), or it never ran to a verdict (not-run: deselected, skipped, interrupted).
CONTROL_OUTCOMES = ("refuted", "survived", "error", "not-run")
# The parametrization ids of a test bound to a falsifier with controls: `test_x[real]` runs the
# subject as shipped, `test_x[control=<id>]` with that control's defect planted.
REAL_RUN_ID = "real"
CONTROL_RUN_PREFIX = "control="
# How far ahead of this machine's clock a record may have finished and still be believed.
CLOCK_SKEW = timedelta(minutes=10)

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """The one spelling of a time in records and contracts: UTC, microseconds, `Z`; sorts as it orders."""
    t = moment.astimezone(UTC)
    return f"{t.year:04d}-{t:%m-%dT%H:%M:%S}.{t.microsecond:06d}Z"


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time with a UTC offset (`Z` or `+00:00`), as an aware datetime; None if it is not one."""
    if not isinstance(text, str) or not 16 <= len(text) <= 40:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None  # a time without an offset could be any host's local time
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class ControlRun:
    """What one test's run with one control planted showed."""

    outcome: str  # refuted | survived | error | not-run
    detail: str | None = None  # why: the failed prediction, the error, the skip reason
    nodeid: str | None = None  # the control run's node id


@dataclass(frozen=True)
class TestResult:
    """One test's outcome in one run, as the status function needs it."""

    __test__ = False  # not a pytest test class, despite the name

    run_id: str
    finished_at: str  # UTC time of the run's end, in `format_time`'s spelling; orders runs
    commit: str | None
    host: str
    nodeid: str
    falsifiers: tuple[str, ...]
    outcome: str  # one of OUTCOMES
    measurements: dict[str, list[float | None]] = field(hash=False)  # None: NaN or infinity
    fingerprints: dict[str, str] = field(hash=False)
    skip_reason: str | None = None
    gate: str | None = None  # the host gate that skipped it, if any
    failure: str | None = None
    dirty: bool | None = None  # the work tree differed from `commit` when the run started
    controls: dict[str, dict[str, ControlRun]] = field(
        default_factory=dict, hash=False
    )  # falsifier -> control -> run
    covers: dict[str, dict[str, str]] = field(default_factory=dict, hash=False)  # falsifier -> file -> sha256
    sequence: int = 0  # the record's place in its evidence dir; breaks ties between equal times


def control_runs(controls: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, ControlRun]]:
    """A test entry's `controls` (falsifier -> control -> run) as ControlRuns."""
    return {
        fid: {
            cid: ControlRun(run["outcome"], run.get("detail"), run.get("nodeid")) for cid, run in runs.items()
        }
        for fid, runs in controls.items()
    }


def test_key(nodeid: str) -> str:
    """The test a node id stands for across runs: `test_x[real]` is the `test_x` of runs before controls."""
    for suffix in (f"[{REAL_RUN_ID}]", f"-{REAL_RUN_ID}]"):
        if nodeid.endswith(suffix):
            return nodeid[: -len(suffix)] + ("]" if suffix[0] == "-" else "")
    return nodeid


@dataclass(frozen=True)
class RunRecord:
    path: Path
    data: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    @property
    def finished(self) -> datetime:
        moment = parse_time(self.data["finished_at"])
        assert moment is not None  # read_run_record refuses a record without one
        return moment

    @property
    def sequence(self) -> int:
        return int(self.data.get("sequence", 0))

    def results(self) -> Iterator[TestResult]:
        git = self.data.get("git") or {}
        host = (self.data.get("host") or {}).get("hostname", "?")
        covers = {fid: dict(c["files"]) for fid, c in (self.data.get("covers") or {}).items()}
        finished_at = format_time(self.finished)
        for t in self.data.get("tests", []):
            falsifiers = tuple(t.get("falsifiers", ()))
            yield TestResult(
                run_id=self.run_id,
                finished_at=finished_at,
                commit=git.get("commit"),
                host=host,
                nodeid=t["nodeid"],
                falsifiers=falsifiers,
                outcome=t["outcome"],
                measurements={k: list(v) for k, v in (t.get("measurements") or {}).items()},
                fingerprints=dict(t.get("fingerprints") or {}),
                skip_reason=t.get("skip_reason"),
                gate=t.get("gate"),
                failure=t.get("failure"),
                dirty=git.get("dirty"),
                controls=control_runs(t.get("controls") or {}),
                covers={fid: covers[fid] for fid in falsifiers if fid in covers},
                sequence=self.sequence,
            )


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(3).hex()}"


# Writing and reading records.


def run_record(
    *,
    run_id: str,
    sequence: int,
    started_at: str,
    finished_at: str,
    exit_status: int,
    git: dict[str, Any],
    host: dict[str, Any],
    gates: dict[str, dict[str, Any]],
    artifacts: dict[str, str],
    covers: dict[str, dict[str, str]],
    tests: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """One session's run record, in the shape `read_run_record` checks (docs/contract-format.md).

    `covers` is falsifier -> file -> sha256, kept with the digest of those files; `tests` are the
    test entries (`nodeid`, `falsifiers`, `outcome`, ...), listed by node id.
    """
    return {
        "schema": RUN_SCHEMA,
        "schema_version": RUN_SCHEMA_VERSION,
        "run_id": run_id,
        "sequence": sequence,
        "started_at": started_at,
        "finished_at": finished_at,
        "exit_status": int(exit_status),
        "git": git,
        "host": host,
        "gates": gates,
        "artifacts": artifacts,
        "covers": {
            fid: {"digest": covers_digest(files), "files": files} for fid, files in sorted(covers.items())
        },
        "tests": sorted(tests, key=lambda t: t["nodeid"]),
    }


def redact_record(record: dict[str, Any], redaction: Redaction) -> dict[str, Any]:
    """A copy of `record` that names no host, user or absolute path, marked `redacted: true`.

    Only the free texts and paths a host writes into a record are rewritten: host facts, gate
    reasons, artifact paths, and each test's skip reason, failure and control details. Node
    ids and covered files are relative to the project already, and statuses match on them.
    """
    out = dict(record)
    host = {k: v for k, v in (record.get("host") or {}).items() if k != "hostname"}
    out["host"] = {k: redaction.text(v) if isinstance(v, str) else v for k, v in host.items()}
    out["gates"] = {
        name: {k: redaction.text(v) if k == "reason" and isinstance(v, str) else v for k, v in gate.items()}
        for name, gate in (record.get("gates") or {}).items()
    }
    out["artifacts"] = {
        redaction.text(path): digest for path, digest in (record.get("artifacts") or {}).items()
    }
    tests = []
    for entry in record.get("tests", []):
        entry = dict(entry)
        for key in ("skip_reason", "failure"):
            if isinstance(entry.get(key), str):
                entry[key] = redaction.text(entry[key])
        if "controls" in entry:
            entry["controls"] = {
                fid: {
                    cid: {
                        k: redaction.text(v) if k == "detail" and isinstance(v, str) else v
                        for k, v in run.items()
                    }
                    for cid, run in runs.items()
                }
                for fid, runs in entry["controls"].items()
            }
        tests.append(entry)
    out["tests"] = tests
    out["redacted"] = True
    return out


def write_run_record(directory: Path, record: dict[str, Any]) -> Path:
    """Write one run record atomically as `<run_id>.json` under `directory`."""
    path = directory / f"{record['run_id']}.json"
    try:
        atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise EvidenceError(
            f"{directory}: cannot write run record {path.name}: {exc.strerror or exc}"
        ) from exc
    return path


def next_sequence(directory: Path) -> int:
    """One more than the highest `sequence` among the records in `directory` (1 for the first).

    A counter taken from the records themselves, not from any clock: a session that ran after
    another one's record was in place always gets a higher number.
    """
    highest = 0
    within = [directory.resolve()]
    for path in directory.glob("*.json") if directory.is_dir() else ():
        try:
            data = json.loads(read_file(path, within=within, limit=RUN_RECORD_LIMIT).decode("utf-8"))
        except (FileRefused, ValueError, RecursionError):
            continue  # reading the evidence reports it
        seq = data.get("sequence") if isinstance(data, dict) else None
        if _is_int(seq) and highest < seq < _MAX_SEQUENCE:
            highest = seq
    return highest + 1


class RecordFromTheFuture(EvidenceError):
    """A run record finished later than now (beyond CLOCK_SKEW): its host's clock is wrong."""


def read_run_record(path: Path, *, within: Sequence[Path] | None = None) -> RunRecord:
    """Read and check one run record; a corrupt, truncated, mistyped or newer one raises EvidenceError.

    Read through `safefile`: a FIFO, device or dangling link, a symlink leading outside `within`
    (resolved directories; None: anywhere) or a file over RUN_RECORD_LIMIT is refused unread.
    """
    try:
        data = json.loads(read_file(path, within=within, limit=RUN_RECORD_LIMIT).decode("utf-8"))
    except FileRefused as exc:
        raise EvidenceError(f"{path}: run record refused: {exc.reason}; remove it") from None
    # ValueError: besides JSONDecodeError, bytes that are not UTF-8 (json.loads of bytes would let
    # encoded surrogates through) and an integer of more digits than Python converts (4,300).
    except (ValueError, RecursionError) as exc:
        raise EvidenceError(
            f"{path}: run record is not valid JSON (truncated or corrupt?): {exc}; delete it or re-run pytest"
        ) from exc
    if not isinstance(data, dict):
        raise EvidenceError(f"{path}: run record is not a JSON object")
    version = data.get("schema_version")
    if data.get("schema") != RUN_SCHEMA or not _is_int(version):
        raise EvidenceError(
            f"{path}: schema: {data.get('schema')!r} is not a shiptwo run record ({RUN_SCHEMA})"
        )
    if version > RUN_SCHEMA_VERSION:
        raise EvidenceError(
            f"{path}: schema_version {version} is newer than this shiptwo reads ({RUN_SCHEMA_VERSION}); "
            "upgrade shiptwo"
        )
    if version < 1:
        raise EvidenceError(
            f"{path}: schema_version {version} is not a version of {RUN_SCHEMA}; delete the record or re-run "
            "pytest"
        )
    for key in ("run_id", "finished_at", "tests"):
        if key not in data:
            raise EvidenceError(f"{path}: run record lacks {key!r}")
    _check_shape(path, data)
    return RunRecord(path, data)


_MAX_SEQUENCE = 2**53  # beyond what every JSON reader keeps exactly
_FIX = "delete the record or re-run pytest"


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    """Refuse a record whose fields have the wrong types before anything computes with them."""

    def bad(where: str, want: str, value: Any) -> EvidenceError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return EvidenceError(f"{path}: {where} is not {want} (found {shown}); {_FIX}")

    def optional_str(where: str, value: Any) -> None:
        if value is not None and not isinstance(value, str):
            raise bad(where, "a string", value)

    if not isinstance(data["run_id"], str) or not _RUN_ID.match(data["run_id"]):
        raise bad("run_id", "a run id (letters, digits and ._:+-, at most 128)", data["run_id"])
    if not isinstance(data["finished_at"], str):
        raise bad("finished_at", "a UTC time string", data["finished_at"])
    if parse_time(data["finished_at"]) is None:
        raise bad("finished_at", "a UTC time string (ISO 8601 with Z or +00:00)", data["finished_at"])
    if "started_at" in data and parse_time(data["started_at"]) is None:
        raise bad("started_at", "a UTC time string (ISO 8601 with Z or +00:00)", data["started_at"])
    if "sequence" in data and not (_is_int(data["sequence"]) and 0 <= data["sequence"] < _MAX_SEQUENCE):
        raise bad("sequence", "a non-negative integer", data["sequence"])
    if "redacted" in data and not isinstance(data["redacted"], bool):
        raise bad("redacted", "true or false", data["redacted"])
    if "exit_status" in data and not _is_int(data["exit_status"]):
        raise bad("exit_status", "an integer", data["exit_status"])
    for key in ("git", "host", "gates", "artifacts", "covers"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "an object", data[key])
    git = data.get("git") or {}
    commit = git.get("commit")
    if commit is not None and not (isinstance(commit, str) and _COMMIT.match(commit)):
        raise bad("git.commit", "a commit hash (7 to 64 lower-case hex digits) or null", commit)
    if git.get("dirty") is not None and not isinstance(git["dirty"], bool):
        raise bad("git.dirty", "true, false or null", git["dirty"])
    optional_str("host.hostname", (data.get("host") or {}).get("hostname"))
    for fid, cover in (data.get("covers") or {}).items():
        where = f"covers.{fid}"
        if not isinstance(cover, dict) or not isinstance(cover.get("files"), dict):
            raise bad(where, "an object with files", cover)
        for rel, digest in cover["files"].items():
            if not isinstance(digest, str) or not (_SHA256.match(digest) or digest == UNREADABLE):
                raise bad(f"{where}.files.{rel}", "a sha256 hex digest", digest)
        if cover.get("digest") != covers_digest(cover["files"]):
            raise bad(f"{where}.digest", "the digest of its files (edited by hand?)", cover.get("digest"))
    if not isinstance(data["tests"], list):
        raise bad("tests", "a list", data["tests"])
    for i, t in enumerate(data["tests"]):
        if (
            not isinstance(t, dict)
            or not isinstance(t.get("nodeid"), str)
            or t.get("outcome") not in OUTCOMES
        ):
            raise EvidenceError(
                f"{path}: tests[{i}] is not a test result (nodeid and outcome {'|'.join(OUTCOMES)}); {_FIX}"
            )
        falsifiers = t.get("falsifiers", [])
        if not isinstance(falsifiers, list) or not all(isinstance(f, str) for f in falsifiers):
            raise bad(f"tests[{i}].falsifiers", "a list of falsifier ids", falsifiers)
        measurements = t.get("measurements", {})
        if not isinstance(measurements, dict):
            raise bad(f"tests[{i}].measurements", "an object", measurements)
        for name, values in measurements.items():
            if not (isinstance(values, list) and all(v is None or _is_number(v) for v in values)):
                raise bad(f"tests[{i}].measurements.{name}", "a list of numbers", values)
        fingerprints = t.get("fingerprints", {})
        if not isinstance(fingerprints, dict) or not all(isinstance(v, str) for v in fingerprints.values()):
            raise bad(f"tests[{i}].fingerprints", "an object of sha256 strings", fingerprints)
        for key in ("skip_reason", "gate", "failure"):
            optional_str(f"tests[{i}].{key}", t.get(key))
        if "duration" in t and not _is_number(t["duration"]):
            raise bad(f"tests[{i}].duration", "a number of seconds", t["duration"])
        controls = t.get("controls", {})
        if not isinstance(controls, dict):
            raise bad(f"tests[{i}].controls", "an object", controls)
        for fid, runs in controls.items():
            if not isinstance(runs, dict):
                raise bad(f"tests[{i}].controls.{fid}", "an object of control runs", runs)
            for cid, run in runs.items():
                where = f"tests[{i}].controls.{fid}.{cid}"
                if not isinstance(run, dict) or run.get("outcome") not in CONTROL_OUTCOMES:
                    raise bad(where, f"a control run (outcome {'|'.join(CONTROL_OUTCOMES)})", run)
                optional_str(f"{where}.detail", run.get("detail"))
                optional_str(f"{where}.nodeid", run.get("nodeid"))


def read_run_records(
    directory: Path, *, now: datetime | None = None
) -> tuple[list[RunRecord], list[EvidenceError]]:
    """Every run record under `directory`, oldest first, and the errors of those that could not be used.

    Oldest first by the parsed end time, then by `sequence` (which no clock sets), then run id.
    A record that finished after `now` (beyond CLOCK_SKEW) is refused as RecordFromTheFuture:
    ordered by its own word it would outrank every honest run made until its clock is reached.
    """
    records: list[RunRecord] = []
    errors: list[EvidenceError] = []
    if not directory.is_dir():
        return records, errors
    limit = (now or datetime.now(UTC)) + CLOCK_SKEW
    try:
        # Listed by hand: Path.glob passes over a directory it cannot list without a word.
        with os.scandir(directory) as entries:
            paths = sorted(Path(e.path) for e in entries if e.name.endswith(".json"))
    except OSError as exc:
        return records, [EvidenceError(f"{directory}: cannot list run records: {exc.strerror or exc}")]
    # A symlinked record may lead anywhere in the evidence directory, and nowhere else.
    within = [directory.resolve()]
    for path in paths:
        try:
            record = read_run_record(path, within=within)
        except EvidenceError as exc:
            errors.append(exc)
            continue
        if record.finished > limit:
            ahead = record.finished - (limit - CLOCK_SKEW)
            errors.append(
                RecordFromTheFuture(
                    f"{path}: finished_at {record.data['finished_at']!r} is {_span(ahead)} ahead of this "
                    "machine's clock; "
                    "a record from the future cannot be ordered, so it decides nothing: fix the clock of the "
                    "host that "
                    "wrote it and re-run pytest there, or delete the record"
                )
            )
            continue
        records.append(record)
    records.sort(key=lambda r: (r.finished, r.sequence, r.run_id))
    return records, errors


def read_evidence(
    directories: Iterable[Path], *, now: datetime | None = None
) -> tuple[list[RunRecord], list[EvidenceError]]:
    """Every run record under all of `directories`, oldest first, as one body of evidence.

    How CI joins a record from a GPU host (a downloaded artifact directory) to the committed
    ones. The same record found in two directories (a record committed and also downloaded)
    counts once; two different records under one run id are an error, and neither decides.
    """
    records: list[RunRecord] = []
    errors: list[EvidenceError] = []
    by_id: dict[str, RunRecord] = {}
    conflicting: set[str] = set()
    for directory in dict.fromkeys(directories):  # a directory given twice is read once
        found, failed = read_run_records(directory, now=now)
        errors += failed
        for record in found:
            seen = by_id.setdefault(record.run_id, record)
            if seen is record:
                continue
            if seen.data != record.data and record.run_id not in conflicting:
                conflicting.add(record.run_id)
                errors.append(
                    EvidenceError(
                        f"{record.path}: run_id {record.run_id!r} is also the run id of {seen.path}, which "
                        "holds a different record; neither decides anything: delete the one that is not "
                        "the run's own"
                    )
                )
    records = [r for r in by_id.values() if r.run_id not in conflicting]
    records.sort(key=lambda r: (r.finished, r.sequence, r.run_id))
    return records, errors


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"
