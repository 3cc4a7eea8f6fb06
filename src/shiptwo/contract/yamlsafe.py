"""Parse untrusted YAML into plain data plus the source position of every value.

PyYAML's C composer builds the node graph; we construct Python values from it ourselves so
that duplicate keys, alias bombs and non-string keys become findings with a line number
instead of silent overwrites, hangs or tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml is an order of magnitude faster; the pure-Python composer is the fallback.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

# A contract has a few hundred values; anything expanding past this is an alias bomb.
MAX_NODES = 100_000

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_constructor = yaml.constructor.SafeConstructor()


@dataclass(frozen=True)
class YamlProblem:
    """Something wrong with the YAML itself; `kind` names the rule it maps to."""

    kind: str  # syntax | empty | encoding | duplicate-key | alias-bomb | key-type
    message: str
    line: int
    column: int


@dataclass(frozen=True)
class ParsedYaml:
    """The data (None if unusable), where each value sits, and what was wrong with the text."""

    data: Any
    positions: dict[Path_, tuple[int, int]]
    problems: tuple[YamlProblem, ...]

    def position(self, path: Path_) -> tuple[int, int]:
        """(line, column), 1-based, of the value at `path`, or of its nearest located ancestor."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))


class _AliasBomb(Exception):
    pass


class _Builder:
    def __init__(self) -> None:
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[YamlProblem] = []
        self.count = 0

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _AliasBomb
        mark = node.start_mark
        self.positions[path] = (mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if node.tag == _STR:
            return node.value
        if node.tag == _TIMESTAMP:
            # Dates stay the text the author wrote; JSON and the schema know no date type.
            return node.value
        return _constructor.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        if node.tag != _MAP:
            _constructor.flatten_mapping(node)  # merge keys (<<) resolve like PyYAML does
        out: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem("key-type", "a mapping key must be a plain string", key_node)
                continue
            key = key_node.value if key_node.tag == _STR else str(_constructor.construct_object(key_node))
            if key in seen:
                self._problem(
                    "duplicate-key",
                    f"duplicate key {key!r} (first at line {seen[key]}); YAML would silently keep the last one",
                    key_node,
                )
            seen[key] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key))
            # Point a key's findings at the key itself, which is where a reader looks.
            self.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out

    def _problem(self, kind: str, message: str, node: yaml.Node) -> None:
        mark = node.start_mark
        self.problems.append(YamlProblem(kind, message, mark.line + 1, mark.column + 1))


def parse_yaml(raw: bytes) -> ParsedYaml:
    """Parse YAML bytes; never raises for bad input, reports it in `problems` instead."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return ParsedYaml(
            None, {}, (YamlProblem("encoding", f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}", line, 1),)
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return ParsedYaml(None, {}, (YamlProblem("syntax", f"YAML does not parse: {reason}", line, col),))
    except yaml.YAMLError as exc:
        return ParsedYaml(None, {}, (YamlProblem("syntax", f"YAML does not parse: {exc}", 1, 1),))
    if node is None:
        return ParsedYaml(None, {}, (YamlProblem("empty", "the file holds no YAML document", 1, 1),))
    builder = _Builder()
    try:
        data = builder.build(node, ())
    except _AliasBomb:
        return ParsedYaml(
            None,
            {},
            (YamlProblem("alias-bomb", f"aliases expand to more than {MAX_NODES:,} values (billion-laughs?)", 1, 1),),
        )
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        return ParsedYaml(None, {}, (YamlProblem("syntax", f"YAML value cannot be read: {exc}", 1, 1),))
    return ParsedYaml(data, builder.positions, tuple(builder.problems))
