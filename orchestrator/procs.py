"""This host and its processes: the host's name, is a process still working in a directory (proof that
a lost attempt's terraform is gone), and keeping tfo's own process unreadable to the code a plan runs."""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import sys
import time
from pathlib import Path

_PR_SET_DUMPABLE = 4


@functools.cache
def host_name() -> str:
    """This host's name, read once per process: what leases, checkpoints and Terraform's lock info call it.

    The one way tfo names the host, so that "was this taken on this host?" compares like with like.
    """
    return socket.gethostname()


def keep_private() -> bool:
    """Make this process non-dumpable: its /proc/PID/environ, mem and fds become root's.

    Terraform, its providers and `external` programs run as the same user as tfo, and a same-user
    process may read another's /proc/PID/environ, where tfo's secrets (GitHub token, webhook secret,
    broker password) are. Forked children (Celery's pool) inherit the flag; exec resets it, so
    terraform is readable as usual, and its environment holds none of them (terraform_env.py).
    False where the kernel does not offer it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


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
