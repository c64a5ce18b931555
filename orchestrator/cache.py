"""Facts that are slow to work out and change only with their inputs, kept in `cache_dir`.

Each entry is keyed by a digest of what it depends on (a binary's path, size and mtime; a module's
files), so a stale entry is never read: a changed input is a different key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.fsutil import atomic_write


def cached(directory: Path, name: str, key: str, compute: Callable[[], Any], keep: Callable[[Any], bool] = bool) -> Any:
    """compute() once per key; its JSON result is reused by later processes. Never fails for the cache's sake."""
    path = directory / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    try:
        entry = json.loads(path.read_text())
        if isinstance(entry, dict) and entry.get("key") == key:
            return entry["value"]
    except (OSError, ValueError, KeyError):
        pass
    value = compute()
    if keep(value):
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(path, json.dumps({"key": key, "value": value}), fsync=False)  # lost in a crash: computed again
        except OSError:
            pass  # a full or read-only cache directory costs the next process the same work, nothing more
    return value


def file_key(path: str) -> str | None:
    """Identity of an executable or file as it is now: real path, size, mtime. None when it is not there."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def contents_digest(contents: dict[str, bytes]) -> str:
    """One digest for a set of named files' contents (a module's .tf files)."""
    h = hashlib.sha256()
    for name in sorted(contents):
        h.update(name.encode() + b"\0" + contents[name] + b"\0")
    return h.hexdigest()
