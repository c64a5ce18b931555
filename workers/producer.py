"""The celery executor: a run submitted as chord(group(deploy...), finalize), followed from the result backend
and the store. A run whose deployments depend on each other is sent as a graph instead: its first
deployments now, each later one by the task of its last upstream, finalize by the last (workers/dag.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery, chord
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from orchestrator.config import TfoConfig
from orchestrator.errors import BrokerError, RunNotFinalizedError
from orchestrator.finalize import load_run_result
from orchestrator.models import DeploymentSpec, RunResult, RunSpec
from orchestrator.runtime import EventSink
from orchestrator.service import ordered
from orchestrator.store import open_store
from orchestrator.store.base import Store
from workers import dag
from workers.app import FINALIZE_QUEUE, make_app, queue_for

BACKEND_PATIENCE_S = 300.0


def deploy_task_id(run_id: str, spec: DeploymentSpec) -> str:
    # Deterministic: a resubmission or redelivery is recognisably the same deployment of the same run.
    return f"{run_id}.deploy.{spec.slug}"


def reconcile_task_id(run_id: str) -> str:
    return f"{run_id}.reconcile"


def dag_watch_task_id(run_id: str) -> str:
    return f"{run_id}.dag-watch"


def finalize_task_id(run_id: str) -> str:
    return f"{run_id}.finalize"


def run_chord(app: Celery, cfg: TfoConfig, run: RunSpec) -> Any:
    """A run without dependencies among its deployments: all its deploy tasks, then finalize, whose error
    path (run_failed) reconciles a broken chord from the store."""
    header = [app.signature("tfo.deploy", args=(run.run_id, s.id), task_id=deploy_task_id(run.run_id, s),
                            queue=queue_for(cfg, s)) for s in run.deployments]
    body = app.signature("tfo.finalize", args=(run.run_id,), task_id=finalize_task_id(run.run_id),
                         queue=FINALIZE_QUEUE)
    body.link_error(app.signature("tfo.run_failed", args=(run.run_id,), queue=FINALIZE_QUEUE))
    # Zero deployments: no chord, finalize records an empty run.
    return chord(header)(body) if header else body.apply_async(args=([],))


def submit(cfg: TfoConfig, run: RunSpec, store: Store | None = None) -> Celery:
    """Queue the run: one chord, or (deployments that depend on each other) its graph's first deployments,
    each later one sent by its last upstream's task (workers/dag.py)."""
    app = make_app(cfg)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, timeout=5)
        if ordered(run):
            dag.start(app, store or open_store(cfg), run)
        else:
            release_handles(app, run_chord(app, cfg, run))
    except (OperationalError, OSError, RedisError) as e:
        raise BrokerError(f"broker {redact_url(cfg.celery.broker_url)} unreachable: {e}") from e
    return app


def release_handles(app: Celery, handle: Any) -> None:
    """Unsubscribe the result handles Celery made for the chord, now rather than at interpreter exit.

    We follow a run by task ids (so any host can), not through these handles; left alone, their
    finalizers talk to Redis while Python shuts down and print tracebacks.
    """
    pending = getattr(app.backend, "_pending_results", ())
    results = [r for mapping in pending for waiters in list(mapping.values()) for r in list(waiters.values())]
    for r in [handle, *results]:
        if r is not None and getattr(r, "backend", None) is not None:
            app.backend.remove_pending_result(r)
            r.backend = None


def redact_url(url: str) -> str:
    from orchestrator.redaction import Redactor

    return Redactor().redact(url)


def _meta(app: Celery, task_id: str) -> dict[str, Any]:
    # Read the backend directly: an AsyncResult subscribes to pub/sub and complains at exit.
    meta = app.backend.get_task_meta(task_id)
    return meta if isinstance(meta, dict) else {}


def _failure_text(meta: dict[str, Any]) -> str:
    """A failed task's exception as the JSON result backend keeps it, redacted."""
    from orchestrator.redaction import Redactor

    exc = meta.get("result")
    if isinstance(exc, dict):
        message = exc.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        text = f"{exc.get('exc_type', 'error')}: {message}"
    else:
        text = str(exc)
    return Redactor().redact(text)


def task_metas(app: Celery, task_ids: list[str]) -> list[dict[str, Any]]:
    """Many tasks' metadata in one round trip (MGET on a Redis backend), else one read each."""
    backend = app.backend
    if not (hasattr(backend, "mget") and hasattr(backend, "get_key_for_task")):  # not a key-value backend
        return [_meta(app, t) for t in task_ids]
    out: list[dict[str, Any]] = []
    for raw in backend.mget([backend.get_key_for_task(t) for t in task_ids]) if task_ids else []:
        meta = backend.decode_result(raw) if raw is not None else {}
        out.append(meta if isinstance(meta, dict) else {})
    return out


def progress(app: Celery, run: RunSpec) -> dict[str, dict[str, Any]]:
    """Per deployment: state, phase, host, from the result backend (one read for the whole run)."""
    out: dict[str, dict[str, Any]] = {}
    metas = task_metas(app, [deploy_task_id(run.run_id, spec) for spec in run.deployments])
    for spec, meta in zip(run.deployments, metas, strict=True):
        state = str(meta.get("status", "PENDING"))
        info = meta.get("result") if isinstance(meta.get("result"), dict) else {}
        assert isinstance(info, dict)
        phase = info.get("phase") or info.get("status") or ("queued" if state == "PENDING" else state.lower())
        started = info.get("started")
        duration = round(time.time() - started, 1) if isinstance(started, int | float) else None
        if isinstance(info.get("duration_s"), int | float):
            duration = info["duration_s"]  # finished: the deployment's own measure
        out[spec.id] = {"state": state, "phase": phase, "host": info.get("host", ""),
                        "duration_s": duration, "detail": info.get("detail", "")}
    return out


def wait(app: Celery, store: Store, run: RunSpec, on_event: Callable[[str, str, str], None],
         stop: Callable[[], bool], poll_s: float = 1.0) -> RunResult | None:
    """Follow the run until its result is in the store (RunResult) or `stop()` says to stop waiting (None).

    The store, not the chord's result, says when a run is over: a broken chord is finalized later by
    the reconciler, and this keeps following until it has.
    """
    seen: dict[str, tuple[str, str]] = {}
    unreachable_since: float | None = None
    while True:
        done = load_run_result(store, run)
        if done is not None:
            # Every deployment's last line before the client exits: its final status (finalize may
            # have changed it, e.g. rolled back), unless that was the last thing shown.
            for r in done.results:
                if seen.get(r.spec.id, ("", ""))[0] != r.status.value:
                    on_event(r.spec.id, r.status.value, f"on {r.host}" if r.host else "")
            return done
        try:
            for dep_id, p in progress(app, run).items():
                key = (p["phase"], p["host"])
                if seen.get(dep_id) != key:
                    seen[dep_id] = key
                    on_event(dep_id, p["phase"], f"on {p['host']}" if p["host"] else "")
            unreachable_since = None
            reconcile = _meta(app, reconcile_task_id(run.run_id))  # the last resort, whatever the run's shape
        except (OperationalError, OSError, RedisError) as e:
            # The backend blinked (a Redis restart): the run goes on in the workers; keep following.
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > BACKEND_PATIENCE_S:
                raise BrokerError(f"result backend unreachable for {BACKEND_PATIENCE_S:.0f}s while following "
                                  f"run {run.run_id} (it may still finish; see `tfo runs show`): {e}") from e
        else:
            if reconcile.get("status") == "FAILURE" and load_run_result(store, run) is None:
                # Nobody will finalize this run (a worker that cannot read it, say): stop waiting, say why.
                raise RunNotFinalizedError(
                    f"run {run.run_id} cannot be finalized by the workers: {_failure_text(reconcile)}; its "
                    "deployments' checkpoints are in the store (see the worker logs and `tfo runs show`)")
        if stop():
            return None
        time.sleep(poll_s)


class CeleryExecutor:
    """Runs on the workers: `submit` queues the chord, `follow` watches until finalize has recorded the run."""

    name = "celery"
    distributed = True

    def __init__(self, cfg: TfoConfig, store: Store, on_event: EventSink) -> None:
        self.cfg = cfg
        self.store = store
        self.on_event = on_event
        self.app: Celery | None = None

    def submit(self, run: RunSpec) -> None:
        self.app = submit(self.cfg, run, self.store)

    def follow(self, run: RunSpec, stop: Callable[[], bool]) -> RunResult | None:
        return wait(self.app or make_app(self.cfg), self.store, run, self.on_event, stop)
