"""What the cluster looks like from outside, for the dashboard's metrics: messages waiting per queue (the
broker's Redis lists) and the workers that answer a ping. Cached for a few seconds: a scrape every 15 s
must not turn into a broadcast every 15 s per dashboard replica and tab."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from orchestrator.config import TfoConfig
from orchestrator.metrics import ClusterView
from orchestrator.redaction import Redactor
from workers.app import DEFAULT_QUEUE, make_app

CACHE_S = 10.0
PING_TIMEOUT_S = 1.0
# kombu keeps a queue's messages of priority N in "<queue>\x06\x16<N>" beside "<queue>"
PRIORITY_SEP = "\x06\x16"


def cluster_view(cfg: TfoConfig) -> Callable[[], ClusterView]:
    import redis

    app = make_app(cfg)
    client = redis.Redis.from_url(cfg.celery.broker_url, socket_timeout=2, socket_connect_timeout=2)
    lock = threading.Lock()
    cached: list[tuple[float, ClusterView]] = []

    def look() -> ClusterView:
        queues: dict[str, int] = {}
        try:
            for raw in client.scan_iter(match=f"{DEFAULT_QUEUE}*", count=500, _type="LIST"):
                name = raw.decode(errors="replace").split(PRIORITY_SEP)[0]
                queues[name] = queues.get(name, 0) + int(client.llen(raw))
            for name in (DEFAULT_QUEUE, f"{DEFAULT_QUEUE}.finalize"):
                queues.setdefault(name, 0)
            answers = app.control.ping(timeout=PING_TIMEOUT_S) or []
        except Exception as e:  # the broker is down: say so in the metrics, do not fail the scrape
            return ClusterView(error=Redactor().redact(f"{type(e).__name__}: {e}")[:200])
        workers = tuple(sorted(name for answer in answers for name in answer))
        return ClusterView(queues=queues, workers=workers)

    def view() -> ClusterView:
        with lock:
            if cached and time.monotonic() - cached[0][0] < CACHE_S:
                return cached[0][1]
            fresh = look()
            cached[:] = [(time.monotonic(), fresh)]
            return fresh

    return view
