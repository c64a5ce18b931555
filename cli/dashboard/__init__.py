"""`tfo dashboard`: runs and deployments live and in history, from the store, read-only.

Pages (`/`, `/runs/<run_id>`, `/deployments/<id>`) are one static page whose script renders the JSON under
`/api/...`; `/api/events` streams a message whenever the index changes (Server-Sent Events), and the page
polls instead when no message gets through (a proxy that buffers). `/metrics` is Prometheus'. Every route
needs authentication: HTTP basic, or a header set by a trusted reverse proxy. Nothing here can start,
cancel or approve anything. Everything shown was redacted by whoever recorded it, and is again here.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, request

from orchestrator import drift, history, keys
from orchestrator.config import TfoConfig
from orchestrator.errors import ConfigError, UserError
from orchestrator.history import RunIndex
from orchestrator.metrics import ClusterView, DriftCounts, IndexCollector
from orchestrator.models import duration_s
from orchestrator.names import unsafe_name_reason
from orchestrator.redaction import Redactor
from orchestrator.store.base import Store

log = logging.getLogger("tfo.dashboard")

AUTH_ENV = "TFO_DASHBOARD_BASIC_AUTH"
AUTH_FILE_ENV = "TFO_DASHBOARD_BASIC_AUTH_FILE"
STREAM_HEARTBEAT_S = 10.0
STREAM_MAX_S = 300.0  # a stream ends after this long and the browser reconnects: no thread is held forever
REALM = 'Basic realm="tfo dashboard", charset="UTF-8"'
PAGE_PATHS = ("/", "/runs/<run_id>", "/deployments/<path:deployment_id>")
SECURITY_HEADERS = {
    # Scripts and styles from tfo itself only; data is put into the page as text, never as markup.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Auth:
    """Who may read: basic-auth users (user -> password), or a trusted proxy's user header."""

    users: Mapping[str, str]
    header: str = ""
    proxies: tuple[str, ...] = ()

    def user(self, authorization: str, remote: str, headers: Mapping[str, str]) -> str:
        """The authenticated user's name, or "" (refused)."""
        if self.header and _trusted(remote, self.proxies):
            wanted = self.header.lower()
            named = next((v for k, v in headers.items() if k.lower() == wanted), "").strip()
            if named:
                return named
        if not authorization.lower().startswith("basic "):
            return ""
        try:
            user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        expected = self.users.get(user)
        # compare in constant time, and as long for an unknown user as for a known one
        ok = hmac.compare_digest(password.encode(), (expected if expected is not None else "\0" * 32).encode())
        return user if ok and expected is not None else ""


def _trusted(remote: str, proxies: tuple[str, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return False
    for p in proxies:
        try:
            if addr in ipaddress.ip_network(p, strict=False):
                return True
        except ValueError:
            continue
    return False


def _parse_users(text: str, where: str) -> dict[str, str]:
    users = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise UserError(f"{where}:{n}: expected USER:PASSWORD")
        users[user] = password
    return users


def load_auth(cfg: TfoConfig, env: Mapping[str, str], listen_host: str, no_auth: bool) -> Auth | None:
    """The dashboard's authentication; None only for `--no-auth` on loopback. Refuses to run open."""
    users: dict[str, str] = {}
    if env.get(AUTH_ENV):
        users |= _parse_users(env[AUTH_ENV], f"${AUTH_ENV}")
    file = env.get(AUTH_FILE_ENV) or cfg.dashboard.basic_auth_file
    if file:
        path = cfg.resolve(file)
        try:
            users |= _parse_users(path.read_text(encoding="utf-8"), str(path))
        except OSError as e:
            raise UserError(f"dashboard credentials file {path}: {e.strerror or e}") from e
    header = cfg.dashboard.trusted_user_header
    if users or header:
        if no_auth:
            raise UserError("--no-auth with credentials configured: drop one of them")
        return Auth(users, header, cfg.dashboard.trusted_proxies)
    if no_auth and _loopback(listen_host):
        return None
    if no_auth:
        raise UserError(f"--no-auth only on loopback (127.0.0.1, ::1, localhost), not on {listen_host!r}")
    raise UserError(f"tfo dashboard needs credentials: ${AUTH_ENV}=user:password, ${AUTH_FILE_ENV} (a file of "
                    "user:password lines), or [tfo.dashboard] trusted_user_header behind an authenticating proxy; "
                    "or --no-auth when it listens on loopback only")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _redacted(redactor: Redactor, data: Any) -> Any:
    if isinstance(data, str):
        return redactor.redact(data)
    if isinstance(data, dict):
        return {k: _redacted(redactor, v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_redacted(redactor, v) for v in data]
    return data


# --- keeping the index current -------------------------------------------------------------------
DRIFT_REFRESH_S = 60.0


class Refresher:
    """One thread that looks at the store every `interval` seconds (the drift records every minute)."""

    def __init__(self, index: RunIndex, interval: float, drift_counts: DriftCounts | None = None) -> None:
        self.index = index
        self.interval = interval
        self.drift_counts = drift_counts
        self._drift_at = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tfo-dashboard-refresh", daemon=True)

    def start(self) -> Refresher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.index.refresh()
            if self.drift_counts is not None and time.monotonic() - self._drift_at > DRIFT_REFRESH_S:
                self._drift_at = time.monotonic()
                try:
                    self.drift_counts.refresh()
                except Exception as e:  # the store: the last counts stay
                    log.warning("drift records not read: %s", e)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


# --- the app -------------------------------------------------------------------------------------
def _static(name: str) -> bytes:
    return resources.files("cli.dashboard").joinpath("static", name).read_bytes()


STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}


def create_app(cfg: TfoConfig, store: Store, index: RunIndex, auth: Auth | None,
               cluster: Callable[[], ClusterView] | None = None, clock: Callable[[], float] = time.time,
               drift_counts: Callable[[], dict[str, int]] | None = None) -> Flask:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    app = Flask("tfo-dashboard", static_folder=None)
    redactor = Redactor()
    streams = threading.BoundedSemaphore(cfg.dashboard.max_streams)
    registry = CollectorRegistry(auto_describe=False)
    if drift_counts is None:  # (no refresher: read once now)
        counter = DriftCounts(store)
        counter.refresh()
        drift_counts = counter
    registry.register(IndexCollector(index, cluster, drift_counts))

    def json_response(data: Any, status: int = 200) -> Response:
        # Redacted once more on the way out: whatever a record let through, the page does not show.
        return Response(json.dumps(_redacted(redactor, data), default=str, sort_keys=True), status=status,
                        mimetype="application/json")

    @app.before_request
    def authenticate() -> Response | None:
        if auth is None:
            return None
        user = auth.user(request.headers.get("Authorization", ""), request.remote_addr or "", dict(request.headers))
        if user:
            return None
        return Response("authentication required\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": REALM})

    @app.after_request
    def secure(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def page(**_: Any) -> Response:
        return Response(_static("page.html"), mimetype="text/html")

    for path in PAGE_PATHS:
        app.add_url_rule(path, f"page:{path}", page)

    @app.get("/static/<name>")
    def static_file(name: str) -> Response:
        suffix = Path(name).suffix
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            abort(404)
        try:
            body = _static(name)
        except (FileNotFoundError, IsADirectoryError):
            abort(404)
        return Response(body, mimetype=STATIC_TYPES[suffix].split(";")[0],
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/overview")
    def api_overview() -> Response:
        return json_response(history.overview(index, clock()) | {"loaded": index.loaded})

    @app.get("/api/runs")
    def api_runs() -> Response:
        try:
            limit = max(1, min(int(request.args.get("limit", "50")), 500))
        except ValueError:
            return json_response({"error": "limit must be a number"}, 400)
        before = request.args.get("before", "")
        if before and not keys.RUN_ID.fullmatch(before):
            return json_response({"error": "before must be a run id"}, 400)
        runs = index.recent(limit=limit, before=before, status=request.args.get("status", ""),
                            action=request.args.get("action", ""))
        now = clock()
        return json_response({"runs": [r.to_json(now, with_deployments=False) for r in runs],
                              "next": runs[-1].run_id if len(runs) == limit else None, "total": index.total()})

    @app.get("/api/runs/<run_id>")
    def api_run(run_id: str) -> Response:
        if not keys.RUN_ID.fullmatch(run_id):
            return json_response({"error": "not a run id"}, 404)
        view = index.run(run_id)
        if view is None:
            return json_response({"error": f"run {run_id} is not recorded (yet)"}, 404)
        data = view.to_json(clock())
        for d in data["deployments"]:
            earlier = [r.run_id for r in index.deployment_runs(d["id"]) if r.run_id < run_id][:5]
            d["previous_runs"] = earlier
        return json_response(data)

    @app.get("/api/deployments/<path:deployment_id>")
    def api_deployment(deployment_id: str) -> Response:
        parts = deployment_id.split("/")
        if len(parts) < 3 or any(unsafe_name_reason(p) for p in parts):
            return json_response({"error": "not a deployment id"}, 404)
        now = clock()
        rows = []
        state_key = ""
        for run in index.deployment_runs(deployment_id):
            d = next((x for x in run.deployments if x.id == deployment_id), None)
            if d is None:
                continue
            state_key = state_key or d.state_key
            rows.append({"run_id": run.run_id, "action": run.action, "run_status": run.status,
                         "started": run.started, "actor": run.actor, **d.to_json(now)})
        backups = []
        if state_key:
            try:
                backups = [{"key": o.key, "at": o.last_modified, "size": o.size}
                           for o in store.list_backups(state_key)][-50:]
            except Exception as e:  # the store: shown on the page, not a 500
                backups = [{"error": f"{type(e).__name__}: {e}"[:200]}]
        drift_record = drift.history(store, deployment_id, cfg.namespace)
        return json_response({"id": deployment_id, "state_key": state_key, "runs": rows, "backups": backups,
                              "drift": drift_record[0].to_dict() if drift_record else None})

    @app.get("/api/events")
    def api_events() -> Response:
        if request.method != "GET":  # (HEAD) nothing to stream: no slot taken
            return Response(status=200, mimetype="text/event-stream")
        if not streams.acquire(blocking=False):
            return json_response({"error": "too many live connections; poll /api/overview"}, 503)

        def stream() -> Iterator[str]:
            version = index.version
            yield f"retry: 3000\nevent: hello\ndata: {json.dumps({'version': version})}\n\n"
            ends = time.monotonic() + STREAM_MAX_S
            while time.monotonic() < ends:
                now = index.wait_for_change(version, STREAM_HEARTBEAT_S)
                if now != version:
                    version = now
                    yield f"event: change\ndata: {json.dumps({'version': version})}\n\n"
                else:  # a named event, not a comment: the page sees that the stream is alive
                    yield f"event: ping\ndata: {json.dumps({'version': version})}\n\n"

        response = Response(stream(), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        # Given back when the server closes the response, however it ends (a generator that never started,
        # a client gone): once.
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                streams.release()

        response.call_on_close(release)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        response = Response(generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        ok = index.loaded and not index.error
        return json_response({"ok": ok, "runs": index.total(), "error": index.error}, 200 if ok else 503)

    return app


def serve(cfg: TfoConfig, listen: str, no_auth: bool, env: Mapping[str, str] | None = None) -> None:
    from waitress import serve as waitress_serve

    from orchestrator.store import open_store

    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise UserError(f"--listen {listen!r}: expected HOST:PORT") from None
    auth = load_auth(cfg, os.environ if env is None else env, host, no_auth)
    try:
        stuck = duration_s(cfg.dashboard.stuck_after)
    except ValueError as e:
        raise ConfigError(f"dashboard.stuck_after: {e}") from e
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = open_store(cfg)
    index = RunIndex(store, stuck_after_s=stuck)
    cluster = None
    if cfg.celery.broker_url:
        from workers.monitor import cluster_view

        cluster = cluster_view(cfg)
    drifting = DriftCounts(store)
    refresher = Refresher(index, cfg.dashboard.refresh_s, drifting).start()
    log.info("tfo dashboard on http://%s:%d (store %s, %s)", host, port, store.describe(),
             "no authentication (loopback)" if auth is None else "authentication required")
    try:
        waitress_serve(create_app(cfg, store, index, auth, cluster, drift_counts=drifting), host=host, port=port,
                       threads=cfg.dashboard.threads, ident="tfo-dashboard", channel_timeout=STREAM_MAX_S + 60)
    finally:
        refresher.stop()
