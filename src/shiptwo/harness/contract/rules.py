"""The catalog of validation rules: one stable code per kind of finding.

Codes never change meaning once shipped; CI scripts filter on them. `shiptwo pv rules` prints
this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    summary: str


_RULES = (
    # The YAML text itself.
    Rule("PV001", "yaml-syntax", Severity.ERROR, "The file is not parseable YAML (one document)."),
    Rule("PV002", "yaml-empty", Severity.ERROR, "The file holds no YAML document."),
    Rule("PV003", "yaml-encoding", Severity.ERROR, "The file is not UTF-8."),
    Rule(
        "PV004",
        "yaml-duplicate-key",
        Severity.ERROR,
        "A mapping repeats a key; YAML would keep only the last.",
    ),
    Rule("PV005", "yaml-alias-bomb", Severity.ERROR, "Aliases expand beyond a sane size (billion laughs)."),
    Rule("PV006", "yaml-key-type", Severity.ERROR, "A mapping key is not a plain scalar."),
    Rule(
        "PV007",
        "file-unreadable",
        Severity.ERROR,
        "The file, or a directory holding contracts or tests, cannot be read at all.",
    ),
    Rule(
        "PV008",
        "file-not-regular",
        Severity.ERROR,
        "A device, FIFO, socket, or a dangling or looping symlink where a file is read: never opened.",
    ),
    Rule(
        "PV009",
        "file-outside-project",
        Severity.ERROR,
        "A symlink leads outside the project root (or the directory named): not followed.",
    ),
    Rule(
        "PV010",
        "file-too-large",
        Severity.ERROR,
        "The file is over the size limit for its kind (docs/contract-format.md, Limits): not read.",
    ),
    # The schema.
    Rule(
        "PV101",
        "unknown-key",
        Severity.ERROR,
        "A key the contract format does not define (with a did-you-mean).",
    ),
    Rule("PV102", "missing-key", Severity.ERROR, "A required key is absent."),
    Rule("PV103", "bad-value", Severity.ERROR, "A value has the wrong type, pattern or enum member."),
    # Identity and naming.
    Rule("PV201", "id-stem-mismatch", Severity.ERROR, "The contract `id` differs from the file stem."),
    Rule("PV202", "version-not-semver", Severity.ERROR, "`version` is not MAJOR.MINOR.PATCH semver."),
    Rule("PV203", "falsifier-id-format", Severity.ERROR, "A falsifier id is not FALSIFY-<AREA>-<NNN>."),
    Rule("PV204", "changelog-version", Severity.WARNING, "The newest changelog entry is not for `version`."),
    # Cross references.
    Rule("PV301", "duplicate-obligation-id", Severity.ERROR, "Two obligations of one contract share an id."),
    Rule(
        "PV302",
        "duplicate-falsifier-id",
        Severity.ERROR,
        "Two falsifiers share an id (checked across all contracts).",
    ),
    Rule(
        "PV303",
        "unknown-obligation",
        Severity.ERROR,
        "A falsifier names an obligation the contract does not declare.",
    ),
    Rule(
        "PV304",
        "uncovered-obligation",
        Severity.ERROR,
        "No falsifier covers an obligation: nothing could refute it.",
    ),
    Rule("PV305", "duplicate-contract-id", Severity.ERROR, "Two files declare the same contract id."),
    # Tests named in `tests:`.
    Rule("PV401", "test-file-missing", Severity.ERROR, "A `tests:` entry names a file that does not exist."),
    Rule(
        "PV402",
        "test-missing",
        Severity.ERROR,
        "A `tests:` entry names a class or function the file does not define.",
    ),
    Rule(
        "PV403", "test-file-unparseable", Severity.ERROR, "A test file named in `tests:` is not valid Python."
    ),
    Rule(
        "PV404",
        "test-ref-format",
        Severity.ERROR,
        "A `tests:` entry is not `path.py::name` or `path.py::Class::name`.",
    ),
    Rule(
        "PV405", "test-marker-mismatch", Severity.ERROR, "`tests:` and the tests' falsifier markers disagree."
    ),
    Rule(
        "PV406",
        "test-ref-outside-project",
        Severity.ERROR,
        "A `tests:` entry is absolute or climbs out of the project root with `..`: never read.",
    ),
    # Gates and measurements.
    Rule("PV501", "unknown-host-gate", Severity.ERROR, "A `requires:` entry names no known host gate."),
    Rule("PV502", "range-empty", Severity.ERROR, "A measurement range has neither `min` nor `max`."),
    Rule("PV503", "range-inverted", Severity.ERROR, "A measurement range has `min` greater than `max`."),
    Rule(
        "PV504",
        "plausible-outside-pass",
        Severity.WARNING,
        "The plausible range and the pass range do not overlap.",
    ),
    Rule(
        "PV505",
        "measurement-unjudged",
        Severity.ERROR,
        "A measurement declares neither `pass` nor `plausible`.",
    ),
    # Evidence.
    Rule(
        "PV601", "evidence-unreadable", Severity.ERROR, "A run record cannot be read or is of a newer schema."
    ),
    Rule(
        "PV602",
        "status-out-of-date",
        Severity.ERROR,
        "The status written in the YAML differs from the evidence (--check).",
    ),
    Rule(
        "PV603",
        "evidence-from-the-future",
        Severity.ERROR,
        "A run record finished later than now: it cannot be ordered, so it decides nothing.",
    ),
    Rule(
        "PV604",
        "evidence-absent",
        Severity.WARNING,
        "--check: the YAML's status names a run record that is not here and no record here mentions "
        "the falsifier, so it cannot be checked (a clone without the records; an error with --strict).",
    ),
    # Controls and covered code.
    Rule(
        "PV701",
        "no-controls",
        Severity.WARNING,
        "A falsifier declares no `controls`: it was never seen failing on its own defect (an error with "
        "--strict).",
    ),
    Rule("PV702", "duplicate-control-id", Severity.ERROR, "Two controls of one falsifier share an id."),
    Rule(
        "PV703",
        "covers-no-match",
        Severity.ERROR,
        "A `covers:` entry matches no file under the project root.",
    ),
    Rule(
        "PV704",
        "covers-outside-project",
        Severity.ERROR,
        "A `covers:` entry is absolute or climbs out of the project root with `..`.",
    ),
)

RULES: dict[str, Rule] = {rule.name: rule for rule in _RULES}
BY_CODE: dict[str, Rule] = {rule.code: rule for rule in _RULES}
