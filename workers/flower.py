"""Flower for tfo: basic auth required, and Prometheus `/metrics` behind it too.

Flower serves `/metrics` without authentication even when basic auth is on; task names, hosts and
timings are not for anonymous readers, so the handler is wrapped with Tornado's `authenticated`.
"""

from __future__ import annotations

import tornado.web
from flower.views import monitor

from orchestrator.errors import UserError

_patched = False


def protect_metrics() -> None:
    global _patched
    if not _patched:
        monitor.Metrics.get = tornado.web.authenticated(monitor.Metrics.get)
        _patched = True


def flower_argv(basic_auth: str, address: str, port: int) -> list[str]:
    if ":" not in basic_auth or not all(basic_auth.split(":", 1)):
        raise UserError("Flower needs basic auth as USER:PASSWORD (--basic-auth or TFO_FLOWER_BASIC_AUTH)")
    return ["flower", f"--basic-auth={basic_auth}", f"--address={address}", f"--port={port}",
            "--persistent=False", "--purge_offline_workers=3600"]
