"""Thin Celery tasks over the core: each body loads what it needs and calls one domain function.

Bookkeeping (the per-task runtime, cancel watching, progress to the backend) lives in TfoTask.
Arguments and results carry ids and redacted text only: variables never reach the broker, the
result backend or Flower. Workers read the run (and its variables) from the store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from orchestrator import keys, recovery
from orchestrator.cancel import CancelToken
from orchestrator.finalize import conclude, load_run_result
from orchestrator.record import reference, resolve_references
from orchestrator.redaction import Redactor
from orchestrator.runtime import Runtime, build_runtime
from orchestrator.service import deploy_after_upstreams, load_deployment, load_run_spec
from workers.app import FINALIZE_QUEUE, TfoCelery, process_app
from workers.beat import run_scheduled_drift
from workers.producer import LEVEL_CLAIM_S, claim_level, level_chord, level_sent, reconcile_task_id, release_handles

CANCEL_POLL_S = 2.0
RECONCILE_INTERVAL_S = 5
_runtime: dict[int, Runtime] = {}


log = logging.getLogger("tfo.worker")


class TfoTask(Task):  # type: ignore[misc]
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        """A task that raised (not a failed deployment, which is a result): one redacted line naming the run.
        Celery keeps the exception for Flower; its text may quote values, so it is redacted here too."""
        run_id = next((a for a in args if isinstance(a, str) and keys.RUN_ID.fullmatch(a)), "?")
        log.error("task %s (%s) of run %s raised %s: %s", self.name, task_id, run_id, type(exc).__name__,
                  Redactor().redact(str(exc))[:500])

    @property
    def tfo_app(self) -> TfoCelery:
        assert isinstance(self.app, TfoCelery), "tfo's tasks run on tfo's app (workers.app.make_app)"
        return self.app

    def process_runtime(self) -> Runtime:
        """One store client, lease manager and terraform client per worker process (not per task)."""
        pid = os.getpid()
        if pid not in _runtime:
            _runtime[pid] = build_runtime(self.tfo_app.tfo_config)
        return _runtime[pid]

    @contextmanager
    def runtime(self, run_id: str) -> Iterator[Runtime]:
        """A per-task runtime: own cancel token (watching `tfo runs cancel`), progress to the backend."""
        base = self.process_runtime()
        token = CancelToken()
        stop = threading.Event()
        task_id = self.request.id
        started = time.time()

        def report(dep_id: str, phase: str, detail: str) -> None:
            self.update_state(task_id=task_id, state="PROGRESS", meta={
                "deployment": dep_id, "phase": phase, "detail": detail, "host": self.request.hostname,
                "started": started, "at": datetime.now(UTC).isoformat()})

        def watch_cancel() -> None:
            while not stop.wait(CANCEL_POLL_S):
                try:
                    if base.store.head(keys.cancel(run_id)) is not None:
                        token.cancel("tfo runs cancel")
                        return
                except Exception:  # noqa: S112 - the store may blink; keep watching
                    continue

        watcher = threading.Thread(target=watch_cancel, name="tfo-cancel-watch", daemon=True)
        watcher.start()
        try:
            if base.store.head(keys.cancel(run_id)) is not None:
                token.cancel("tfo runs cancel")
            yield replace(base, cancel=token, on_event=report, host=self.request.hostname or base.host,
                          stop_exceptions=(SoftTimeLimitExceeded,))
        finally:
            stop.set()


@shared_task(name="tfo.ping")
def ping(*args: Any) -> list[Any]:
    """A no-op: health checks and the dispatch benchmark (a chord of pings measures Celery alone)."""
    return list(args)


@shared_task(bind=True, base=TfoTask, name="tfo.deploy")
def deploy_task(self: TfoTask, run_id: str, deployment_id: str) -> dict[str, Any]:
    with self.runtime(run_id) as rt:
        run, spec = load_deployment(rt.store, run_id, deployment_id)
        return reference(deploy_after_upstreams(spec, run, rt))


@shared_task(bind=True, base=TfoTask, name="tfo.advance", max_retries=None)
def advance_task(self: TfoTask, results: list[dict[str, Any]], run_id: str, level: int,
                 earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """A level of a run with dependencies has finished: start the next (or, after the last, finalize), once."""
    claim = claim_level(self.tfo_app, run_id, level)
    if claim.sent:
        return {"run_id": run_id, "level": level, "sent": False, "reason": "sent already by another copy"}
    if not claim.taken:  # another copy is sending it right now, or was lost doing so: look again later
        raise self.retry(countdown=LEVEL_CLAIM_S)
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        handle = level_chord(self.tfo_app, self.tfo_app.tfo_config, run, level, [*earlier, *results])
        release_handles(self.tfo_app, handle)
        level_sent(self.tfo_app, run_id, level)
        return {"run_id": run_id, "level": level, "sent": True}


@shared_task(bind=True, base=TfoTask, name="tfo.finalize")
def finalize_task(self: TfoTask, results: list[dict[str, Any]], run_id: str,
                  earlier: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        returned = {str(r.get("deployment") or r.get("spec", {}).get("id")): r for r in [*(earlier or []), *results]}
        in_order = [returned[s.id] for s in run.deployments if s.id in returned]  # earlier levels first otherwise
        result = conclude(run, resolve_references(rt.store, run, in_order), rt)
        # The summary is in the store (`tfo runs show`); the backend keeps only how the run ended.
        return {"run_id": run_id, "status": result.status.value, "deployments": len(result.results)}


@shared_task(bind=True, base=TfoTask, name="tfo.reconcile", max_retries=None)
def reconcile_task(self: TfoTask, run_id: str, redeliver_by: float) -> dict[str, Any]:
    """Finalize a run whose chord broke, from the store's checkpoints (`recovery.reconcile`)."""
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        if load_run_result(rt.store, run) is not None:
            return {"run_id": run_id, "reconciled": False, "reason": "already finalized"}
        outcome = recovery.reconcile(rt, run, wait_for_redelivery=time.time() < redeliver_by)
        if outcome is None:
            raise self.retry(countdown=RECONCILE_INTERVAL_S)
        result, resumed = outcome
        return {"run_id": run_id, "reconciled": True, "status": result.status.value, "resumed_here": resumed}


# Not bound: Celery calls an error callback with (request, exc, traceback) only when its function takes
# them directly; a bound task would get the failed task's id alone.
@shared_task(name="tfo.run_failed")
def run_failed(request: Any, exc: Any, traceback: Any, run_id: str) -> dict[str, Any]:
    """link_error backstop: the chord broke (a header task lost or revoked, or finalize failed).

    Redelivered deployments may still finish, so hand the run to the reconciler, which finalizes from
    the store once they are done, resuming any that Celery does not redeliver in time.
    """
    c = process_app().tfo_config.celery
    redeliver_by = time.time() + c.visibility_timeout_s + 30
    reconcile_task.apply_async((run_id, redeliver_by), countdown=RECONCILE_INTERVAL_S, queue=FINALIZE_QUEUE,
                               task_id=reconcile_task_id(run_id))
    return {"run_id": run_id, "chord_error": f"{type(exc).__name__}: {exc}"[:500], "redeliver_by": redeliver_by}


@shared_task(bind=True, base=TfoTask, name="tfo.drift_scheduled")
def drift_scheduled_task(self: TfoTask) -> dict[str, Any]:
    """A firing of `[tfo.drift] schedule`, consumed by `tfo beat` (queue tfo.beat): one drift run per firing."""
    return run_scheduled_drift(self.tfo_app.tfo_config)
