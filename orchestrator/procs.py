"""Is a process still working in a directory? Proof that a lost attempt's terraform is gone."""

from __future__ import annotations

import os
import time
from pathlib import Path


def processes_in(directory: Path) -> list[int]:
    """Pids on this host whose working directory is `directory` or below it (Linux /proc)."""
    target = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == target or cwd.startswith(target + "/"):
            found.append(int(entry.name))
    return found


def wait_until_idle(directory: Path, timeout_s: float, poll_s: float = 1.0) -> bool:
    """Wait for every process working in `directory` to exit; False if some are still there at the deadline."""
    deadline = time.monotonic() + timeout_s
    while processes_in(directory):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True
