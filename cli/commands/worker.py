"""`tfo worker` and `tfo flower`: Celery's own commands on the app built from the config loaded here, once."""

from __future__ import annotations

from cli.options import GlobalOptions
from orchestrator.config import TfoConfig
from orchestrator.errors import UserError


def _config(g: GlobalOptions) -> TfoConfig:
    cfg = g.load()
    if not cfg.celery.broker_url:
        raise UserError("needs [tfo.celery] broker_url (or TFO_CELERY_BROKER_URL)")
    return cfg


def run_flower(g: GlobalOptions, basic_auth: str, address: str, port: int) -> int:
    from workers.app import make_app, use
    from workers.flower import flower_argv, protect_metrics

    app = use(make_app(_config(g)))
    argv = flower_argv(basic_auth, address, port)
    protect_metrics()
    app.start(argv=argv)
    return 0


def run_worker(g: GlobalOptions, queues: str, concurrency: int | None, hostname: str, loglevel: str) -> int:
    from workers.app import DEFAULT_QUEUE, FINALIZE_QUEUE, make_app, use

    cfg = _config(g)
    app = use(make_app(cfg))  # the pool's processes are forked from this one and inherit it
    names = [DEFAULT_QUEUE, FINALIZE_QUEUE] + [q.strip() for q in queues.split(",") if q.strip()]
    argv = ["worker", f"--queues={','.join(dict.fromkeys(names))}", f"--hostname={hostname}",
            f"--loglevel={loglevel}", "--prefetch-multiplier=1", "--task-events", "--pool=prefork",
            f"--concurrency={concurrency or cfg.celery.worker_concurrency}"]
    app.worker_main(argv)
    return 0
