"""`tfo worker`: a Celery worker with tfo's defaults (queues, prefetch 1, events, a stable node name)."""

from __future__ import annotations

import os

from cli.options import GlobalOptions
from orchestrator.errors import UserError


def _use_config(g: GlobalOptions) -> None:
    cfg = g.load()
    if not cfg.celery.broker_url:
        raise UserError("needs [tfo.celery] broker_url (or TFO_CELERY_BROKER_URL)")
    # The worker module builds its app from the same config the CLI resolved.
    if g.config_file:
        os.environ["TFO_CONFIG"] = str(g.config_file.resolve())
    os.environ["TFO_REPO"] = str(cfg.repo_root)


def run_flower(g: GlobalOptions, basic_auth: str, address: str, port: int) -> int:
    _use_config(g)
    from workers.app import app
    from workers.flower import flower_argv, protect_metrics

    argv = flower_argv(basic_auth, address, port)
    protect_metrics()
    app.start(argv=argv)
    return 0


def run_worker(g: GlobalOptions, queues: str, concurrency: int | None, hostname: str, loglevel: str) -> int:
    _use_config(g)
    cfg = g.load()
    from workers.app import DEFAULT_QUEUE, FINALIZE_QUEUE, app

    names = [DEFAULT_QUEUE, FINALIZE_QUEUE] + [q.strip() for q in queues.split(",") if q.strip()]
    argv = ["worker", f"--queues={','.join(dict.fromkeys(names))}", f"--hostname={hostname}",
            f"--loglevel={loglevel}", "--prefetch-multiplier=1", "--task-events", "--pool=prefork",
            f"--concurrency={concurrency or cfg.celery.worker_concurrency}"]
    app.worker_main(argv)
    return 0
