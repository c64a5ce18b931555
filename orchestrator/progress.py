"""Live progress of a run: a compact view on a terminal (rich), one plain timestamped line per event elsewhere (CI).

The terminal view is the same few lines whatever the run's size: counts by status, a bar, the
deployments running now (longest first) and the ones that failed. It is redrawn at most a few times a
second, not once per event, so 400 deployments do not print megabytes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from orchestrator.models import Status
from orchestrator.redaction import Redactor

# A deployment's last event is its Status value; rolled back counts as bad: its apply failed.
FINISHED_OK = tuple(s.value for s in Status if s.ok)
FINISHED_BAD = tuple(s.value for s in Status if not s.ok)
REFRESH_S = 0.25


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 redactor: Redactor | None = None, max_rows: int = 10) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.redactor = redactor or Redactor()
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, str, float]] = {}
        self._start = time.monotonic()
        self._view: Any = None  # rich.live.Live, from the first event on a terminal
        self._drawn_at = 0.0

    def __call__(self, dep_id: str, phase: str, detail: str) -> None:
        detail = self.redactor.redact(detail)
        with self._lock:
            started = self._rows.get(dep_id, ("", "", time.monotonic()))[2]
            if phase in ("queued",):
                started = time.monotonic()
            self._rows[dep_id] = (phase, detail, started)
            if self.live:
                self._refresh(force=False)
            else:
                elapsed = time.monotonic() - self._start
                suffix = f": {detail}" if detail else ""
                self.stream.write(f"[tfo {elapsed:7.1f}s] {dep_id} {phase}{suffix}\n")
                self.stream.flush()

    def close(self) -> None:
        """The last frame (every deployment's final state counted), and the terminal given back."""
        with self._lock:
            if self._view is not None:
                self._refresh(force=True)
                self._view.stop()
                self._view = None

    def _refresh(self, force: bool) -> None:
        if self._view is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self._view = Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False,
                              redirect_stderr=False)
            self._view.start()
            force = True
        now = time.monotonic()
        if force or now - self._drawn_at >= REFRESH_S:
            self._view.update(self.render(), refresh=True)
            self._drawn_at = now

    def render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        rows = self._rows
        ok = sum(1 for phase, _, _ in rows.values() if phase in FINISHED_OK)
        bad = {d: r for d, r in rows.items() if r[0] in FINISHED_BAD}
        active = sorted(((d, r) for d, r in rows.items() if r[0] not in FINISHED_OK + FINISHED_BAD),
                        key=lambda item: item[1][2])  # the longest running first
        done = ok + len(bad)
        head = Text(f"{done}/{len(rows)} done: {ok} ok, {len(bad)} failed, {len(active)} running  "
                    f"{now - self._start:6.1f}s")
        bar = ProgressBar(total=max(len(rows), 1), completed=done, width=40)
        table = Table.grid(padding=(0, 2))
        for dep_id, (phase, detail, started) in active[: self.max_rows]:
            table.add_row("…", dep_id, phase, f"{now - started:6.1f}s", detail[:60])
        if len(active) > self.max_rows:
            table.add_row("", f"+{len(active) - self.max_rows} more running", "", "", "")
        for dep_id, (phase, detail, _) in list(bad.items())[: self.max_rows]:
            table.add_row("✘", dep_id, phase, "", detail[:60])
        if len(bad) > self.max_rows:
            table.add_row("", f"+{len(bad) - self.max_rows} more failed (see the report)", "", "", "")
        return Group(head, bar, table)
