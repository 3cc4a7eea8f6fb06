"""Facts about the machine and the work tree a run happened on, as a run record keeps them.

Any room that records a run (a training run directory, say) takes its host facts from here and
adds its own, so a hostname or a device list is spelled the same everywhere.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


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
    """Hostname, platform and Python; torch's version and CUDA devices if the process imported torch.

    `cuda_devices` is None where CUDA is installed but broken: that must not cost the record.
    """
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
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
