"""Parse untrusted YAML into plain data plus the source position of every value.

PyYAML's C composer builds the node graph; we construct Python values from it ourselves so
that duplicate keys, alias bombs and non-string keys become findings with a line number
instead of silent overwrites, hangs or tracebacks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

# libyaml is an order of magnitude faster; the pure-Python loader is the fallback (PyYAML defines
# CSafeLoader only when it was built with libyaml).
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Values that aliases may add by repeating what their anchors hold; past this it is an alias bomb.
# Only copies count, never the values the text spells out (CONTRACT_LIMIT bounds those): a large
# contract without an alias is not a bomb, however many values it has.
MAX_NODES = 100_000
# A contract nests about seven levels deep; past this the text is an attack or an accident.
MAX_DEPTH = 100
# libyaml's composer recurses in C and overflows the stack (a segfault, not an exception) at
# some tens of thousands of nested collections, so text that could nest deeper than this is
# measured with the (iterative) event parser before it is composed.
_COMPOSER_SAFE_DEPTH = 1_000
# The phrase PyYAML (6.0.4 and later) uses when it refuses deep nesting itself.
_LIBRARY_DEPTH_LIMIT = "maximum nesting depth"

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


_ScalarNode = yaml.ScalarNode
# A scalar in these tags is the text as written: dates stay text, since JSON and the schema know
# no date type.
_AS_TEXT = frozenset({_STR, _TIMESTAMP})
# PyYAML's implicit resolvers by the first character of a plain scalar ('' for the empty one),
# each followed by the wildcard resolvers, as `BaseResolver.resolve` tries them.
_WILDCARD = tuple(_BASE_LOADER.yaml_implicit_resolvers.get(None, ()))
_IMPLICIT = {
    first: (*resolvers, *_WILDCARD)
    for first, resolvers in _BASE_LOADER.yaml_implicit_resolvers.items()
    if first is not None
}


class _Loader(_BASE_LOADER):  # type: ignore[misc]
    """The safe loader with PyYAML's tag resolution done in one lookup.

    The composer asks `resolve` for the tag of every node: about 40% of composing a contract in
    `BaseResolver.resolve`, which rebuilds its candidate list per call, and the path resolvers
    it also walks are empty for the safe loader. The answers are the library's own (its
    resolvers, in its order; tested against it), only found faster.
    """

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is _ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], _WILDCARD):
                    if regexp.match(value):
                        return str(tag)
            return _STR
        return str(super().resolve(kind, value, implicit))

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass  # only path resolvers use the descent, and the safe loader has none

    def ascend_resolver(self) -> None:
        pass


# Path resolvers would make a tag depend on where a node sits, which `_Loader.resolve` ignores.
LOADER: Any = _Loader if not _BASE_LOADER.yaml_path_resolvers else _BASE_LOADER


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
    nonfinite: bool = False  # a .nan or .inf somewhere in `data` (JSON has no such values)

    def position(self, path: Path_) -> tuple[int, int]:
        """(line, column), 1-based, of the value at `path`, or of its nearest located ancestor."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))


class _Abort(Exception):
    """The text cannot be turned into data; carries the problem to report instead."""

    def __init__(self, kind: str, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.problem = YamlProblem(kind, message, *((mark.line + 1, mark.column + 1) if mark else (1, 1)))


class _Builder:
    def __init__(self) -> None:
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[YamlProblem] = []
        self.count = 0  # values inside collections built a second time or more: what aliases added
        self.built: set[int] = set()  # collections built at least once
        # Collections being built right now: an alias back to one of them is a cycle.
        self.active: set[int] = set()
        # One constructor per parse: SafeConstructor caches every node it constructs, forever.
        self.constructor = yaml.constructor.SafeConstructor()
        self.nonfinite = False

    def build(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise _Abort("syntax", f"values nest more than {MAX_DEPTH} levels deep", node.start_mark)
        mark = node.start_mark
        self.positions[path] = (mark.line + 1, mark.column + 1)
        if node.__class__ is _ScalarNode:
            return node.value if node.tag in _AS_TEXT else self._construct(node)
        if id(node) in self.active:
            raise _Abort(
                "alias-bomb", "an alias refers to a collection that contains it (infinite expansion)", mark
            )
        # The composer makes one node per value written; only an alias (or a merge) reaches a
        # collection again, and then every value in it is a copy. Scalars are not tracked: an
        # alias of one costs two characters of text, so the size limit bounds those copies.
        if id(node) in self.built:
            self.count += len(node.value)
            if self.count > MAX_NODES:
                raise _Abort(
                    "alias-bomb", f"aliases expand to more than {MAX_NODES:,} values (billion laughs?)", mark
                )
        else:
            self.built.add(id(node))
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, depth)
            return self._sequence(node, path, depth)
        finally:
            self.active.discard(id(node))

    def _sequence(self, node: yaml.SequenceNode, path: Path_, depth: int) -> list[Any]:
        out: list[Any] = []
        if depth + 1 > MAX_DEPTH:  # let `build` refuse the first item
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        positions = self.positions
        for i, child in enumerate(node.value):
            # Text scalars, most values of a contract, are taken here rather than by a call.
            if child.__class__ is _ScalarNode and child.tag in _AS_TEXT:
                mark = child.start_mark
                positions[(*path, i)] = (mark.line + 1, mark.column + 1)
                out.append(child.value)
            else:
                out.append(self.build(child, (*path, i), depth + 1))
        return out

    def _construct(self, node: yaml.Node) -> Any:
        try:
            value = self.constructor.construct_object(node)
            if isinstance(value, float) and not math.isfinite(value):
                self.nonfinite = True
            if isinstance(value, bytes):  # !!binary: JSON, the schema and the contract format have no bytes
                raise _Abort(
                    "syntax",
                    f"YAML value tagged {node.tag} cannot be read: a contract holds no binary data",
                    node.start_mark,
                )
            return value
        except yaml.MarkedYAMLError as exc:
            raise _Abort(
                "syntax", f"YAML value cannot be read: {exc.problem}", exc.problem_mark or node.start_mark
            ) from exc
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            raise _Abort(
                "syntax", f"YAML value {node.value!r} cannot be read: {exc}", node.start_mark
            ) from exc

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        # Merge keys (<<) are expanded here, not by PyYAML's flatten_mapping: that copies the
        # merged pairs eagerly, so nested merges of merges would blow up before any count ran.
        here = self.positions[path]
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            # The earlier source wins, as YAML says: build the later ones first, then overwrite.
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    self._problem(
                        "key-type", "a merge key (<<) takes a mapping or a list of mappings", source
                    )
                    continue
                # Built at `path` so merged keys are located where they take effect.
                merged.update(self.build(source, path, depth + 1))
        self.positions[path] = here
        out: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem("key-type", "a mapping key must be a plain string", key_node)
                continue
            # The text as written: contract keys are names, and `on:` or `1.0:` should read as such.
            key = key_node.value
            if key in seen:
                self._problem(
                    "duplicate-key",
                    f"duplicate key {key!r} (first at line {seen[key]}); YAML would silently keep the last "
                    "one",
                    key_node,
                )
            key_mark = key_node.start_mark
            seen[key] = key_mark.line + 1
            if value_node.__class__ is _ScalarNode and value_node.tag in _AS_TEXT and depth < MAX_DEPTH:
                out[key] = value_node.value  # as `build` would, without the call
            else:
                out[key] = self.build(value_node, (*path, key), depth + 1)
            # Point a key's findings at the key itself, which is where a reader looks.
            self.positions[(*path, key)] = (key_mark.line + 1, key_mark.column + 1)
        if merged:
            # Keys written in the mapping itself override merged ones.
            return {**{k: v for k, v in merged.items() if k not in out}, **out}
        return out

    def _problem(self, kind: str, message: str, node: yaml.Node) -> None:
        mark = node.start_mark
        self.problems.append(YamlProblem(kind, message, mark.line + 1, mark.column + 1))


# What may open a line before the first key or entry of a block collection: indentation,
# `- `, `? ` and `: ` indicators, and anchors and tags (`&a`, `!t`).
_BLOCK_PREFIX = re.compile(r"(?:[ \t]+|[-?:](?=[ \t]|$)|[&!][^ \t]*)*")
# The characters that matter to flow nesting: brackets, quotes, comments and line ends.
_FLOW_CHARS = re.compile(r"[\[\]{}'\"#\n]")
# Where a flow collection or a quoted scalar may begin: after these, or at the start of the text.
_TOKEN_START = frozenset(" \t\n,:-?")


def _too_deep_problem(line: int, column: int) -> YamlProblem:
    return YamlProblem("syntax", f"values nest more than {MAX_DEPTH} levels deep", line, column)


def _flow_too_deep(text: str) -> YamlProblem | None:
    """A problem if flow brackets nest deeper than MAX_DEPTH, found by our own scan of the text.

    Our own scan, not the YAML library's: libyaml's limits and messages change between releases
    (6.0.4 began refusing 1,000 flow levels with its own error), and the finding must be ours.
    Brackets inside quoted scalars and comments do not count; a bracket glued to a plain scalar
    (`a[i]`) does not open a collection.
    """
    depth = 0
    quote = ""
    comment = False
    opened = -2  # where the last collection opened: `[[` opens two, `x[[` none
    for match in _FLOW_CHARS.finditer(text):
        char, pos = match.group(), match.start()
        before = text[pos - 1] if pos else "\n"
        starts_token = before in _TOKEN_START or opened == pos - 1
        if char == "\n":
            comment = False
        elif comment:
            continue
        elif quote:
            if char == quote and not (quote == '"' and _escaped(text, pos)):
                quote = ""
        elif char == "#" and before in " \t\n":
            comment = True
        elif char in "'\"" and starts_token:
            quote = char
        elif char in "[{" and starts_token:
            opened = pos
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, pos) + 1
                return _too_deep_problem(line, pos - text.rfind("\n", 0, pos))
        elif char in "]}":
            depth = max(0, depth - 1)
    return None


def _escaped(text: str, pos: int) -> bool:
    """Whether the character at `pos` follows an odd number of backslashes."""
    run = 0
    while pos - run - 1 >= 0 and text[pos - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def depth_bound(text: str) -> int:
    """An upper bound on how deep the collections in `text` nest, from the text alone.

    Block collections nest at most two levels per column (a mapping and its indentless
    sequence). A flow mapping nests one level per brace, a flow sequence up to two per bracket
    (`[k: v]` is a sequence holding a single-pair mapping).
    """
    flow = 2 * text.count("[") + text.count("{")
    lines = text.splitlines()  # every YAML line break (\r, NEL, LS, PS too), and a few more
    bound = 2 * (max(map(len, lines), default=0) + 1) + flow
    if bound <= _COMPOSER_SAFE_DEPTH or "\ufeff" in text:
        # libyaml skips a byte order mark at the start of any line as if it were not there, which
        # the prefix rule below does not model: such text keeps the bound by line length.
        return bound
    # A long line (prose, a long command) ends that cheap test, but the columns where a block
    # collection can begin are fewer. It begins where its first key or entry does, which on any
    # line is the end of the run of indentation, `-`/`?`/`:` indicators and node properties
    # that opens the line: a collection cannot begin after a scalar on the same line.
    prefix = _BLOCK_PREFIX.match  # matches every line, if only in its first 0 characters
    return 2 * (max((prefix(line).end() for line in lines), default=0) + 1) + flow  # type: ignore[union-attr]


def _too_deep(text: str) -> YamlProblem | None:
    """A problem if `text` nests collections deeper than MAX_DEPTH; checked before composing."""
    if depth_bound(text) <= _COMPOSER_SAFE_DEPTH:
        return None  # every real contract: the event scan below costs a second parse
    flow_problem = _flow_too_deep(text)
    if flow_problem is not None:
        return flow_problem
    depth = 0
    try:
        for event in yaml.parse(text, Loader=LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    return _too_deep_problem(mark.line + 1, mark.column + 1)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        # The library's own depth limit may speak before our count reaches MAX_DEPTH (libyaml
        # scans ahead): the text nests too deep all the same, and the finding is ours.
        if _LIBRARY_DEPTH_LIMIT in str(exc.problem):
            mark = exc.problem_mark
            return _too_deep_problem(mark.line + 1 if mark else 1, mark.column + 1 if mark else 1)
        return None  # composing reports the syntax error with its position
    except yaml.YAMLError:
        return None
    return None


def parse_yaml(raw: bytes) -> ParsedYaml:
    """Parse YAML bytes; never raises for bad input, reports it in `problems` instead."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        message = f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}; save the file as UTF-8"
        return ParsedYaml(None, {}, (YamlProblem("encoding", message, line, column),))
    text = text.removeprefix("\ufeff")
    deep = _too_deep(text)
    if deep is not None:
        return ParsedYaml(None, {}, (deep,))
    try:
        node = yaml.compose(text, Loader=LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if _LIBRARY_DEPTH_LIMIT in str(exc.problem):
            return ParsedYaml(None, {}, (_too_deep_problem(line, col),))
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return ParsedYaml(None, {}, (YamlProblem("syntax", f"YAML does not parse: {reason}", line, col),))
    except yaml.reader.ReaderError as exc:
        # A character YAML forbids (control characters, NUL); `position` counts characters.
        pos = exc.position
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        message = f"YAML does not parse: {exc.reason}: character U+{char:04X}; remove it or quote it escaped"
        return ParsedYaml(None, {}, (YamlProblem("syntax", message, line, col),))
    except yaml.YAMLError as exc:
        return ParsedYaml(
            None, {}, (YamlProblem("syntax", f"YAML does not parse: {' '.join(str(exc).split())}", 1, 1),)
        )
    if node is None:
        return ParsedYaml(None, {}, (YamlProblem("empty", "the file holds no YAML document", 1, 1),))
    builder = _Builder()
    try:
        data = builder.build(node, ())
    except _Abort as exc:
        return ParsedYaml(None, {}, (exc.problem,))
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps the builder far from the limit
        return ParsedYaml(None, {}, (YamlProblem("syntax", "values nest too deeply to read", 1, 1),))
    return ParsedYaml(data, builder.positions, tuple(builder.problems), builder.nonfinite)
