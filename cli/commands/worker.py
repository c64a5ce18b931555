"""`tfo worker` and `tfo flower`: Celery's own commands on the app built from the config loaded here, once."""

from __future__ import annotations

from pathlib import Path

from cli.options import GlobalOptions
from orchestrator.config import TfoConfig
from orchestrator.errors import ConfigError, UserError


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


def run_beat(g: GlobalOptions, schedule_file: Path | None, hostname: str, loglevel: str) -> int:
    """Celery beat with tfo's schedule, and in the same process the consumer of the runs it fires (a drift
    run reads the repository here, and waits for its runs without keeping a deployment worker busy)."""
    from celery.signals import worker_shutting_down

    from workers.app import make_app, use
    from workers.beat import BEAT_QUEUE, beat_schedule, stop_following

    cfg = _config(g)
    if not cfg.drift.schedule:
        raise ConfigError('tfo beat needs [tfo.drift] schedule, in crontab syntax (UTC), e.g. "0 */6 * * *"')
    app = use(make_app(cfg))
    app.conf.beat_schedule = beat_schedule(cfg)
    path = schedule_file or cfg.workdir_path / "beat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    # A stopping beat stops following its drift run (the runs go on in the workers; the firing is recorded
    # interrupted) rather than keep systemd or compose waiting until they kill it.
    worker_shutting_down.connect(lambda **_: stop_following("tfo beat is stopping"), weak=False)
    # solo: the drift run is the consumer's only work, in this process (the solo pool enforces no time
    # limits: a drift run lasts as long as its runs, each of whose deployments has the workers' limits).
    argv = ["worker", "--beat", f"--schedule={path}", f"--queues={BEAT_QUEUE}", f"--hostname={hostname}",
            f"--loglevel={loglevel}", "--pool=solo", "--concurrency=1", "--prefetch-multiplier=1", "--task-events"]
    app.worker_main(argv)
    return 0
