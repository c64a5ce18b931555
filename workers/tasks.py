"""Thin Celery tasks over the core. Bookkeeping lives in TfoTask; bodies are a few lines.

Arguments and results carry ids and redacted text only: variables never reach the broker, the
result backend or Flower. Workers read the run (and its variables) from the store.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from orchestrator import notify, recovery
from orchestrator.cancel import CancelToken
from orchestrator.deploy import UNRECORDED, deploy, read_checkpoint
from orchestrator.finalize import finalize, load_run_result
from orchestrator.models import DeploymentResult, RunSpec
from orchestrator.runs import cancel_key, load_deployment, load_run_spec
from orchestrator.runtime import Runtime, build_runtime
from workers.app import FINALIZE_QUEUE, app
from workers.producer import reconcile_task_id

CANCEL_POLL_S = 2.0
_runtime: dict[int, Runtime] = {}


def process_runtime() -> Runtime:
    """One store client, lease manager and terraform client per worker process (not per task)."""
    pid = os.getpid()
    if pid not in _runtime:
        _runtime[pid] = build_runtime(app.tfo_config)
    return _runtime[pid]


class TfoTask(Task):  # type: ignore[misc]
    acks_late = True
    reject_on_worker_lost = True

    @contextmanager
    def runtime(self, run_id: str) -> Iterator[Runtime]:
        """A per-task runtime: own cancel token (watching `tfo runs cancel`), progress to the backend."""
        base = process_runtime()
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
                    if base.store.head(cancel_key(run_id)) is not None:
                        token.cancel("tfo runs cancel")
                        return
                except Exception:  # noqa: S112 - the store may blink; keep watching
                    continue

        watcher = threading.Thread(target=watch_cancel, name="tfo-cancel-watch", daemon=True)
        watcher.start()
        try:
            if base.store.head(cancel_key(run_id)) is not None:
                token.cancel("tfo runs cancel")
            yield replace(base, cancel=token, on_event=report, host=self.request.hostname or base.host,
                          stop_exceptions=(SoftTimeLimitExceeded,))
        finally:
            stop.set()


@app.task(name="tfo.ping")
def ping(*args: Any) -> list[Any]:
    """A no-op: health checks and the dispatch benchmark (a chord of pings measures Celery alone)."""
    return list(args)


@app.task(bind=True, base=TfoTask, name="tfo.deploy")
def deploy_task(self: TfoTask, run_id: str, deployment_id: str) -> dict[str, Any]:
    with self.runtime(run_id) as rt:
        run, spec = load_deployment(rt.store, run_id, deployment_id)
        return reference(deploy(spec, run, rt))


def reference(result: DeploymentResult) -> dict[str, Any]:
    """What a deploy task returns to the result backend (so to Flower, and to finalize's arguments, which
    Redis keeps again): which deployment, how it ended, where. The whole result is the deployment's
    "done" checkpoint in the store; only when that could not be written does the (public) result itself
    travel. Search Flower's tasks for `'status': 'failed'` to find the failed deployments."""
    if UNRECORDED in result.error:
        return result.public_dict()
    first_line = result.error.splitlines()[0][:200] if result.error else ""
    return {"ref": True, "deployment": result.spec.id, "status": result.status.value, "host": result.host,
            "duration_s": result.duration_s, "error": first_line}


def _results(rt: Runtime, run: RunSpec, returned: list[dict[str, Any]]) -> list[DeploymentResult]:
    """The deployments' results in the chord's order, from the store where the task returned a reference,
    with the run's full specs (variables included) for rollback."""
    specs = {s.id: s for s in run.deployments}
    out = []
    for r in returned:
        if r.get("ref"):
            spec = specs[str(r["deployment"])]
            cp = read_checkpoint(rt, run, spec)
            if cp and cp.get("phase") == "done" and isinstance(cp.get("result"), dict):
                parsed = DeploymentResult.from_dict(cp["result"])
            else:  # written, then lost from the store: what the checkpoint says, as for a lost deployment
                parsed = recovery.lost_result(spec, run, cp)
        else:
            parsed = DeploymentResult.from_dict(r)
        out.append(replace(parsed, spec=specs.get(parsed.spec.id, parsed.spec)))
    return out


@app.task(bind=True, base=TfoTask, name="tfo.finalize")
def finalize_task(self: TfoTask, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        result = finalize(run, _results(rt, run, results), rt)
        notify_error = notify.post_result(rt.cfg, result)
        # The summary is in the store (`tfo runs show`); the backend keeps only how the run ended.
        return {"run_id": run_id, "status": result.status, "deployments": len(result.results),
                "notify_error": notify_error[:500]}


RECONCILE_INTERVAL_S = 5


@app.task(bind=True, base=TfoTask, name="tfo.reconcile", max_retries=None)
def reconcile_task(self: TfoTask, run_id: str, redeliver_by: float) -> dict[str, Any]:
    """Finalize a run whose chord broke. The store's checkpoints are the truth.

    Until `redeliver_by`, wait for Celery to redeliver and finish the lost deployments; after it,
    resume them here (deploy is idempotent: a lost apply is never run twice), then finalize.
    """
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        if load_run_result(rt.store, run) is not None:
            return {"run_id": run_id, "reconciled": False, "reason": "already finalized"}
        done, pending = recovery.collect(rt, run)
        if pending and time.time() < redeliver_by:
            raise self.retry(countdown=RECONCILE_INTERVAL_S)
        resumed = sorted(pending)
        for spec in run.deployments:
            if spec.id in pending:
                deploy(spec, run, rt)
        done, pending = recovery.collect(rt, run)
        results = recovery.results_in_order(run, done, pending)
        result = finalize(run, [replace(r, spec=next((s for s in run.deployments if s.id == r.spec.id), r.spec))
                                for r in results], rt)
        notify.post_result(rt.cfg, result)
        return {"run_id": run_id, "reconciled": True, "status": result.status, "resumed_here": resumed}


@app.task(name="tfo.run_failed")
def run_failed(request: Any, exc: Any, traceback: Any, run_id: str) -> dict[str, Any]:
    """link_error backstop: the chord broke (a header task lost or revoked, or finalize failed).

    Redelivered deployments may still finish, so hand the run to the reconciler, which finalizes from
    the store once they are done, resuming any that Celery does not redeliver in time.
    """
    c = app.tfo_config.celery
    redeliver_by = time.time() + c.visibility_timeout_s + 30
    reconcile_task.apply_async((run_id, redeliver_by), countdown=RECONCILE_INTERVAL_S, queue=FINALIZE_QUEUE,
                               task_id=reconcile_task_id(run_id))
    return {"run_id": run_id, "chord_error": f"{type(exc).__name__}: {exc}"[:500], "redeliver_by": redeliver_by}
