"""The dashboard as a person sees it: a real `tfo dashboard`, headless Chromium, and real runs in flight (the real
terraform and the project's provider, slow on purpose) through both executors. The page shows the run's
deployments and their phases change without a reload; a failed and rolled back deployment shows both; the
failing run's alert reaches Slack (a local stub); behind a proxy that buffers, the page polls instead.
Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Workers
from tests.dashboard_harness import BufferingProxy, Dashboard, chromium, screenshot, with_credentials
from tests.helpers import Repo, write_sample
from tests.slack_stub import SlackStub

pytestmark = pytest.mark.integration

S3 = "s3/acct-a/us-west-2/data-lake"


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    stub = SlackStub()
    yield stub
    stub.server.shutdown()


def _until(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _rows(driver: Any) -> dict[str, tuple[str, str]]:
    """What the page shows for each deployment row of the active runs: (status, phase)."""
    return driver.execute_script("""
        const out = {};
        for (const row of document.querySelectorAll("section.run.active tr[data-deployment]")) {
          out[row.dataset.deployment] = [row.querySelector('[data-field="status"]').textContent,
                                         row.querySelector('[data-field="phase"]').textContent];
        }
        return out;""")


def _watch_a_failing_run(repo: Repo, dash: Dashboard, tmp_path: Path, name: str) -> dict[str, Any]:
    """Open the page, then start an apply whose bucket fails half-way; follow it on the page, never reloading."""
    write_sample(repo, failing=True, delay=3)
    with chromium() as driver:
        driver.get(with_credentials(dash.url) + "/")
        _until("the page", lambda: driver.find_elements("id", "no-active"))
        driver.execute_script("window.__tfoNoReload = 42")
        out = tmp_path / f"{name}.json"
        proc = repo.popen("apply", "--json-out", str(out))
        phases: dict[str, set[str]] = {}

        # kept current by the stream, not by polling (the proxy test covers polling)
        assert driver.find_element("id", "live").get_attribute("data-mode") == "live"
        _until("the run to appear on the page", lambda: _rows(driver))
        shot = False

        def follow() -> bool:
            nonlocal shot
            rows = _rows(driver)
            for dep, (_status, phase) in rows.items():
                phases.setdefault(dep, set()).add(phase)
            if not shot and rows.get(S3, ("", ""))[1] == "apply":
                shot = bool(screenshot(driver, f"{name}-running"))  # a run in flight, as an operator sees it
            return proc.poll() is not None and not rows

        _until("the run to end on the page", follow, timeout=240, every=0.1)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 1, stdout + stderr
        assert driver.execute_script("return window.__tfoNoReload") == 42  # the same page all along
        assert len(phases) == 3, phases  # every deployment of the run was shown
        assert len(phases[S3]) >= 2, phases  # and the bucket's phase changed while the page looked
        assert phases[S3] & {"init", "plan", "backup", "apply", "rollback"}, phases
        report = json.loads(out.read_text())
        run_id = report["run_id"]
        _until("the run among the recent ones", lambda: driver.find_elements(
            "css selector", f'table.runs tr[data-run="{run_id}"]'))
        screenshot(driver, f"{name}-home")
        driver.get(with_credentials(dash.url) + f"/runs/{run_id}")
        # read in one go: the page redraws itself when anything changes, so elements do not stay
        shown = _until("the run page", lambda: driver.execute_script("""
            const row = document.querySelector(`tr[data-deployment="${arguments[0]}"]`);
            const error = document.querySelector(`tr[data-error-for="${arguments[0]}"]`);
            return row && error && {status: row.dataset.status, error: error.textContent,
                                    rollback: row.querySelector('[data-field="rollback"]').textContent};""", S3))
        assert shown["status"] == "rolled_back" and "matches target" in shown["rollback"], shown
        assert "failed on purpose" in shown["error"]  # the failure and the rollback, both
        screenshot(driver, f"{name}-run")
        driver.get(with_credentials(dash.url) + f"/deployments/{S3}")
        _until("the deployment page",
               lambda: len(driver.find_elements("css selector", "table.history tr[data-run]")) >= 2)
        screenshot(driver, f"{name}-deployment")
        console = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert console == [], console  # no script errors, nothing the policy blocked
        return report


def test_a_local_run_live_in_the_browser_and_its_alert(repo: Repo, tmp_path: Path, slack: SlackStub) -> None:
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + f'\n[tfo.alerts]\nslack_webhook_url = "{slack.url}"\n'
                    'dashboard_url = "https://tfo.example.com"\n')
    write_sample(repo)
    first = repo.tfo("apply")
    assert first.returncode == 0, first.stderr
    assert slack.messages == []  # a run that went through is nobody's news
    dash = Dashboard(repo, tmp_path / "dashboard.log")
    try:
        report = _watch_a_failing_run(repo, dash, tmp_path, "local")
    finally:
        dash.stop()
    (message,) = slack.messages
    assert f"run `{report['run_id']}` rolled back" in message and f"`{S3}` rolled_back" in message, message
    assert f"https://tfo.example.com/runs/{report['run_id']}" in message


def test_a_celery_run_live_in_the_browser(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo)
    first = repo.tfo("apply")
    assert first.returncode == 0, first.stderr
    dash = Dashboard(repo, tmp_path / "dashboard.log")
    try:
        report = _watch_a_failing_run(repo, dash, tmp_path, "celery")
        assert all(d["host"].startswith(("w1@", "w2@")) for d in report["deployments"]), report
        status, body, _ = dash.get("/metrics")
        assert status == 200 and b"tfo_workers_seen 2.0" in body, body[-2000:]
    finally:
        dash.stop()


def test_behind_a_proxy_that_buffers_the_page_polls(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    dash = Dashboard(repo, tmp_path / "dashboard.log")
    proxy = BufferingProxy(dash.port)
    try:
        with chromium() as driver:
            driver.get(with_credentials(proxy.url) + "/")
            _until("the page", lambda: driver.find_elements("id", "no-active"))
            badge = driver.find_element("id", "live")
            _until("the page to give up on the stream", lambda: badge.get_attribute("data-mode") == "polling",
                   timeout=20)
            driver.execute_script("window.__tfoNoReload = 7")
            done = repo.tfo("apply")
            assert done.returncode == 0, done.stderr
            _until("the new run, polled", lambda: driver.find_elements("css selector", "table.runs tr[data-run]"),
                   timeout=30)
            assert driver.execute_script("return window.__tfoNoReload") == 7
            assert any(p.startswith("/api/overview") for p in proxy.requests)
            screenshot(driver, "buffering-proxy")
    finally:
        proxy.close()
        dash.stop()


def test_every_route_of_a_running_dashboard_needs_credentials(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    dash = Dashboard(repo, tmp_path / "dashboard.log")
    try:
        _, body, _ = dash.get("/api/runs")
        run_id = json.loads(body)["runs"][0]["run_id"]
        for path in ("/", f"/runs/{run_id}", f"/deployments/{S3}", "/api/overview", "/api/runs",
                     f"/api/runs/{run_id}", f"/api/deployments/{S3}", "/api/events", "/metrics", "/healthz",
                     "/static/app.js"):
            code, body, headers = dash.get(path, auth=False)
            assert code == 401 and "Basic" in headers.get("www-authenticate", ""), (path, code)
            assert run_id.encode() not in body
        # open on a public address: refused, with the reason, and exit 2
        refused = repo.tfo("dashboard", "--listen", "0.0.0.0:1", "--no-auth")
        assert refused.returncode == 2 and "--no-auth only on loopback" in refused.stderr, refused.stderr
        refused = repo.tfo("dashboard", "--listen", "0.0.0.0:1", env={"TFO_DASHBOARD_BASIC_AUTH": ""})
        assert refused.returncode == 2 and "needs credentials" in refused.stderr, refused.stderr
    finally:
        dash.stop()
