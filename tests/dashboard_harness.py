"""A real `tfo dashboard` process, a real headless Chromium driven by Selenium, and a proxy that buffers every
response whole (as some corporate proxies do with streams), for the dashboard's end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers import Repo, free_port

USER, PASSWORD = "viewer", "Dash-b0ard-Pa55"
ROOT = Path(__file__).resolve().parents[1]
# Screenshots of what a person saw, kept after the run (CI can upload the directory).
ARTIFACTS = Path(os.environ.get("TFO_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"


class Dashboard:
    def __init__(self, repo: Repo, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dashboard",
             "--listen", f"127.0.0.1:{self.port}"],
            cwd=repo.root, env={**repo.env, "TFO_DASHBOARD_BASIC_AUTH": f"{USER}:{PASSWORD}",
                                "TFO_DASHBOARD_REFRESH_S": "0.5", **(env or {})},
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.get("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def get(self, path: str, auth: bool = True, base: str = "") -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request((base or self.url) + path)  # noqa: S310 - our own http URL
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
                return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """Debian's chromium, headless, through chromium-driver; a test fails (never skips) without them."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.binary_location = browser
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield d
    finally:
        d.quit()


def with_credentials(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{USER}:{PASSWORD}@{rest}"


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


class BufferingProxy:
    """Forwards every request to `upstream`, but answers only once the whole upstream response is in: a
    stream of events reaches the browser only when the stream ends (STREAM_MAX_S later), as behind a proxy
    that buffers. Everything else works as usual."""

    def __init__(self, upstream_port: int) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                try:
                    conn.request("GET", self.path, headers=headers)
                    r = conn.getresponse()
                    body = r.read()  # all of it: the buffering
                except (OSError, http.client.HTTPException):
                    with contextlib.suppress(OSError):  # the browser went away too
                        self.send_error(502)
                    return
                finally:
                    conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                proxy.requests.append(self.path)

        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
