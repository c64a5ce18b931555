"""Submitting a run as chord(group(deploy...), finalize) and watching it from the result backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery, chord
from kombu.exceptions import OperationalError

from orchestrator.config import TfoConfig
from orchestrator.errors import PlatformError
from orchestrator.models import DeploymentResult, DeploymentSpec, RunResult, RunSpec
from workers.app import FINALIZE_QUEUE, make_app, queue_for


class BrokerError(PlatformError):
    """The broker or result backend cannot be reached."""


def deploy_task_id(run_id: str, spec: DeploymentSpec) -> str:
    # Deterministic: a resubmission or redelivery is recognisably the same deployment of the same run.
    return f"{run_id}.deploy.{spec.slug}"


def finalize_task_id(run_id: str) -> str:
    return f"{run_id}.finalize"


def submit(cfg: TfoConfig, run: RunSpec) -> Celery:
    app = make_app(cfg)
    header = [app.signature("tfo.deploy", args=(run.run_id, s.id), task_id=deploy_task_id(run.run_id, s),
                            queue=queue_for(cfg, s)) for s in run.deployments]
    body = app.signature("tfo.finalize", args=(run.run_id,), task_id=finalize_task_id(run.run_id),
                         queue=FINALIZE_QUEUE)
    body.link_error(app.signature("tfo.run_failed", args=(run.run_id,), queue=FINALIZE_QUEUE))
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, timeout=5)
        if header:
            handle = chord(header)(body)
        else:
            handle = body.apply_async(args=([],))  # zero deployments: finalize records an empty run
        _release_handles(app, handle)
    except (OperationalError, OSError, ConnectionError) as e:
        raise BrokerError(f"broker {redact_url(cfg.celery.broker_url)} unreachable: {e}") from e
    return app


def _release_handles(app: Celery, handle: Any) -> None:
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


def progress(app: Celery, run: RunSpec) -> dict[str, dict[str, Any]]:
    """Per deployment: state, phase, host, from the result backend."""
    out: dict[str, dict[str, Any]] = {}
    for spec in run.deployments:
        meta = _meta(app, deploy_task_id(run.run_id, spec))
        state = str(meta.get("status", "PENDING"))
        info = meta.get("result") if isinstance(meta.get("result"), dict) else {}
        assert isinstance(info, dict)
        phase = info.get("phase") or info.get("status") or ("queued" if state == "PENDING" else state.lower())
        out[spec.id] = {"state": state, "phase": phase, "host": info.get("host", ""), "detail": info.get("detail", "")}
    return out


def wait(app: Celery, run: RunSpec, on_event: Callable[[str, str, str], None],
         stop: Callable[[], bool], poll_s: float = 1.0) -> RunResult | None:
    """Follow the run until finalize returns (RunResult) or `stop()` says to stop waiting (None)."""
    seen: dict[str, tuple[str, str]] = {}
    final: dict[str, Any] = {}
    while True:
        try:
            for dep_id, p in progress(app, run).items():
                key = (p["phase"], p["host"])
                if seen.get(dep_id) != key:
                    seen[dep_id] = key
                    on_event(dep_id, p["phase"], f"on {p['host']}" if p["host"] else "")
            final = _meta(app, finalize_task_id(run.run_id))
            if final.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
                break
        except (OperationalError, OSError, ConnectionError):
            pass  # the backend blinked (a Redis restart): keep following
        if stop():
            return None
        time.sleep(poll_s)
    value = final.get("result")
    if final.get("status") != "SUCCESS" or not isinstance(value, dict):
        raise PlatformError(f"finalize of run {run.run_id} failed: {value!r}")
    results = tuple(DeploymentResult.from_dict(r) for r in value.get("results", []))
    summary = value.get("summary", {})
    return RunResult(run=run, results=results, finished_at=summary.get("finished_at", ""),
                     audit_key=summary.get("audit_key") or "")
