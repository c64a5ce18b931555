"""The Celery app, built from tfo's config by one factory (`make_app`): `tfo worker` and `tfo flower` build it
from the config they loaded; `celery -A workers.app ...` gets it on first use (`app`, read from
TFO_CONFIG / TFO_REPO when Celery asks, never at import). Tasks are shared tasks: they bind to the app
of the process that runs them.

Every long-task safety setting lives here, with the reason it is set.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery

from orchestrator.config import TfoConfig, load_config
from orchestrator.models import DeploymentSpec
from orchestrator.procs import keep_private

DEFAULT_QUEUE = "tfo"
# The chord callback has its own queue, which every worker also consumes, so a run is finalized
# even when all deployment queues are busy with long applies.
FINALIZE_QUEUE = "tfo.finalize"


def config_from_env() -> TfoConfig:
    """Workers find their config the way the CLI does: TFO_CONFIG / TFO_REPO, else ./tfo.toml."""
    config = os.environ.get("TFO_CONFIG")
    repo = os.environ.get("TFO_REPO")
    return load_config(Path(config) if config else None, repo_root=Path(repo) if repo else None)


def queue_for(cfg: TfoConfig, spec: DeploymentSpec) -> str:
    if cfg.celery.route_by == "account":
        return f"{DEFAULT_QUEUE}.{spec.account}"
    if cfg.celery.route_by == "region":
        return f"{DEFAULT_QUEUE}.{spec.region}"
    return DEFAULT_QUEUE


def celery_settings(cfg: TfoConfig) -> dict[str, Any]:
    c = cfg.celery
    transport = {
        "visibility_timeout": c.visibility_timeout_s,
        # Look for abandoned (unacknowledged, past the visibility timeout) tasks every few seconds
        # instead of kombu's default of about 100 s, so a lost worker's task is redelivered promptly.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        # A worker that died while sweeping must not block the sweep for kombu's default 5 minutes.
        "unacked_mutex_expire": 60,
    }
    return {
        # JSON only: a broker message can never make a worker unpickle arbitrary objects.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Acknowledge after the task ran, and requeue it if the worker process dies mid-task:
        # deploy is idempotent (checkpoints in the store), so a redelivery resumes or reports.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One long task per worker process at a time; nothing waits behind an hour-long apply.
        "worker_prefetch_multiplier": 1,
        # Redis hands an unacknowledged task to another worker after this long: keep it above the
        # hard time limit so a deployment still running is never started twice.
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        # The soft limit raises in the task, which stops terraform with one SIGINT to its process
        # group and records the deployment cancelled; the hard limit is the last resort.
        "task_soft_time_limit": c.soft_time_limit_s,
        "task_time_limit": c.time_limit_s,
        # Results (small references, redacted) stay readable by `tfo runs show` for days. Not extended:
        # a task's name, arguments and worker reach Flower in its events; in the backend they would
        # be kept again beside every result, finalize's list of references included.
        "result_expires": timedelta(days=c.result_expires_days),
        "result_extended": False,
        # If the broker connection drops, long tasks are cancelled and redelivered instead of
        # running on unacknowledged and then running again elsewhere.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        # Events for Flower and live progress.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "task_default_queue": DEFAULT_QUEUE,
        "worker_concurrency": c.worker_concurrency,
        "worker_hijack_root_logger": False,
    }


class TfoCelery(Celery):  # type: ignore[misc]
    """The Celery app with tfo's config beside Celery's, not inside it.

    Everything in `app.conf` is shown by Flower (Config tab, `/api/workers`) and by `celery inspect conf`,
    and Celery censors only keys it recognises; tfo's config holds the broker URL with its password and
    the store settings, so it must never be a conf entry.
    """

    def __init__(self, cfg: TfoConfig) -> None:
        broker = cfg.celery.broker_url or "redis://127.0.0.1:6379/0"
        super().__init__("tfo", broker=broker, backend=cfg.celery.result_backend or broker,
                         include=["workers.tasks"])
        self.conf.update(celery_settings(cfg))
        self.tfo_config = cfg


_process_app: list[TfoCelery] = []


def make_app(cfg: TfoConfig) -> TfoCelery:
    return TfoCelery(cfg)


def use(app: TfoCelery) -> TfoCelery:
    """This process's worker app (`tfo worker` sets it; forked pool processes inherit it)."""
    _process_app[:] = [app]
    return app


def process_app() -> TfoCelery:
    if not _process_app:
        # `celery -A workers.app ...` does not pass through tfo's main: keep this process unreadable too.
        keep_private()
        use(make_app(config_from_env()))
    return _process_app[0]


def __getattr__(name: str) -> Any:
    # `celery -A workers.app` looks up `app`: the config is read then, not when this module is imported.
    if name == "app":
        return process_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
