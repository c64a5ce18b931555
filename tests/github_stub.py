"""A loopback HTTP server speaking the few GitHub REST calls tfo makes, recording every request."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: str


def _open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


@dataclass
class GitHubStub:
    fail_next: int = 0  # answer this many requests with 502 first
    # cleared: every request is recorded, then held unanswered until the gate is set again
    gate: threading.Event = field(default_factory=lambda: _open_gate())
    requests: list[Recorded] = field(default_factory=list)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)  # GET /repos/O/R/pulls/N answers
    login: str = "tfo-bot"  # who a token belongs to (GET /user), and so the author of its comments
    app_slug: str = "tfo-app"  # a GitHub App's (GET /app); its comments are "tfo-app[bot]"'s
    installation_id: int = 99  # GET /repos/O/R/installation
    token_lifetime_s: int = 3600  # of the installation tokens it mints
    # Canned answers (status, headers, body) given to the next requests, before anything else.
    queued: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    lose_post_answers: int = 0  # this many comment POSTs are carried out, then answered 502
    rate_limit_posts: int = 0  # this many comment POSTs are refused: a secondary rate limit, Retry-After 1
    minted: int = 0
    roles: dict[str, str] = field(default_factory=dict)  # login -> role on the repository (default none)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # GET /repos/O/R/pulls/N/reviews
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # POST /repos/O/R/issues, PATCH .../N
    _next_id: int = 100

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                stub.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
                stub.gate.wait(120)
                if stub.fail_next > 0:
                    stub.fail_next -= 1
                    self._reply(502, {"message": "bad gateway"})
                    return
                if stub.queued:
                    code, headers, answer = stub.queued.pop(0)
                    self._reply(code, answer, headers)
                    return
                path = self.path.split("?", 1)[0]
                parts = path.strip("/").split("/")
                auth = self.headers.get("Authorization", "")
                author = f"{stub.app_slug}[bot]" if auth.startswith("token ghs_") else stub.login
                if self.command == "GET" and path == "/user":
                    if auth.startswith("token ghs_"):
                        self._reply(403, {"message": "Resource not accessible by integration"})
                    else:
                        self._reply(200, {"login": stub.login})
                elif self.command == "GET" and path == "/app":
                    self._reply(200, {"slug": stub.app_slug})
                elif self.command == "GET" and len(parts) == 4 and parts[3] == "installation":
                    self._reply(200, {"id": stub.installation_id})
                elif self.command == "DELETE" and "/issues/comments/" in path:
                    stub.comments.pop(int(parts[-1]), None)
                    self._reply(204, None)
                elif self.command == "GET" and len(parts) == 6 and parts[3] == "collaborators":
                    role = stub.roles.get(parts[4], "none")
                    self._reply(200, {"permission": {"maintain": "write", "triage": "read"}.get(role, role),
                                      "role_name": role})
                elif self.command == "GET" and len(parts) == 6 and parts[3] == "pulls" and parts[5] == "reviews":
                    page = int((self.path.split("page=")[-1].split("&")[0]) if "&page=" in self.path else 1)
                    self._reply(200, stub.reviews.get(int(parts[4]), []) if page == 1 else [])
                elif self.command == "GET" and len(parts) == 6 and parts[3:5] == ["issues", "comments"]:
                    c = stub.comments.get(int(parts[5]))
                    if c is not None:
                        c = {"issue_url": f"https://api.github.com/repos/{parts[1]}/{parts[2]}/issues/{c['issue']}",
                             **c}
                    self._reply(200 if c else 404, c or {"message": "Not Found"})
                elif self.command == "GET" and len(parts) == 5 and parts[3] == "pulls":
                    pull = stub.pulls.get(int(parts[4]))
                    self._reply(200 if pull else 404, pull or {"message": "Not Found"})
                elif self.command == "GET" and path.endswith("/comments"):
                    number = int(parts[4])
                    self._reply(200, [c for c in stub.comments.values() if c["issue"] == number])
                elif self.command == "POST" and path.endswith("/comments") and stub.rate_limit_posts > 0:
                    stub.rate_limit_posts -= 1
                    self._reply(403, {"message": "You have exceeded a secondary rate limit."}, {"Retry-After": "1"})
                elif self.command == "POST" and path.endswith("/comments"):
                    stub._next_id += 1
                    c = {"id": stub._next_id, "issue": int(parts[4]), "body": json.loads(body)["body"],
                         "user": {"login": author, "type": "Bot" if author.endswith("[bot]") else "User"}}
                    stub.comments[c["id"]] = c
                    if stub.lose_post_answers > 0:
                        stub.lose_post_answers -= 1
                        self._reply(502, {"message": "bad gateway"})
                        return
                    self._reply(201, c)
                elif self.command == "POST" and len(parts) == 4 and parts[3] == "issues":
                    number = 1000 + len(stub.issues)
                    stub.issues[number] = {"number": number, "state": "open", **json.loads(body)}
                    self._reply(201, stub.issues[number])
                elif self.command == "PATCH" and len(parts) == 5 and parts[3] == "issues":
                    stub.issues[int(parts[4])].update(json.loads(body))
                    self._reply(200, stub.issues[int(parts[4])])
                elif self.command == "PATCH" and "/issues/comments/" in path:
                    c = stub.comments[int(parts[-1])]
                    c["body"] = json.loads(body)["body"]
                    self._reply(200, c)
                elif self.command == "POST" and "/statuses/" in path:
                    stub.statuses.append({"sha": parts[-1], **json.loads(body)})
                    self._reply(201, {})
                elif self.command == "POST" and path.endswith("/access_tokens"):
                    stub.minted += 1
                    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + stub.token_lifetime_s))
                    self._reply(201, {"token": "ghs_installationtokenvalue0123456789abcd", "expires_at": expires})
                else:
                    self._reply(404, {"message": "not found"})

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
