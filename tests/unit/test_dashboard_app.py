"""The dashboard's routes through Flask's test client, on a real local store: authentication on every route,
refusing to start open, the JSON each page renders, the metrics as Prometheus parses them, the stream."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cli.dashboard import Auth, create_app, load_auth
from orchestrator import keys, live
from orchestrator.config import TfoConfig, load_config
from orchestrator.errors import UserError
from orchestrator.history import RunIndex
from orchestrator.metrics import ClusterView
from orchestrator.store.local import LocalStore
from tests.unit.test_live_history import RUN, _run, _summary

USER, PASSWORD = "ops", "dash-Pa55-word-1"
ROUTES = ["/", f"/runs/{RUN}", "/deployments/s3/acct-a/us-east-1/one", "/api/overview", "/api/runs",
          f"/api/runs/{RUN}", "/api/deployments/s3/acct-a/us-east-1/one", "/api/events", "/metrics", "/healthz",
          "/static/app.js", "/static/style.css", "/nothing-here"]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


OK = _basic(USER, PASSWORD)
ANY = "0.0.0.0"  # noqa: S104 - what the dashboard is asked to listen on, refused without credentials


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TfoConfig, LocalStore, RunIndex]:
    cfg = load_config(repo_root=tmp_path, environ={})
    store = LocalStore(tmp_path / "store")
    finished, going = _run(RUN, "one", "two"), _run("20261208T110000Z-bbbbbb", "one")
    store.put_json(keys.run_summary(RUN), _summary(finished, {"one": "succeeded", "two": "rolled_back"}))
    live.write_card(store, finished, "local", "h")
    live.write_card(store, going, "celery", "h")
    recorder = live.ProgressRecorder(store, going.run_id, "w1@h")
    recorder("s3/acct-a/us-east-1/one", "apply")
    recorder.close()
    index = RunIndex(store)
    index.refresh()
    return cfg, store, index


def _client(setup: tuple[TfoConfig, LocalStore, RunIndex], auth: Auth | None = None,
            cluster: Any = None) -> FlaskClient:
    cfg, store, index = setup
    app = create_app(cfg, store, index, auth or Auth({USER: PASSWORD}), cluster)
    return app.test_client()


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_needs_credentials(setup: tuple[TfoConfig, LocalStore, RunIndex], route: str) -> None:
    client = _client(setup)
    for headers in ({}, _basic(USER, "wrong"), _basic("nobody", PASSWORD), {"Authorization": "Basic !!!"},
                    {"Authorization": "Bearer " + PASSWORD}, {"X-Forwarded-User": "ops"}):
        r = client.get(route, headers=headers)
        assert r.status_code == 401, (route, headers)
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert b"tfo" not in r.data.replace(b"tfo dashboard", b"")  # nothing of the store behind it
    for method in ("HEAD", "OPTIONS", "POST"):  # not only GET
        assert client.open(route, method=method).status_code == 401, (route, method)
    r = client.get(route, headers=OK)
    assert r.status_code != 401, route
    if route == "/api/events":
        r.close()


def test_a_trusted_proxy_s_header_counts_only_from_the_proxy(setup: tuple[TfoConfig, LocalStore, RunIndex]) -> None:
    client = _client(setup, Auth({}, "X-Forwarded-User", ("10.0.0.0/8",)))
    assert client.get("/api/overview", headers={"X-Forwarded-User": "alice"},
                      environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/api/overview", headers={"x-forwarded-user": "alice"},  # any case
                      environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/api/overview", headers={"X-Forwarded-User": "alice"},
                      environ_base={"REMOTE_ADDR": "192.168.1.9"}).status_code == 401  # not the proxy
    assert client.get("/api/overview", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 401  # no user


def test_it_refuses_to_start_open(tmp_path: Path) -> None:
    cfg = load_config(repo_root=tmp_path, environ={})
    with pytest.raises(UserError, match="needs credentials: \\$TFO_DASHBOARD_BASIC_AUTH"):
        load_auth(cfg, {}, ANY, no_auth=False)
    with pytest.raises(UserError, match="--no-auth only on loopback"):
        load_auth(cfg, {}, ANY, no_auth=True)
    assert load_auth(cfg, {}, "127.0.0.1", no_auth=True) is None
    assert load_auth(cfg, {}, "::1", no_auth=True) is None
    with pytest.raises(UserError, match="expected USER:PASSWORD"):
        load_auth(cfg, {"TFO_DASHBOARD_BASIC_AUTH": "no-colon"}, ANY, no_auth=False)
    users = tmp_path / "users"
    users.write_text("# who may look\nops:one-Pa55\nsre:two-Pa55\n")
    auth = load_auth(cfg, {"TFO_DASHBOARD_BASIC_AUTH_FILE": str(users)}, ANY, no_auth=False)
    assert auth is not None and dict(auth.users) == {"ops": "one-Pa55", "sre": "two-Pa55"}
    with pytest.raises(UserError, match=r"credentials file .*missing"):
        load_auth(cfg, {"TFO_DASHBOARD_BASIC_AUTH_FILE": str(tmp_path / "missing")}, ANY, no_auth=False)


def test_the_pages_data(setup: tuple[TfoConfig, LocalStore, RunIndex]) -> None:
    client = _client(setup)
    page = client.get("/", headers=OK)
    assert page.status_code == 200 and b'src="/static/app.js"' in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    overview = client.get("/api/overview", headers=OK).get_json()
    (active,) = overview["active"]
    assert active["run_id"] == "20261208T110000Z-bbbbbb"
    assert active["deployments"][0]["phase"] == "apply" and active["deployments"][0]["host"] == "w1@h"
    assert [r["run_id"] for r in overview["recent"]] == ["20261208T110000Z-bbbbbb", RUN]
    run = client.get(f"/api/runs/{RUN}", headers=OK).get_json()
    two = {d["id"]: d for d in run["deployments"]}["s3/acct-a/us-east-1/two"]
    assert two["status"] == "rolled_back" and two["rollback"]["matches_target"] is True
    assert "hunter2" not in json.dumps(run) and "[REDACTED]" in two["error"]
    assert client.get("/api/runs/not-a-run", headers=OK).status_code == 404
    assert client.get("/api/runs/20261208T120000Z-cccccc", headers=OK).status_code == 404
    listing = client.get("/api/runs?limit=1", headers=OK).get_json()
    assert [r["run_id"] for r in listing["runs"]] == ["20261208T110000Z-bbbbbb"] and listing["total"] == 2
    more = client.get(f"/api/runs?limit=1&before={listing['next']}", headers=OK).get_json()
    assert [r["run_id"] for r in more["runs"]] == [RUN]
    assert client.get("/api/runs?before=../../x", headers=OK).status_code == 400
    dep = client.get("/api/deployments/s3/acct-a/us-east-1/two", headers=OK).get_json()
    assert [r["run_id"] for r in dep["runs"]] == [RUN] and dep["state_key"].endswith("two/terraform.tfstate")
    assert client.get("/api/deployments/s3/../../etc", headers=OK).status_code == 404
    assert client.get("/static/..%2Fpage.html", headers=OK).status_code == 404


def test_the_metrics_as_prometheus_reads_them(setup: tuple[TfoConfig, LocalStore, RunIndex], tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = _client(setup, cluster=lambda: ClusterView(queues={"tfo": 3, "tfo.finalize": 0}, workers=("w1@h",)))
    r = client.get("/metrics", headers=OK)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(r.data.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("tfo_runs_total", (("action", "apply"), ("status", "failed")))] == 1
    assert samples[("tfo_deployments_total", (("account", "acct-a"), ("action", "apply"), ("service", "s3"),
                                              ("status", "rolled_back")))] == 1
    assert samples[("tfo_rollbacks_total", (("status", "succeeded"), ("strategy", "reapply")))] == 1
    # what alerts look at exists at 0 before its first step (increase() cannot see a series born at 1)
    assert samples[("tfo_rollbacks_total", (("status", "failed"), ("strategy", "state")))] == 0
    assert samples[("tfo_runs_total", (("action", "plan"), ("status", "succeeded")))] == 0
    assert samples[("tfo_deployments_total", (("account", "acct-a"), ("action", "apply"), ("service", "s3"),
                                              ("status", "rollback_failed")))] == 0
    assert samples[("tfo_runs_active", (("state", "running"),))] == 1
    assert samples[("tfo_deployments_active", (("phase", "apply"),))] == 1
    assert samples[("tfo_deployment_duration_seconds_count", (("account", "acct-a"), ("action", "apply"),
                                                               ("service", "s3")))] == 2
    assert samples[("tfo_deployment_duration_seconds_bucket", (("account", "acct-a"), ("action", "apply"),
                                                                ("le", "5.0"), ("service", "s3")))] == 0
    assert samples[("tfo_lease_wait_seconds_sum", (("account", "acct-a"), ("service", "s3")))] == 3.0
    assert samples[("tfo_celery_queue_length", (("queue", "tfo"),))] == 3
    assert samples[("tfo_workers_seen", ())] == 1
    assert samples[("tfo_drift_deployments", (("state", "in_sync"),))] == 0
    # Prometheus' own linter of the exposition format and names
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus) is needed: make system-deps"
    checked = subprocess.run([promtool, "check", "metrics"], input=r.data, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_stream_says_hello_and_a_change(setup: tuple[TfoConfig, LocalStore, RunIndex]) -> None:
    import threading
    import time

    _, store, index = setup
    client = _client(setup)
    r = client.get("/api/events", headers=OK, buffered=False)
    assert r.mimetype == "text/event-stream" and r.headers["X-Accel-Buffering"] == "no"
    chunks = iter(r.response)
    first = next(chunks)
    first = first.decode() if isinstance(first, bytes) else first
    assert first.startswith("retry: 3000\nevent: hello\ndata: ")

    def later() -> None:
        time.sleep(0.2)
        live.write_card(store, _run("20261208T120000Z-dddddd", "one"), "local", "h")
        index.refresh()

    threading.Thread(target=later).start()
    change = next(chunks)
    change = change.decode() if isinstance(change, bytes) else change
    assert change.startswith("event: change\ndata: ") and json.loads(change.split("data: ")[1])["version"] == \
        index.version
    r.close()


def test_a_head_of_the_stream_takes_no_live_slot(setup: tuple[TfoConfig, LocalStore, RunIndex]) -> None:
    cfg, store, index = setup
    from dataclasses import replace

    one = replace(cfg, dashboard=replace(cfg.dashboard, max_streams=1))
    client = create_app(one, store, index, Auth({USER: PASSWORD})).test_client()
    for _ in range(3):
        assert client.head("/api/events", headers=OK).status_code == 200
    r = client.get("/api/events", headers=OK, buffered=False)
    assert r.status_code == 200  # the one slot is free
    assert client.get("/api/events", headers=OK).status_code == 503  # and now taken
    r.close()
    again = client.get("/api/events", headers=OK, buffered=False)  # given back when the first one closed
    assert again.status_code == 200
    again.close()
