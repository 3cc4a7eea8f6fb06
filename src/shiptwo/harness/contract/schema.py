"""The shipped JSON Schema, a compiled fast check of it, and its errors as findings.

jsonschema reports every error with its path, which is what a finding needs, but it costs
about half of validation. Valid files are the common case, so a tree of small predicates
compiled from the same schema answers "valid?" first; only a "no" pays for jsonschema's
messages. A keyword the compiler does not know makes it fall back to jsonschema for everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import cache, partial
from importlib import resources
from typing import Any

import jsonschema

from shiptwo.harness.contract.findings import Finding, did_you_mean, finding
from shiptwo.harness.contract.yamlsafe import ParsedYaml


@cache
def contract_schema() -> dict[str, Any]:
    """The JSON Schema shipped inside the package."""
    text = resources.files("shiptwo.harness.contract").joinpath("contract.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = contract_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# A compiled validity check for the contract schema: a tree of small predicates that answers
# "valid?" several times faster than jsonschema. Only a True answer is trusted (a contract
# that passes it is valid); anything else goes to jsonschema, which finds the errors to report.
_Check = Callable[[Any], bool]
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}
# Keywords that constrain nothing.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description"})


class _Uncompilable(Exception):
    pass


def _all(checks: tuple[_Check, ...], v: Any) -> bool:
    return all(check(v) for check in checks)


def _has_type(types: tuple[type, ...], v: Any) -> bool:
    # JSON Schema's numbers are not booleans, although Python's bool is an int.
    return isinstance(v, types) and (not isinstance(v, bool) or bool in types)


def _one_of_strings(allowed: frozenset[str], v: Any) -> bool:
    return isinstance(v, str) and v in allowed


def _matches(search: Callable[[str], Any], v: Any) -> bool:
    return not isinstance(v, str) or search(v) is not None


def _min_length(n: int, v: Any) -> bool:
    return not isinstance(v, str) or len(v) >= n


def _max_length(n: int, v: Any) -> bool:
    return not isinstance(v, str) or len(v) <= n


def _min_items(n: int, v: Any) -> bool:
    return not isinstance(v, list) or len(v) >= n


def _unique_strings(v: Any) -> bool:
    # Only lists of strings are judged here; anything else is "maybe", so jsonschema decides.
    return not isinstance(v, list) or (all(isinstance(x, str) for x in v) and len(set(v)) == len(v))


def _items(item: _Check, v: Any) -> bool:
    return not isinstance(v, list) or all(item(x) for x in v)


def _required(names: tuple[str, ...], v: Any) -> bool:
    return not isinstance(v, dict) or all(n in v for n in names)


def _properties(props: dict[str, _Check], v: Any) -> bool:
    return not isinstance(v, dict) or all(props[k](x) for k, x in v.items() if k in props)


def _no_others(known: frozenset[str], v: Any) -> bool:
    return not isinstance(v, dict) or known.issuperset(v)


def _others(known: frozenset[str], extra: _Check, v: Any) -> bool:
    return not isinstance(v, dict) or all(extra(x) for k, x in v.items() if k not in known)


def _names(name_ok: _Check, v: Any) -> bool:
    return not isinstance(v, dict) or all(name_ok(k) for k in v)


def _ref(compiled: dict[str, _Check], name: str, v: Any) -> bool:
    return compiled[name](v)


def _compile(schema: Any, defs: dict[str, Any], compiled: dict[str, _Check]) -> _Check:
    """A predicate true only for instances `schema` accepts.

    Raises _Uncompilable on a keyword it does not know.
    """
    if not isinstance(schema, dict):
        raise _Uncompilable(repr(schema))
    checks: list[_Check] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "$ref":
            if not (isinstance(value, str) and value.startswith("#/$defs/") and value[8:] in defs):
                raise _Uncompilable(value)
            name = value[8:]
            if name not in compiled:
                compiled[name] = partial(_has_type, ())  # a placeholder while a recursive definition compiles
                compiled[name] = _compile(defs[name], defs, compiled)
            checks.append(partial(_ref, compiled, name))
        elif keyword == "type":
            names = [value] if isinstance(value, str) else value
            checks.append(partial(_has_type, tuple(t for n in names for t in _TYPES[n])))
        elif keyword in ("const", "enum"):
            members = [value] if keyword == "const" else value
            if not all(isinstance(m, str) for m in members):
                raise _Uncompilable(keyword)  # JSON equality of numbers and booleans is subtler
            checks.append(partial(_one_of_strings, frozenset(members)))
        elif keyword == "pattern":
            checks.append(partial(_matches, re.compile(value).search))
        elif keyword == "minLength":
            checks.append(partial(_min_length, value))
        elif keyword == "maxLength":
            checks.append(partial(_max_length, value))
        elif keyword == "minItems":
            checks.append(partial(_min_items, value))
        elif keyword == "uniqueItems":
            if value:
                checks.append(_unique_strings)
        elif keyword == "items":
            checks.append(partial(_items, _compile(value, defs, compiled)))
        elif keyword == "required":
            checks.append(partial(_required, tuple(value)))
        elif keyword == "properties":
            checks.append(
                partial(_properties, {k: _compile(sub, defs, compiled) for k, sub in value.items()})
            )
        elif keyword == "additionalProperties":
            known = frozenset(schema.get("properties", {}))
            if value is False:
                checks.append(partial(_no_others, known))
            elif value is not True:
                checks.append(partial(_others, known, _compile(value, defs, compiled)))
        elif keyword == "propertyNames":
            checks.append(partial(_names, _compile(value, defs, compiled)))
        else:
            raise _Uncompilable(keyword)
    return checks[0] if len(checks) == 1 else partial(_all, tuple(checks))


@cache
def _fast_check() -> _Check | None:
    """The compiled check of the shipped schema, or None if it uses a keyword `_compile` does not know."""
    schema = contract_schema()
    try:
        return _compile(schema, schema.get("$defs", {}), {})
    except (_Uncompilable, KeyError, TypeError, re.error):
        return None


def schema_findings(rel: str, parsed: ParsedYaml) -> Iterable[Finding]:
    fast = _fast_check()
    if fast is not None and fast(parsed.data):
        return
    validator = _validator()
    for error in validator.iter_errors(parsed.data):
        path = tuple(error.absolute_path)
        where = _where(path)
        if path == ("version",) and error.validator == "type":
            continue  # version-not-semver reports it, with the fix (quote it)
        if "propertyNames" in error.schema_path and isinstance(error.instance, str):
            # The error sits on the mapping; point at the offending name instead.
            line, col = parsed.position((*path, error.instance))
            yield finding(
                "bad-value", rel, line, col, f"{_where((*path, error.instance))}: bad name: {_short(error)}"
            )
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(allowed)):
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
        elif error.validator == "required":
            line, col = parsed.position(path)
            missing = next(
                (
                    name
                    for name in error.validator_value
                    if isinstance(error.instance, dict) and name not in error.instance
                ),
                "",
            )
            fix = _fix((*path, missing), "required") or _fix(path, "required")
            yield finding("missing-key", rel, line, col, f"{where or 'contract'}: {error.message}{fix}")
        else:
            line, col = parsed.position(path)
            fix = _fix(path, str(error.validator))
            yield finding("bad-value", rel, line, col, f"{where or 'contract'}: {_short(error)}{fix}")


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


def _short(error: jsonschema.ValidationError) -> str:
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "type" and isinstance(error.instance, str) and error.validator_value == "number":
        return f"{error.instance!r} is a string, not a number (YAML reads 1e-5 as text: write 1.0e-5)"
    return str(error.message)
