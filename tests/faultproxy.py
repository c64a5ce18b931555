"""An HTTP proxy in front of moto_server that takes one AWS service away on cue.

Everything passes through to the real server until a request of `service` matches `trigger`; from
then on that service is down (each request's connection is closed without an answer, as when S3 is
unreachable) until `restore()` or for `down_for_s` seconds. Other services (DynamoDB, STS) stay up:
the service is read from the SigV4 credential scope, so boto3 and Terraform's Go SDK are told apart
by what they sign, not by their paths.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass(frozen=True)
class Seen:
    at: float
    service: str
    method: str
    path: str
    dropped: bool


@dataclass
class FaultProxy:
    upstream: str
    service: str = "s3"
    trigger: Callable[[str, str], bool] = lambda method, path: False
    # For JSON-protocol services (DynamoDB), whose requests all go to "/": (X-Amz-Target, body) -> go down?
    target_trigger: Callable[[str, bytes], bool] | None = None
    down_for_s: float | None = None
    seen: list[Seen] = field(default_factory=list)
    _down_since: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        target = urlsplit(self.upstream)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and 100-continue, as real S3 clients expect

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                proxy._relay(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    # --- control --------------------------------------------------------------------------------
    @property
    def down(self) -> bool:
        with self._lock:
            if self._down_since is None:
                return False
            if self.down_for_s is not None and time.monotonic() - self._down_since > self.down_for_s:
                self._down_since = None
                return False
            return True

    def take_down(self) -> None:
        with self._lock:
            self._down_since = time.monotonic()

    def restore(self) -> None:
        with self._lock:
            self._down_since = None
        self.trigger = lambda method, path: False
        self.target_trigger = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def dropped(self) -> list[Seen]:
        return [s for s in self.seen if s.dropped]

    # --- relay ----------------------------------------------------------------------------------
    def _relay(self, h: BaseHTTPRequestHandler) -> None:
        body = self._read_body(h)
        scope = _SCOPE.search(h.headers.get("Authorization", ""))
        service = scope.group(1) if scope else ""
        target = h.headers.get("X-Amz-Target", "")
        cue = self.trigger(h.command, h.path) or (self.target_trigger is not None and self.target_trigger(target, body))
        if service == self.service and not self.down and cue:
            self.trigger, self.target_trigger = (lambda method, path: False), None  # one outage per cue
            self.take_down()
        drop = service == self.service and self.down
        self.seen.append(Seen(time.monotonic(), service, h.command, h.path, drop))
        if drop:
            h.close_connection = True
            h.connection.close()  # no answer at all: the client sees the endpoint vanish
            return
        conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and (k.lower() != "content-length" or h.command == "HEAD"):
                    h.send_header(k, v)
            if h.command != "HEAD":
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        finally:
            conn.close()

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(length) if length else b""
