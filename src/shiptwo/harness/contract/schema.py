"""The shipped JSON Schema, checked by one engine (jsonschema-rs), its errors as findings.

jsonschema-rs validates a contract in microseconds and reports every error with its instance
path, its schema path and a typed kind (`required` with the missing property, `enum` with the
options, ...), which is all a finding needs: the message, the fix and the YAML line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from shiptwo.harness.contract.findings import Finding, did_you_mean, finding
from shiptwo.harness.contract.yamlsafe import ParsedYaml


@cache
def contract_schema() -> dict[str, Any]:
    """The JSON Schema shipped inside the package."""
    text = resources.files("shiptwo.harness.contract").joinpath("contract.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(contract_schema())


@cache
def evidence_validator() -> Any:
    """The same engine on the `evidence:` block alone: write-back checks what it is about to write."""
    schema = contract_schema()
    return jsonschema_rs.validator_for({**schema["$defs"]["evidence"], "$defs": schema["$defs"]})


def _schema_at(path: Iterable[Any]) -> Any:
    """The part of the shipped schema at `path` (a schema path: `$defs`/`properties`/...)."""
    node: Any = contract_schema()
    for part in path:
        node = node[part] if isinstance(node, dict) else node[int(part)]
    return node


def finite(data: Any) -> Any:
    """`data` with NaN and infinities as 0.5 (the same object when it holds none).

    YAML reads `.nan` and `.inf` as floats, which JSON Schema calls numbers; jsonschema-rs sees
    them through JSON, which has no such values, as null. The range checks report a non-finite
    bound in their own words, so the schema only needs to know a number sits there.
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else 0.5  # a number, not an integer, as NaN is
    if isinstance(data, dict):
        items = {k: finite(v) for k, v in data.items()}
        return data if all(items[k] is data[k] for k in data) else items
    if isinstance(data, list):
        values = [finite(v) for v in data]
        return data if all(a is b for a, b in zip(values, data, strict=True)) else values
    return data


def schema_findings(rel: str, parsed: ParsedYaml) -> Iterable[Finding]:
    validator = _validator()
    data = finite(parsed.data) if parsed.nonfinite else parsed.data
    if validator.is_valid(data):
        return
    for error in validator.iter_errors(data):
        path = tuple(error.instance_path)
        keyword = error.kind.name
        where = _where(path)
        if path == ("version",) and keyword == "type":
            continue  # version-not-semver reports it, with the fix (quote it)
        if keyword == "propertyNames":
            # The error sits on the mapping; point at the offending name instead.
            inner = error.kind.error
            name = inner.instance
            line, col = parsed.position((*path, name))
            message = f"{_where((*path, name))}: bad name: {describe_error(inner)}"
            yield finding("bad-value", rel, line, col, message)
        elif keyword == "additionalProperties":
            allowed = _schema_at(tuple(error.schema_path)[:-1]).get("properties", {})
            for key in sorted(error.kind.unexpected):
                hint = did_you_mean(key, allowed)
                if not hint and any(ch in key for ch in " ()"):
                    # No contract key has a space: text ran on past an unquoted ',' or ': '.
                    hint = (
                        "; a ',' or ': ' inside unquoted text ends the text there and starts this key: "
                        "quote the text before it"
                    )
                line, col = parsed.position((*path, key))
                yield finding(
                    "unknown-key",
                    rel,
                    line,
                    col,
                    f"{_where((*path, key))}: unknown key{hint or '; remove it'}",
                )
        elif keyword == "required":
            line, col = parsed.position(path)
            missing = error.kind.property
            fix = _fix((*path, missing), "required") or _fix(path, "required")
            yield finding(
                "missing-key",
                rel,
                line,
                col,
                f"{where or 'contract'}: {missing!r} is a required property{fix}",
            )
        else:
            line, col = parsed.position(path)
            fix = _fix(path, keyword)
            yield finding("bad-value", rel, line, col, f"{where or 'contract'}: {describe_error(error)}{fix}")


# How to fix a bad value, by where it sits (list indices as "*") and, where it matters, by the
# schema keyword it broke. Keys added after v1's first release say what to write instead.
_CONTROL_EXAMPLE = "{id: qkv-bias-random, defect: q/k/v biases left at their random init}"
_FIXES: dict[tuple[tuple[str, ...], str | None], str] = {
    (("falsifiers", "*", "controls"), None): f"write a list of controls, each {_CONTROL_EXAMPLE}",
    (("falsifiers", "*", "controls", "*"), None): f"write each control as {_CONTROL_EXAMPLE}",
    (("falsifiers", "*", "controls", "*", "id"), None): (
        "name it with a short slug: lower-case letters and digits in words joined by single hyphens, "
        "at most 64 characters, e.g. qkv-bias-random"
    ),
    (
        ("falsifiers", "*", "controls", "*", "defect"),
        None,
    ): "say in one sentence which defect the test plants on this control run",
    (
        ("falsifiers", "*", "covers"),
        None,
    ): "write a list of paths or globs relative to the project root, e.g. [src/shiptwo/qwen2/model.py]",
    (("falsifiers", "*", "covers"), "uniqueItems"): "name each path or glob once",
    (
        ("falsifiers", "*", "covers", "*"),
        None,
    ): "give a path or glob relative to the project root, e.g. src/shiptwo/apr/*.py",
}


def _fix(path: tuple[Any, ...], validator: str) -> str:
    """ "; <how to fix it>" for a bad value at `path`, or "" where the message already says."""
    shape = tuple("*" if isinstance(part, int) else str(part) for part in path)
    fix = _FIXES.get((shape, validator)) or _FIXES.get((shape, None))
    return f"; {fix}" if fix else ""


def _where(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_error(error: Any) -> str:
    """The error in the words findings have always used, values shown as Python reprs."""
    kind, value = error.kind, error.instance
    keyword = kind.name
    if keyword == "enum":
        return f"{value!r} is not one of {', '.join(map(str, kind.options))}"
    if keyword == "type":
        types = list(kind.types)
        if isinstance(value, str) and "number" in types:
            return f"{value!r} is a string, not a number (YAML reads 1e-5 as text: write 1.0e-5)"
        return f"{value!r} is not of type {', '.join(map(repr, types))}"
    if keyword == "pattern":
        return f"{value!r} does not match {kind.pattern!r}"
    if keyword == "maxLength":
        return f"{value!r} is too long (at most {kind.limit} characters)"
    if keyword == "minLength":
        return f"{value!r} should be non-empty" if kind.limit == 1 else f"{value!r} is too short"
    if keyword == "uniqueItems":
        return f"{value!r} has non-unique elements"
    if keyword == "minItems":
        return f"{value!r} should have at least {kind.limit} item{'s' if kind.limit != 1 else ''}"
    if keyword == "const":
        return f"{kind.expected_value!r} was expected"
    return str(error.message)
