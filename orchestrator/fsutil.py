"""Files on this host: written whole or not at all, and a lock file held for a block of code."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600, *, fsync: bool = True,
                 exclusive: bool = False) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part.

    The data goes to a temporary file beside `path` (same file system), gets `mode`, and is renamed
    over `path`. `fsync`: the data is on disk before the rename, so a crash cannot leave an empty
    file under the name. `exclusive`: `path` is created only if it does not exist yet (by a hard link,
    so it still appears whole); FileExistsError if another process got there first. The parent
    directory must exist. Temporary files start with ".tmp-" and are removed on failure.
    """
    body = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; a wider mode is asked for explicitly
        if exclusive:
            try:
                os.link(tmp, path)
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def flock(path: Path, mode: int = 0o600) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with `mode` if missing) for the block: one holder per host."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
