"""Live per-deployment progress: a redrawn table on a terminal, plain timestamped lines elsewhere (CI)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from orchestrator.redaction import Redactor


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 redactor: Redactor | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.redactor = redactor or Redactor()
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, str, float]] = {}
        self._start = time.monotonic()
        self._drawn = 0

    def __call__(self, dep_id: str, phase: str, detail: str) -> None:
        detail = self.redactor.redact(detail)
        with self._lock:
            started = self._rows.get(dep_id, ("", "", time.monotonic()))[2]
            if phase in ("queued",):
                started = time.monotonic()
            self._rows[dep_id] = (phase, detail, started)
            if self.live:
                self._redraw()
            else:
                elapsed = time.monotonic() - self._start
                suffix = f": {detail}" if detail else ""
                self.stream.write(f"[tfo {elapsed:7.1f}s] {dep_id} {phase}{suffix}\n")
                self.stream.flush()

    def _redraw(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}A")
        width = max((len(k) for k in self._rows), default=10)
        lines = []
        for dep_id, (phase, detail, started) in sorted(self._rows.items()):
            mark = "✔" if phase in ("succeeded", "no_changes", "rolled_back") else (
                "✘" if phase in ("failed", "rollback_failed", "cancelled") else "…")
            lines.append(f"\x1b[2K{mark} {dep_id:<{width}}  {phase:<16} {time.monotonic() - started:6.1f}s "
                         f"{detail[:60]}")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
