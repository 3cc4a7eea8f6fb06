"""A finding is one problem at one place; a verdict folds many findings into an exit code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shiptwo.harness.contract.rules import RULES, Severity


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    column: int
    rule: str  # the stable code, e.g. PV101
    name: str  # the rule's slug, e.g. unknown-key
    severity: Severity
    message: str

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity.value,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


def finding(rule_name: str, path: str, line: int, column: int, message: str) -> Finding:
    """Build a finding for the rule named `rule_name` (its slug); code and severity come from the catalog."""
    rule = RULES[rule_name]
    return Finding(path, line, column, rule.code, rule.name, rule.severity, message)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the closest choice, or ""."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
