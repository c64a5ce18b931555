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
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from orchestrator import alerts, keys, live, recovery
from orchestrator.cancel import CancelToken
from orchestrator.errors import TfoError
from orchestrator.finalize import conclude, load_run_result
from orchestrator.record import reference, resolve_references
from orchestrator.redaction import Redactor
from orchestrator.runtime import Runtime, build_runtime
from orchestrator.service import deploy_after_upstreams, load_deployment, load_run_spec, ordered
from workers import dag as workers_dag
from workers.app import FINALIZE_QUEUE, TfoCelery, process_app
from workers.beat import run_scheduled_drift
from workers.producer import reconcile_task_id

CANCEL_POLL_S = 2.0
RECONCILE_INTERVAL_S = 5
# A deploy task that could not send what follows its deployment tries again for about 10 minutes.
SETTLE_RETRY_S = 10
SETTLE_RETRIES = 60
WATCH_BACKOFF_S = 300
_runtime: dict[int, Runtime] = {}


log = logging.getLogger("tfo.worker")


def process_runtime(app: TfoCelery) -> Runtime:
    """One store client, lease manager and terraform client per worker process (not per task)."""
    pid = os.getpid()
    if pid not in _runtime:
        _runtime[pid] = build_runtime(app.tfo_config)
    return _runtime[pid]


class TfoTask(Task):  # type: ignore[misc]
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        """A task that raised (not a failed deployment, which is a result): one redacted line naming the run.
        Celery keeps the exception for Flower; its text may quote values, so it is redacted here too."""
        run_id = next((a for a in args if isinstance(a, str) and keys.RUN_ID.fullmatch(a)), "?")
        text = Redactor().redact(str(exc))[:500]
        log.error("task %s (%s) of run %s raised %s: %s", self.name, task_id, run_id, type(exc).__name__, text)
        if self.name == "tfo.reconcile" and run_id != "?":  # the last resort failed: nobody will finalize it
            alerts.alert_not_finalized(self.tfo_app.tfo_config, run_id, f"{type(exc).__name__}: {text}")

    @property
    def tfo_app(self) -> TfoCelery:
        assert isinstance(self.app, TfoCelery), "tfo's tasks run on tfo's app (workers.app.make_app)"
        return self.app

    def process_runtime(self) -> Runtime:
        return process_runtime(self.tfo_app)

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

        host = self.request.hostname or base.host
        # Where each deployment is, in the store too: the dashboard sees every executor's runs alike.
        recorder = live.ProgressRecorder(base.store, run_id, host)
        watcher = threading.Thread(target=watch_cancel, name="tfo-cancel-watch", daemon=True)
        watcher.start()
        try:
            if base.store.head(keys.cancel(run_id)) is not None:
                token.cancel("tfo runs cancel")
            yield replace(base, cancel=token, on_event=live.tee(report, recorder), host=host,
                          stop_exceptions=(SoftTimeLimitExceeded,))
        finally:
            stop.set()
            recorder.close()


@shared_task(name="tfo.ping")
def ping(*args: Any) -> list[Any]:
    """A no-op: health checks and the dispatch benchmark (a chord of pings measures Celery alone)."""
    return list(args)


@shared_task(bind=True, base=TfoTask, name="tfo.deploy", max_retries=SETTLE_RETRIES)
def deploy_task(self: TfoTask, run_id: str, deployment_id: str, dag: bool = False) -> dict[str, Any]:
    """One deployment; in a run with dependencies (`dag`), then the dependents it was the last upstream of."""
    with self.runtime(run_id) as rt:
        run, spec = load_deployment(rt.store, run_id, deployment_id)
        result = reference(deploy_after_upstreams(spec, run, rt))
    if dag:  # once its progress is written (the runtime's end): finalize may start now, elsewhere
        try:
            workers_dag.settle(self.tfo_app, self.process_runtime().store, run_id, deployment_id, self.request.id)
        except (RedisError, OperationalError, OSError, TfoError) as e:
            # The deployment is recorded; sending what follows it failed: again (this deployment is reported
            # from its checkpoint, never run twice); the run's watch settles it at last.
            raise self.retry(exc=e, countdown=SETTLE_RETRY_S) from e
    return result


# Not bound, like run_failed: an error callback gets (request, exc, traceback) only when its function takes them.
@shared_task(name="tfo.deploy_lost")
def deploy_lost(request: Any, exc: Any, traceback: Any, run_id: str, deployment_id: str) -> dict[str, Any]:
    """A deploy task of a run with dependencies raised, or the hard time limit killed it: the deployment
    ends without a result (finalize reports it lost, and rolls it back if its apply had started); its
    dependents are sent, and skip themselves, and the run ends."""
    app = process_app()
    why = Redactor().redact(f"{type(exc).__name__}: {exc}")[:300]
    if type(exc).__name__ == "TimeLimitExceeded":
        # Killed: its terraform may still be stopping. The watch settles it after a grace (dag.LOST_GRACE_S).
        log.error("deployment %s of run %s was killed by the time limit (%s): it is settled lost in %ds",
                  deployment_id, run_id, why, workers_dag.LOST_GRACE_S)
        return {"run_id": run_id, "deployment": deployment_id, "left_to": "tfo.dag_watch"}
    log.error("deployment %s of run %s was lost (%s): settling it so the run goes on", deployment_id, run_id, why)
    # Celery calls this in the process that saw the failure, not as a message: its claims are named after
    # the failed task (a redelivery of the failed task's message would settle it itself). If this fails
    # (the broker blinked), the watch settles it.
    settled = workers_dag.settle(app, process_runtime(app).store, run_id, deployment_id,
                                 f"lost:{getattr(request, 'id', '') or deployment_id}")
    return {"run_id": run_id, "deployment": deployment_id, "sent": list(settled.sent),
            "finalized": settled.finalized}


@shared_task(bind=True, base=TfoTask, name="tfo.dag_watch", max_retries=None)
def dag_watch(self: TfoTask, run_id: str, failures: int = 0) -> dict[str, Any]:
    """The backstop of a run sent as a graph: every dag_watch_s, settle what ended unnoticed, until it is
    finalized. A store or broker that blinks only slows it down (up to WATCH_BACKOFF_S between looks); it
    ends when the run is finalized, when the reconciler gave up on it, or when its records expire."""
    app = self.tfo_app
    every = app.tfo_config.celery.dag_watch_s
    if _meta_status(app, reconcile_task_id(run_id)) == "FAILURE":
        return {"run_id": run_id, "finalized": False, "reason": "the reconciler gave up on it"}
    if time.time() - _run_started(run_id) > app.conf.result_expires.total_seconds():
        return {"run_id": run_id, "finalized": False, "reason": "its records expired"}
    try:
        if workers_dag.look_again(app, self.process_runtime().store, run_id, self.request.id):
            return {"run_id": run_id, "finalized": True}
        failures = 0
    except KeyError:
        raise  # no graph: not a run sent as a graph (or its records are gone): nothing to watch
    except (RedisError, OperationalError, OSError, TfoError) as e:
        failures += 1
        log.warning("run %s: the watch could not look (%s); again in %ds", run_id, e,
                    min(WATCH_BACKOFF_S, every * 2 ** failures))
    raise self.retry(countdown=min(WATCH_BACKOFF_S, every * 2 ** failures), kwargs={"failures": failures})


def _meta_status(app: TfoCelery, task_id: str) -> str:
    meta = app.backend.get_task_meta(task_id)
    return str(meta.get("status", "")) if isinstance(meta, dict) else ""


def _run_started(run_id: str) -> float:
    try:
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


@shared_task(bind=True, base=TfoTask, name="tfo.finalize", max_retries=None)
def finalize_task(self: TfoTask, results: list[dict[str, Any]], run_id: str, collect: bool = False,
                  sent_as: str = "") -> dict[str, Any]:
    """The run's end: its chord's results (references), or (`collect`: a run sent as a graph) every
    deployment's result from the store."""
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        if load_run_result(rt.store, run) is not None:  # a copy: the run ends once (rollbacks, alerts, audit)
            return {"run_id": run_id, "finalized": False, "reason": "finalized already"}
        if collect:
            message = f"{self.request.id}:{sent_as}"  # this message, redelivered or retried; not another one
            if not workers_dag.finalizing(self.tfo_app, run_id, message, self.tfo_app.tfo_config.celery.time_limit_s):
                raise self.retry(countdown=10)  # another copy finalizes right now
            found, pending = recovery.collect(rt.store, run)
            deployments = recovery.results_in_order(run, found, pending)
        else:
            returned = {str(r.get("deployment") or r.get("spec", {}).get("id")): r for r in results}
            deployments = resolve_references(rt.store, run, [returned[s.id] for s in run.deployments
                                                             if s.id in returned])
        result = conclude(run, deployments, rt)
        # The summary is in the store (`tfo runs show`); the backend keeps only how the run ended.
        return {"run_id": run_id, "status": result.status.value, "deployments": len(result.results)}


@shared_task(bind=True, base=TfoTask, name="tfo.reconcile", max_retries=None)
def reconcile_task(self: TfoTask, run_id: str, redeliver_by: float) -> dict[str, Any]:
    """Finalize a run whose chord broke, from the store's checkpoints (`recovery.reconcile`)."""
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        if load_run_result(rt.store, run) is not None:
            return {"run_id": run_id, "reconciled": False, "reason": "already finalized"}
        # A run sent as a graph reaches here only when its finalize failed: its deployments have all ended
        # (a lost one was settled lost and its dependents skipped): conclude as they are, resume nothing.
        graph_run = ordered(run)
        outcome = recovery.reconcile(rt, run, wait_for_redelivery=time.time() < redeliver_by and not graph_run,
                                     resume=not graph_run)
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
