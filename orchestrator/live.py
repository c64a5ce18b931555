"""A run as it happens, in the store, for anyone watching (the dashboard): which deployments it has, and where
each one is. Both executors write the same records, so a local run on a laptop, a webhook's run and a run on
twenty workers look alike.

  runs/{run_id}/card.json                  the run's public face, written when it is prepared: action, who,
                                           which commit, its deployments (ids and names, never variables)
  runs/{run_id}/progress/{slug}.json       one deployment's phases so far, with their times and hosts

Records hold ids, names, hosts, times and redacted one-line details only, so they are not encrypted. A
recorder writes a deployment's record when its phase changes, at most once per `interval` (a background
flush), so a 500-deployment run costs a few writes per deployment, not one per event.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator import keys
from orchestrator.models import Record, RunSpec, Status
from orchestrator.redaction import Redactor
from orchestrator.store.base import Store

log = logging.getLogger("tfo.live")

DETAIL_CHARS = 200
HEARTBEAT_S = 300.0  # a deployment still at it is written again this often, so a long apply is not "stuck"
FINAL = frozenset(s.value for s in Status)
# A deployment of the run's card without a record is queued: not written, so starting a 500-deployment run
# writes nothing per deployment.
UNRECORDED = ("queued",)
MAX_PHASES = 40  # a deployment has a dozen phases; a record never grows without bound


@dataclass(frozen=True)
class Mark(Record):
    """A deployment entered `phase` at `at` (epoch seconds), on `host`."""

    phase: str
    at: float
    host: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Progress(Record):
    """One deployment of one run: its phases so far, oldest first (the last is where it is)."""

    deployment: str
    phases: tuple[Mark, ...] = ()
    beat: float = 0.0  # the last time its process said it is still at it (a long apply prints nothing new)

    @property
    def last(self) -> Mark | None:
        return self.phases[-1] if self.phases else None

    @property
    def started(self) -> float:
        return self.phases[0].at if self.phases else 0.0

    @property
    def last_seen(self) -> float:
        return max(self.beat, self.last.at if self.last else 0.0)

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.phase in FINAL

    def time_in(self, phase: str) -> float:
        """How long it spent in `phase` (summed; the phase it is in now counts up to its last record)."""
        total = 0.0
        for here, after in zip(self.phases, self.phases[1:], strict=False):
            if here.phase == phase:
                total += max(0.0, after.at - here.at)
        return total


def card_of(run: RunSpec, executor: str, host: str) -> dict[str, Any]:
    """The run's public face: what a dashboard shows before anything is finished."""
    github = run.notify.get("github") if isinstance(run.notify.get("github"), dict) else {}
    return {
        "run_id": run.run_id, "action": run.options.action.value, "atomic": run.options.atomic,
        "from_plan": run.options.from_plan, "started_at": run.started_at, "actor": run.actor,
        "git_sha": run.git_sha, "executor": executor, "host": host,
        "repository": str((github or {}).get("repo", "")), "pull_request": (github or {}).get("pr"),
        "deployments": [{"id": s.id, "service": s.service, "account": s.account, "region": s.region,
                         "project": s.project, "depends_on": list(s.depends_on)} for s in run.deployments],
    }


def write_card(store: Store, run: RunSpec, executor: str, host: str) -> None:
    store.put_json(keys.run_card(run.run_id), card_of(run, executor, host))


def read_progress(store: Store, run_id: str, deployment_id: str) -> Progress | None:
    try:
        return Progress.from_dict(store.get_json(keys.progress(run_id, deployment_id)))
    except KeyError:
        return None
    except (TypeError, ValueError):  # written by a tfo that kept other fields: as good as none
        return None


@dataclass
class ProgressRecorder:
    """An event sink (deployment id, phase, detail) that keeps each deployment's record in the store.

    A deployment seen for the first time continues the record already in the store (a rollback in finalize
    continues what the deploy task wrote). Writes happen on a background thread every `interval` seconds,
    for the deployments that changed; `close()` writes what is left. A store that fails is logged and
    retried at the next flush: watching must never break a run.
    """

    store: Store
    run_id: str
    host: str
    interval: float = 1.0
    heartbeat_s: float = HEARTBEAT_S
    redactor: Redactor = field(default_factory=Redactor)
    clock: Callable[[], float] = time.time
    _records: dict[str, Progress] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flush_lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _closed: bool = False
    _thread: threading.Thread | None = None

    def __call__(self, deployment_id: str, phase: str, detail: str = "") -> None:
        if self._closed or phase in UNRECORDED:
            return
        first_line = detail.splitlines()[0] if detail else ""
        entry = Mark(phase=phase, at=self.clock(), host=self.host,
                      detail=self.redactor.redact(first_line)[:DETAIL_CHARS])
        with self._lock:
            known = deployment_id in self._records
        earlier = None if known else read_progress(self.store, self.run_id, deployment_id)  # outside the lock
        with self._lock:
            record = self._records.get(deployment_id) or earlier or Progress(deployment_id)
            if record.last is not None and (record.last.phase, record.last.detail) == (phase, entry.detail):
                return  # the same again (a redelivered event): nothing new to show
            phases = (*record.phases, entry)
            if len(phases) > MAX_PHASES:  # the first one stays: it says when the deployment started
                phases = (phases[0], *phases[-(MAX_PHASES - 1):])
            self._records[deployment_id] = replace(record, phases=phases)
            self._dirty.add(deployment_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tfo-progress", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._beat()
            self.flush()

    def _beat(self) -> None:
        now = self.clock()
        with self._lock:
            for deployment_id, record in self._records.items():
                if not record.finished and now - record.last_seen >= self.heartbeat_s:
                    self._records[deployment_id] = replace(record, beat=now)
                    self._dirty.add(deployment_id)

    def flush(self) -> None:
        with self._flush_lock:  # one writer: a record's writes never overtake each other
            with self._lock:
                todo = {d: self._records[d] for d in self._dirty}
                self._dirty.clear()
            def write(item: tuple[str, Progress]) -> str:
                deployment_id, record = item
                try:
                    self.store.put_json(keys.progress(self.run_id, deployment_id), record.to_dict())
                except Exception as e:  # the store blinked: again at the next flush
                    log.warning("progress of %s in run %s not recorded: %s", deployment_id, self.run_id, e)
                    return deployment_id
                return ""

            if len(todo) > 2:  # many at once (a wide run's first phases): in parallel, as S3 likes it
                with ThreadPoolExecutor(max_workers=8, thread_name_prefix="tfo-progress-write") as pool:
                    failed = [d for d in pool.map(write, todo.items()) if d]
            else:
                failed = [d for d in map(write, todo.items()) if d]
            with self._lock:
                self._dirty.update(failed)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()


def tee(*sinks: Callable[[str, str, str], None]) -> Callable[[str, str, str], None]:
    """One event sink that feeds several (the terminal, the store); one failing never stops the others."""
    def each(deployment_id: str, phase: str, detail: str) -> None:
        for sink in sinks:
            with contextlib.suppress(Exception):
                sink(deployment_id, phase, detail)
    return each
