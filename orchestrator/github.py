"""Posting results back to GitHub: one sticky PR comment per PR, a commit status per run.

REST API with a configurable base URL (GitHub Enterprise), a token or GitHub App credentials,
retries with backoff on 5xx and 429. Bodies are built from redacted reports only.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from orchestrator.errors import PlatformError
from orchestrator.redaction import Redactor
from orchestrator.report import GITHUB_COMMENT_LIMIT

STICKY_MARKER = "<!-- tfo:sticky-report -->"
# What a report may take of a comment: the marker, and room for the second redaction pass of
# `sticky_body` to lengthen a value, so that its last-resort cut never splits a code fence.
REPORT_LIMIT = GITHUB_COMMENT_LIMIT - len(STICKY_MARKER) - 1024
RETRY_STATUSES = {429, 500, 502, 503, 504}


class GitHubError(PlatformError):
    """GitHub refused or could not be reached after retries."""


@dataclass(frozen=True)
class GitHubAuth:
    token: str = ""
    app_id: str = ""
    app_private_key_pem: str = ""
    installation_id: str = ""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key_pem: str, now: float | None = None) -> str:
    """RS256 JWT for a GitHub App (valid 9 minutes, issued 60 s in the past for clock skew)."""
    now = int(now if now is not None else time.time())
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"iat": now - 60, "exp": now + 540, "iss": app_id}).encode())
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise GitHubError("GitHub App private key must be an RSA key")
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str
    base_sha: str
    head_repo: str  # "" when the fork was deleted
    author_association: str
    state: str


class GitHubClient:
    def __init__(self, api_url: str, auth: GitHubAuth, *, max_retries: int = 4, backoff_s: float = 0.5,
                 timeout_s: float = 15, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.session = requests.Session()
        self._installation_token: tuple[str, float] | None = None
        self._redactor = Redactor([v for v in (auth.token,) if v])

    # --- auth -----------------------------------------------------------------------------------
    def _authorization(self) -> str:
        if self.auth.token:
            return f"token {self.auth.token}"
        if self.auth.app_id and self.auth.app_private_key_pem and self.auth.installation_id:
            token, expires = self._installation_token or ("", 0.0)
            if time.time() > expires - 60:
                jwt = app_jwt(self.auth.app_id, self.auth.app_private_key_pem)
                data = self._send("POST", f"/app/installations/{self.auth.installation_id}/access_tokens",
                                  None, f"Bearer {jwt}")
                token = str(data["token"])
                self._redactor.add([token])
                self._installation_token = (token, time.time() + 3000)
            return f"token {token}"
        raise GitHubError("no GitHub credentials: set a token or GitHub App id, key and installation id")

    # --- transport ------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: dict[str, Any] | None, authorization: str) -> Any:
        url = path if path.startswith("http") else f"{self.api_url}{path}"
        headers = {"Accept": "application/vnd.github+json", "Authorization": authorization,
                   "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "tfo"}
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                r = self.session.request(method, url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 300:
                    return r.json() if r.content else {}
                if r.status_code not in RETRY_STATUSES:
                    raise GitHubError(self._redactor.redact(
                        f"GitHub {method} {path} failed with {r.status_code}: {r.text[:300]}"))
                last = f"HTTP {r.status_code}"
                retry_after = r.headers.get("Retry-After", "")
                if retry_after.isdigit() and attempt < self.max_retries:
                    self.sleep(min(float(retry_after), 60.0))
                    continue
            if attempt < self.max_retries:
                self.sleep(self.backoff_s * (2**attempt))
        raise GitHubError(self._redactor.redact(f"GitHub {method} {path} failed after retries: {last}"))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send(method, path, body, self._authorization())

    # --- what tfo posts -------------------------------------------------------------------------
    def upsert_sticky_comment(self, repo: str, number: int, markdown: str) -> int:
        """Create the PR's tfo comment once, then edit it in place. Returns the comment id."""
        body = sticky_body(markdown)
        page = 1
        while True:
            comments = self.request("GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}")
            for c in comments:
                if STICKY_MARKER in str(c.get("body", "")):
                    self.request("PATCH", f"/repos/{repo}/issues/comments/{c['id']}", {"body": body})
                    return int(c["id"])
            if len(comments) < 100:
                break
            page += 1
        created = self.request("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body})
        return int(created["id"])

    def pull_request(self, repo: str, number: int) -> PullRequest:
        data = self.request("GET", f"/repos/{repo}/pulls/{number}")
        head, base = data.get("head") or {}, data.get("base") or {}
        return PullRequest(number, str(head.get("sha", "")), str(base.get("sha", "")),
                           str((head.get("repo") or {}).get("full_name", "")), str(data.get("author_association", "")),
                           str(data.get("state", "")))

    def set_status(self, repo: str, sha: str, state: str, context: str, description: str,
                   target_url: str = "") -> None:
        body: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        self.request("POST", f"/repos/{repo}/statuses/{sha}", body)


def sticky_body(markdown: str, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """The marker plus the (already redacted) report, cut to GitHub's comment limit with a note."""
    head = STICKY_MARKER + "\n"
    text = Redactor().redact(markdown)
    if len(head) + len(text) <= limit:
        return head + text
    note = "\n\n_report truncated to fit GitHub's comment limit; the full output is in the audit record_\n"
    return head + text[: limit - len(head) - len(note)] + note
