"""Thin Celery tasks over the core. Bookkeeping lives in TfoTask; bodies are a few lines.

Arguments and results carry ids and redacted text only: variables never reach the broker, the
result backend or Flower. Workers read the run (and its variables) from the store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from celery import Task

from orchestrator import audit
from orchestrator.cancel import CancelToken
from orchestrator.deploy import deploy
from orchestrator.finalize import finalize, run_summary_key
from orchestrator.models import DeploymentResult, RunSpec
from orchestrator.runs import cancel_key, load_run_spec
from orchestrator.runtime import Runtime, build_runtime
from workers.app import app

CANCEL_POLL_S = 2.0
_runtime: dict[int, Runtime] = {}


def process_runtime() -> Runtime:
    """One store client, lease manager and terraform client per worker process (not per task)."""
    pid = os.getpid()
    if pid not in _runtime:
        _runtime[pid] = build_runtime(app.conf.tfo_config)
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

        def report(dep_id: str, phase: str, detail: str) -> None:
            self.update_state(task_id=task_id, state="PROGRESS", meta={
                "deployment": dep_id, "phase": phase, "detail": detail, "host": self.request.hostname,
                "at": datetime.now(UTC).isoformat()})

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
            yield replace(base, cancel=token, on_event=report, host=self.request.hostname or base.host)
        finally:
            stop.set()


@app.task(bind=True, base=TfoTask, name="tfo.deploy")
def deploy_task(self: TfoTask, run_id: str, deployment_id: str) -> dict[str, Any]:
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        spec = next(s for s in run.deployments if s.id == deployment_id)
        return deploy(spec, run, rt).public_dict()


def _with_specs(run: RunSpec, results: list[dict[str, Any]]) -> list[DeploymentResult]:
    """Results come back without variables; put the run's full specs back for rollback."""
    specs = {s.id: s for s in run.deployments}
    out = []
    for r in results:
        parsed = DeploymentResult.from_dict(r)
        out.append(replace(parsed, spec=specs.get(parsed.spec.id, parsed.spec)))
    return out


@app.task(bind=True, base=TfoTask, name="tfo.finalize")
def finalize_task(self: TfoTask, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    with self.runtime(run_id) as rt:
        run = load_run_spec(rt.store, run_id)
        result = finalize(run, _with_specs(run, results), rt)
        return {"summary": result.report_dict(), "results": [r.public_dict() for r in result.results]}


@app.task(name="tfo.run_failed")
def run_failed(request: Any, exc: Any, traceback: Any, run_id: str) -> dict[str, Any]:
    """link_error backstop: a header task was lost for good. Record the run failed, free its leases."""
    rt = process_runtime()
    run = load_run_spec(rt.store, run_id)
    for spec in run.deployments:
        rt.leases.release(spec.state_key, run.run_id)
    summary: dict[str, Any] = {"run_id": run_id, "action": run.options.action.value, "status": "failed",
               "error": f"run aborted: {type(exc).__name__ if isinstance(exc, BaseException) else exc}",
               "started_at": run.started_at, "finished_at": datetime.now(UTC).isoformat(), "deployments": []}
    audit.write(rt.store, audit.run_key(run), {**audit.base_metadata(run), "kind": "run", **summary},
                rt.run_dir(run_id))
    rt.store.put_json(run_summary_key(run_id), summary)
    return summary
