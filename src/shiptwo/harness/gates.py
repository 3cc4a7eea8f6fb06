"""Host gates: the hardware and artifacts a falsifier needs, checked in one place.

A gate answers "is this host able to run the test?" with a reason either way, so a skip says
exactly what was looked for. The gates themselves live in the rooms that own them and are found
through entry points (see `_Registry`), so the harness imports no subject.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path


@dataclass(frozen=True)
class GateResult:
    """Whether a gate is open on this host, why, and the artifacts it found (path -> sha256 later)."""

    name: str
    ok: bool
    reason: str
    artifacts: tuple[Path, ...] = field(default=())


ENTRY_POINT_GROUP = "shiptwo.gates"


class _Registry(Mapping[str, Callable[[], GateResult]]):
    """Gate name -> check, from the `shiptwo.gates` entry points, loaded on first use.

    The harness names no gate itself: each subject room registers the gates it owns (tokenize:
    qwen-tokenizer; models: qwen-artifacts, qwen-gguf; qwen2: cuda, multi-gpu), and any installed
    package can add its own the same way. A check is imported only when it is first called.
    """

    def __init__(self) -> None:
        self._points: dict[str, EntryPoint] | None = None

    def _load(self) -> dict[str, EntryPoint]:
        if self._points is None:
            self._points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._points

    def __getitem__(self, name: str) -> Callable[[], GateResult]:
        check: Callable[[], GateResult] = self._load()[name].load()
        return check

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._load()))

    def __len__(self) -> int:
        return len(self._load())


GATES: Mapping[str, Callable[[], GateResult]] = _Registry()

_cache: dict[str, GateResult] = {}


def check_gate(name: str) -> GateResult:
    """Check one gate by name (cached per process); an unknown name raises KeyError."""
    if name not in _cache:
        _cache[name] = GATES[name]()
    return _cache[name]


def clear_cache() -> None:
    """Forget cached gate results (tests change the environment between checks)."""
    _cache.clear()
