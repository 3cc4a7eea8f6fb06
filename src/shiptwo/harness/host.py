"""Facts about the machine and the work tree a run happened on, as a run record keeps them.

Any room that records a run (a training run directory, say) takes its host facts from here and
adds its own, so a hostname or a device list is spelled the same everywhere.

Run records are committed and shared, so by default they say nothing about who ran them where:
`host_facts(identify=False)` leaves the hostname out and `Redaction` rewrites the project root,
the home directory, the user's pytest temp directory and the hostname out of the texts a record
carries (skip reasons, failures, gate reasons, artifact paths).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST_PLACEHOLDER = "<host>"
USER_PLACEHOLDER = "<user>"


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
    # --no-optional-locks: `git status` would otherwise refresh and rewrite .git/index, a write
    # (and a lock a concurrent git command can trip on) that a test run has no business making.
    status = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def host_facts(*, identify: bool = True) -> dict[str, Any]:
    """Hostname, platform and Python; torch's version and CUDA devices if the process imported torch.

    `identify=False` leaves the hostname out (what a shared run record keeps by default).
    `cuda_devices` is None where CUDA is installed but broken: that must not cost the record.
    """
    facts: dict[str, Any] = {"hostname": socket.gethostname()} if identify else {}
    facts["platform"] = platform.platform()
    facts["python"] = platform.python_version()
    torch = sys.modules.get("torch")  # only report torch if the run imported it anyway
    if torch is not None:
        facts["torch"] = getattr(torch, "__version__", "?")
        try:
            if torch.cuda.is_available():
                facts["cuda_devices"] = [
                    torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
                ]
            else:
                facts["cuda_devices"] = []
        except Exception:  # noqa: BLE001 - a broken CUDA install must not cost the run record
            facts["cuda_devices"] = None
    return facts


@dataclass(frozen=True)
class Redaction:
    """How one host's identity is spelled in text, and what each spelling becomes in a shared record.

    Paths under the project root become relative to it (the root itself `.`), paths under the
    home directory start with `~`, pytest's per-user temp directory `pytest-of-<name>` loses the
    name, and the hostname as a whole word becomes `<host>`. Longer spellings go first, so a
    project inside the home directory reads relative, not `~/...`.
    """

    rules: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...]

    @classmethod
    def of(
        cls, root: Path, *, home: Path | None = None, user: str | None = None, hostname: str | None = None
    ) -> Redaction:
        """The redaction of this process's host for a project at `root` (each fact overridable for tests)."""
        home = home if home is not None else _home()
        user = user if user is not None else _user()
        hostname = hostname if hostname is not None else socket.gethostname()
        dirs: dict[str, str] = {}  # spelling -> what it becomes when followed by a separator
        for spelling in _spellings(root):
            dirs[spelling] = ""
        for spelling in _spellings(home) if home is not None else ():
            dirs.setdefault(spelling, "~/")
        rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []
        for spelling in sorted(dirs, key=len, reverse=True):
            if spelling in ("", os.sep):
                continue  # a root or home of `/` would turn every absolute path into nonsense
            pattern = re.compile(re.escape(spelling) + r"(?:(/)|(?![\w.-]))")
            rules.append((pattern, _dir_replacement(dirs[spelling])))
        if user:
            rules.append(
                (
                    re.compile(r"pytest-of-" + re.escape(user) + r"(?![\w.-])"),
                    lambda m: f"pytest-of-{USER_PLACEHOLDER}",
                )
            )
        if hostname:
            rules.append(
                (re.compile(r"(?<![\w.-])" + re.escape(hostname) + r"(?![\w-])"), lambda m: HOST_PLACEHOLDER)
            )
        return cls(tuple(rules))

    def text(self, value: str) -> str:
        """`value` with every spelling of the host's identity rewritten."""
        for pattern, repl in self.rules:
            value = pattern.sub(repl, value)
        return value


def _dir_replacement(inside: str) -> Callable[[re.Match[str]], str]:
    """What a directory's spelling becomes: `inside` before a separator, `.` or `~` standing alone."""
    whole = "." if inside == "" else "~"
    return lambda m: inside if m.group(1) else whole


def _spellings(path: Path) -> list[str]:
    """`path` as given and resolved (a symlinked /tmp reads both ways), without a trailing separator."""
    out = {os.path.abspath(path).rstrip(os.sep)}
    with contextlib.suppress(OSError, RuntimeError):  # a symlink loop: the path as given must do
        out.add(str(path.resolve()).rstrip(os.sep))
    return sorted(out)


def _home() -> Path | None:
    try:
        return Path.home()
    except (KeyError, RuntimeError):  # no HOME and no passwd entry
        return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the passwd database
        return None
