"""Every run in the store, as the dashboard shows them: one reader keeps an index in memory, current to within
a refresh, so pages and metrics answer from memory whatever the history's size.

A refresh lists `runs/` once after the newest run it knows (run ids sort by their start time; a margin
covers hosts whose clocks lag), reads the new runs' records, and for the runs still going reads their
summary (finished?) and the progress records that changed since the last look (by the listing's stamps).
The first refresh reads every summary, newest first, in parallel. Nothing here writes to the store.

What the index shows has been redacted by whoever wrote it; it is redacted again on the way in.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import keys, live
from orchestrator.models import RunStatus, Status
from orchestrator.redaction import Redactor
from orchestrator.store.base import Store

# Hosts' clocks disagree: a run id made on a host that lags may sort before the newest one seen.
CLOCK_MARGIN_S = 600
FULL_LISTING_S = 120.0  # and a listing of every run this often: a run whose id is older than that margin
UNREAD_RETRY_S = 30.0
STUCK_AFTER_S = 1800.0
ABANDONED_AFTER_S = 86400.0
ACTIVE = "running"
STUCK = "stuck"
ABANDONED = "abandoned"  # never finished, and idle for a day: no longer active
ERROR_CHARS = 300


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


def _started_of_id(run_id: str) -> float:
    try:
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class DeploymentView:
    id: str
    service: str = ""
    account: str = ""
    region: str = ""
    project: str = ""
    state_key: str = ""
    status: str = "queued"  # a Status value once finished; else the phase it is in
    phase: str = "queued"
    host: str = ""
    started: float = 0.0  # epoch seconds; 0 while queued
    phase_at: float = 0.0
    duration_s: float = 0.0
    add: int = 0
    change: int = 0
    destroy: int = 0
    error: str = ""
    rollback: dict[str, Any] | None = None
    backup_key: str = ""
    lease_wait_s: float = 0.0
    depends_on: tuple[str, ...] = ()
    finished: bool = False
    phases: tuple[tuple[str, float], ...] = ()

    def to_json(self, now: float) -> dict[str, Any]:
        elapsed = self.duration_s if self.finished else (now - self.started if self.started else 0.0)
        return {"id": self.id, "service": self.service, "account": self.account, "region": self.region,
                "project": self.project, "state_key": self.state_key, "status": self.status, "phase": self.phase,
                "host": self.host,
                "elapsed_s": round(elapsed, 1), "duration_s": round(self.duration_s, 3),
                "plan": {"add": self.add, "change": self.change, "destroy": self.destroy}, "error": self.error,
                "rollback": self.rollback, "backup_key": self.backup_key, "lease_wait_s": self.lease_wait_s,
                "depends_on": list(self.depends_on), "finished": self.finished,
                "phases": [{"phase": p, "at": a} for p, a in self.phases]}


@dataclass(frozen=True)
class RunView:
    run_id: str
    action: str = ""
    status: str = ACTIVE  # a RunStatus value once finished; "running" or "stuck" before
    started: float = 0.0
    finished: float = 0.0
    actor: str = ""
    git_sha: str = ""
    executor: str = ""
    repository: str = ""
    pull_request: int | None = None
    atomic: bool = False
    deployments: tuple[DeploymentView, ...] = ()
    last_activity: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in (ACTIVE, STUCK)

    @property
    def wall_s(self) -> float:
        return max(0.0, self.finished - self.started) if self.finished else 0.0

    @property
    def serial_s(self) -> float:
        """What its deployments took one after another."""
        return sum(d.duration_s for d in self.deployments)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.deployments:
            out[d.status] = out.get(d.status, 0) + 1
        return out

    def to_json(self, now: float, with_deployments: bool = True) -> dict[str, Any]:
        done = sum(1 for d in self.deployments if d.finished)
        out: dict[str, Any] = {
            "run_id": self.run_id, "action": self.action, "status": self.status, "started": self.started,
            "finished": self.finished or None, "actor": self.actor, "git_sha": self.git_sha,
            "executor": self.executor, "repository": self.repository, "pull_request": self.pull_request,
            "atomic": self.atomic, "total": len(self.deployments), "done": done, "counts": self.counts(),
            "elapsed_s": round((self.finished or now) - self.started, 1) if self.started else 0.0,
            "time_saved_s": round(max(0.0, self.serial_s - self.wall_s), 1) if self.finished else None,
        }
        if with_deployments:
            out["deployments"] = [d.to_json(now) for d in self.deployments]
        return out


# --- reading the records -------------------------------------------------------------------------
def _clean(redactor: Redactor, text: Any, limit: int = ERROR_CHARS) -> str:
    return redactor.redact(str(text or ""))[:limit]


def run_from_summary(summary: dict[str, Any], redactor: Redactor) -> RunView:
    deployments = []
    for d in summary.get("deployments") or []:
        plan = d.get("plan") or {}
        rollback = d.get("rollback") if isinstance(d.get("rollback"), dict) else None
        if rollback:
            rollback = {k: (_clean(redactor, v) if isinstance(v, str) else v) for k, v in rollback.items()
                        if k in ("strategy", "status", "matches_target", "error", "duration_s", "target")}
        status = str(d.get("status", ""))
        deployments.append(DeploymentView(
            id=str(d.get("id", "")), service=str(d.get("service", "")), account=str(d.get("account", "")),
            region=str(d.get("region", "")), project=str(d.get("project", "")),
            state_key=str(d.get("state_key", "")), status=status, phase=status,
            host=str(d.get("host", "")), duration_s=float(d.get("duration_s") or 0.0),
            add=int(plan.get("add") or 0), change=int(plan.get("change") or 0), destroy=int(plan.get("destroy") or 0),
            error=_clean(redactor, d.get("error")), rollback=rollback, backup_key=str(d.get("backup_key") or ""),
            lease_wait_s=float(d.get("lease_wait_s") or 0.0), finished=True))
    run_id = str(summary.get("run_id", ""))
    started = _epoch(str(summary.get("started_at", ""))) or _started_of_id(run_id)
    finished = _epoch(str(summary.get("finished_at", ""))) or started
    return RunView(run_id=run_id, action=str(summary.get("action", "")), status=str(summary.get("status", "")),
                   started=started, finished=finished, atomic=bool(summary.get("atomic")),
                   deployments=tuple(deployments), last_activity=finished)


def run_from_card(card: dict[str, Any], redactor: Redactor) -> RunView:
    run_id = str(card.get("run_id", ""))
    return RunView(
        run_id=run_id, action=str(card.get("action", "")), started=_epoch(str(card.get("started_at", "")))
        or _started_of_id(run_id), actor=_clean(redactor, card.get("actor"), 200),
        git_sha=str(card.get("git_sha", ""))[:40], executor=str(card.get("executor", "")),
        repository=str(card.get("repository", "")), atomic=bool(card.get("atomic")),
        pull_request=card.get("pull_request") if isinstance(card.get("pull_request"), int) else None,
        deployments=tuple(DeploymentView(id=str(d.get("id", "")), service=str(d.get("service", "")),
                                         account=str(d.get("account", "")), region=str(d.get("region", "")),
                                         project=str(d.get("project", "")),
                                         depends_on=tuple(map(str, d.get("depends_on") or ())))
                          for d in card.get("deployments") or []))


def with_card(finished: RunView, card: RunView | None) -> RunView:
    """A finished run's summary, with what only its card knows (who, which commit, the order)."""
    if card is None:
        return finished
    deps = {d.id: d for d in card.deployments}
    return replace(finished, actor=card.actor, git_sha=card.git_sha, executor=card.executor,
                   repository=card.repository, pull_request=card.pull_request,
                   deployments=tuple(replace(d, depends_on=deps[d.id].depends_on) if d.id in deps else d
                                     for d in finished.deployments))


def with_progress(d: DeploymentView, p: live.Progress, redactor: Redactor) -> DeploymentView:
    last = p.last
    if last is None:
        return d
    phases = tuple((m.phase, m.at) for m in p.phases)
    finished = p.finished
    return replace(d, phase=last.phase, status=last.phase, host=last.host, started=p.started,
                   phase_at=last.at, phases=phases, finished=finished,
                   duration_s=(last.at - p.started) if finished else 0.0,
                   error=_clean(redactor, last.detail) if finished and last.phase not in ("succeeded", "no_changes")
                   else d.error)


# --- the index -----------------------------------------------------------------------------------
@dataclass
class _Active:
    view: RunView
    stamps: dict[str, str] = field(default_factory=dict)
    progress: dict[str, live.Progress] = field(default_factory=dict)


class RunIndex:
    """The runs of one store (one namespace of it: run ids are global), kept current by `refresh()`."""

    def __init__(self, store: Store, *, stuck_after_s: float = STUCK_AFTER_S,
                 abandoned_after_s: float = ABANDONED_AFTER_S, clock: Callable[[], float] = time.time,
                 parallel: int = 16, redactor: Redactor | None = None) -> None:
        self.store = store
        self.stuck_after_s = stuck_after_s
        self.abandoned_after_s = abandoned_after_s
        self.clock = clock
        self.parallel = parallel
        self.redactor = redactor or Redactor()
        self._runs: dict[str, RunView] = {}
        self._ids: list[str] = []  # run ids, oldest first (bisect keeps it sorted)
        self._unread: dict[str, tuple[float, str]] = {}  # run id -> (when to try again, why it was not read)
        self._listed_all_at = float("-inf")
        self._active: dict[str, _Active] = {}
        self._by_deployment: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.version = 0
        self.refreshed_at = 0.0
        self.loaded = False
        self.error = ""
        self.partial = ""  # runs seen but not read yet (tried again), said on the pages

    # --- refreshing (one thread) ------------------------------------------------------------------
    def refresh(self) -> bool:
        """One look at the store; whether anything changed. A store error is kept in `error`, not raised."""
        try:
            changed = self._refresh()
        except Exception as e:  # the store blinked: the index stays as it was, and says so
            with self._lock:
                self.error = f"{type(e).__name__}: {e}"[:300]
            return False
        with self._lock:
            self.error = ""
            self.refreshed_at = self.clock()
            self.loaded = True
            if changed:
                self.version += 1
                self.changed.notify_all()
        return changed

    def _refresh(self) -> bool:
        now = self.clock()
        # Usually one listing after the newest run known (less a margin: clocks lag); now and then all of it,
        # for a run whose id is older still (a webhook job that waited in its spool, a host whose clock ran
        # ahead of the others).
        after = ""
        with self._lock:
            newest = self._ids[-1] if self._ids else ""
        if newest and now - self._listed_all_at < FULL_LISTING_S:
            start = min(_started_of_id(newest), now) - CLOCK_MARGIN_S
            after = f"{keys.RUNS}{datetime.fromtimestamp(start, UTC):%Y%m%dT%H%M%S}"
        else:
            self._listed_all_at = now
        seen: dict[str, set[str]] = {}
        for name in self.store.list_children(keys.RUNS, start_after=after):
            run_id = name.removesuffix("/").removesuffix(".json")
            if keys.RUN_ID.fullmatch(run_id):
                seen.setdefault(run_id, set()).add("summary" if name.endswith(".json") else "dir")
        with self._lock:
            new = sorted((r for r in seen if r not in self._runs), reverse=True)  # newest first
            # runs that could not be read before, when their time to try again has come
            new += [r for r, (when, _) in sorted(self._unread.items(), reverse=True)
                    if r not in seen and r not in self._runs and when <= now]
            going = list(self._active)
        changed = False
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="tfo-index") as pool:
            # a run retried without being listed again: its summary is looked for
            for view in pool.map(lambda r: self._try_new(r, "summary" in seen.get(r, {"summary"})), new):
                if view is not None:
                    self._put(view)
                    changed = True
            for updated in pool.map(self._look_again, going):
                changed = updated or changed
        with self._lock:
            for a in list(self._active.values()):
                idle = now - a.view.last_activity
                if idle > self.abandoned_after_s:
                    # never finished and nobody will finish it now (a killed local run, a dead producer):
                    # shown as such, and no longer looked at
                    del self._active[a.view.run_id]
                    self._runs[a.view.run_id] = replace(a.view, status=ABANDONED)
                    changed = True
                    continue
                status = STUCK if idle > self.stuck_after_s else ACTIVE  # a run that stopped moving
                if status != a.view.status:
                    a.view = replace(a.view, status=status)
                    self._runs[a.view.run_id] = a.view
                    changed = True
            unread = len(self._unread)
            if unread:
                sample = next(iter(self._unread.values()))[1]
                self.partial = f"{unread} run(s) could not be read yet (e.g. {sample}); trying again"
            else:
                self.partial = ""
        return changed

    def _try_new(self, run_id: str, has_summary: bool) -> RunView | None:
        """A new run's view; a run that cannot be read (the store blinked, a malformed record) is tried again
        later, never dropped."""
        try:
            view = self._read_new(run_id, has_summary)
        except Exception as e:  # any record problem: this run, not the refresh
            with self._lock:
                self._unread[run_id] = (self.clock() + UNREAD_RETRY_S, f"{run_id}: {type(e).__name__}: {e}"[:200])
            return None
        with self._lock:
            self._unread.pop(run_id, None)
        return view

    def _summary(self, run_id: str) -> RunView | None:
        try:
            summary = self.store.get_json(keys.run_summary(run_id))
        except KeyError:
            return None
        return run_from_summary(summary, self.redactor) if isinstance(summary, dict) else None

    def _card(self, run_id: str) -> RunView | None:
        try:
            card = self.store.get_json(keys.run_card(run_id))
        except KeyError:
            return None
        return run_from_card(card, self.redactor) if isinstance(card, dict) else None

    def _read_new(self, run_id: str, has_summary: bool) -> RunView | None:
        card = self._card(run_id)
        if has_summary:
            finished = self._summary(run_id)
            if finished is not None:
                return with_card(finished, card)
        if card is None:
            return None  # being written, or a run of a tfo before cards: seen when its summary is
        view = replace(card, last_activity=card.started)
        with self._lock:
            self._active[run_id] = _Active(view)
        self._look_again(run_id)
        with self._lock:
            a = self._active.get(run_id)
            return a.view if a else self._runs.get(run_id)

    def _look_again(self, run_id: str) -> bool:
        """A run still going: finished now? Which deployments moved?"""
        with self._lock:
            a = self._active.get(run_id)
        if a is None:
            return False
        finished = self._summary(run_id)
        if finished is not None:
            view = with_card(finished, a.view)
            with self._lock:
                self._active.pop(run_id, None)
            self._put(view)
            return True
        stamps = {k.key: k.stamp for k in self.store.list_keys(keys.progress_prefix(run_id))}
        moved = [k for k, s in stamps.items() if a.stamps.get(k) != s]
        if not moved:
            return False
        for record in map(self._progress_of, moved):
            if record is not None:
                a.progress[record.deployment] = record
        a.stamps = stamps
        deployments = tuple(with_progress(d, a.progress[d.id], self.redactor) if d.id in a.progress else d
                            for d in a.view.deployments)
        last = max([a.view.started, *(p.last_seen for p in a.progress.values())])
        a.view = replace(a.view, deployments=deployments, last_activity=last,
                         status=ACTIVE if a.view.status == STUCK and last > a.view.last_activity else a.view.status)
        self._put(a.view)
        return True

    def _progress_of(self, key: str) -> live.Progress | None:
        try:
            return live.Progress.from_dict(self.store.get_json(key))
        except (KeyError, TypeError, ValueError):
            return None

    def _put(self, view: RunView) -> None:
        with self._lock:
            fresh = view.run_id not in self._runs
            self._runs[view.run_id] = view
            if fresh:
                bisect.insort(self._ids, view.run_id)
                for d in view.deployments:
                    self._by_deployment.setdefault(d.id, []).append(view.run_id)
            if view.run_id in self._active:
                self._active[view.run_id].view = view

    # --- reading (any thread) ---------------------------------------------------------------------
    def run(self, run_id: str) -> RunView | None:
        with self._lock:
            return self._runs.get(run_id)

    def active(self) -> list[RunView]:
        with self._lock:
            return [self._runs[r] for r in sorted(self._active, reverse=True)]

    def recent(self, limit: int = 50, before: str = "", status: str = "", action: str = "") -> list[RunView]:
        out = []
        with self._lock:
            end = bisect.bisect_left(self._ids, before) if before else len(self._ids)
            for i in range(end - 1, -1, -1):
                view = self._runs[self._ids[i]]
                if (status and view.status != status) or (action and view.action != action):
                    continue
                out.append(view)
                if len(out) >= limit:
                    break
        return out

    def all_runs(self) -> list[RunView]:
        """Newest first."""
        with self._lock:
            return [self._runs[r] for r in reversed(self._ids)]

    def total(self) -> int:
        with self._lock:
            return len(self._ids)

    def deployment_runs(self, deployment_id: str, limit: int = 100) -> list[RunView]:
        with self._lock:
            ids = sorted(self._by_deployment.get(deployment_id, []), reverse=True)[:limit]
            return [self._runs[r] for r in ids]

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until the index's version passes `version` or `timeout` passes; the version now."""
        with self._lock:
            self.changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version


# --- figures ---------------------------------------------------------------------------------------
def figures(runs: Iterable[RunView], since: float) -> dict[str, Any]:
    """Deployments of the finished runs started since `since`: how many, how they ended, how long they took,
    and the time running them in parallel saved (their durations one after another, less each run's wall time)."""
    deployments = succeeded = failed = rolled_back = 0
    durations: list[float] = []
    saved = 0.0
    run_count = 0
    for run in runs:
        if run.active or run.started < since:
            continue
        run_count += 1
        for d in run.deployments:
            deployments += 1
            succeeded += d.status in (Status.SUCCEEDED.value, Status.NO_CHANGES.value)
            failed += d.status in (Status.FAILED.value, Status.ROLLBACK_FAILED.value)  # rolled back: apart
            rolled_back += d.status == Status.ROLLED_BACK.value
            if d.duration_s:
                durations.append(d.duration_s)
        saved += max(0.0, run.serial_s - run.wall_s)
    return {"runs": run_count, "deployments": deployments, "succeeded": succeeded, "failed": failed,
            "rolled_back": rolled_back,
            "average_duration_s": round(sum(durations) / len(durations), 1) if durations else 0.0,
            "time_saved_s": round(saved, 1)}


def day_start(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def overview(index: RunIndex, now: float, recent: int = 30) -> dict[str, Any]:
    """The home page's data: active runs (with their deployments), recent ones (without), today's and the
    last 7 days' figures."""
    week = now - timedelta(days=7).total_seconds()
    runs = _since(index, week)
    return {
        "now": now,
        "active": [r.to_json(now) for r in index.active()],
        "recent": [r.to_json(now, with_deployments=False) for r in index.recent(limit=recent)],
        "today": figures(runs, day_start(now)),
        "week": figures(runs, week),
        "runs_recorded": index.total(),
        "index_error": index.error or index.partial,
    }


def _since(index: RunIndex, since: float) -> Sequence[RunView]:
    out = []
    for run in index.all_runs():  # newest first: stop at the first one older than `since`, with a margin
        if run.started < since - CLOCK_MARGIN_S:
            break
        out.append(run)
    return out


STATUSES = tuple(s.value for s in RunStatus)
