"""Posting results back to GitHub: one sticky PR comment per PR, a commit status per run.

REST API with a configurable base URL (GitHub Enterprise), a token or GitHub App credentials,
retries with backoff on 5xx and 429. Bodies are built from redacted reports only.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from orchestrator.errors import GitHubError as GitHubError  # defined in errors.py, importable here too
from orchestrator.redaction import Redactor
from orchestrator.report import GITHUB_COMMENT_LIMIT

STICKY_MARKER = "<!-- tfo:sticky-report -->"
# Matched at the very start of a comment (a quote of it starts with "> "), part 1 unnumbered.
MARKER = re.compile(r"<!-- tfo:sticky-report(?::([0-9]{1,3}))? -->")
# What a report may take of a comment: the marker, and room for the second redaction pass of
# `sticky_body` to lengthen a value, so that its last-resort cut never splits a code fence.
REPORT_LIMIT = GITHUB_COMMENT_LIMIT - len(STICKY_MARKER) - 1024
RETRY_STATUSES = {500, 502, 503, 504}
MAX_RATE_LIMIT_WAITS = 30  # per call, whatever the waits add up to
log = logging.getLogger("tfo.github")


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
    author: str = ""  # the login that opened it
    mergeable: bool | None = None  # None: GitHub has not worked it out yet
    base_ref: str = ""  # the branch it merges into


WRITE_ROLES = ("admin", "maintain", "write")
ANY_BOT = "(a bot)"  # tfo's identity when its token cannot say whose it is


class GitHubClient:
    """GitHub's REST API as tfo uses it. One per process and credentials (see notify.github_client), so
    an App's installation tokens and tfo's own login are looked up once, not on every call."""

    def __init__(self, api_url: str, auth: GitHubAuth, *, max_retries: int = 4, backoff_s: float = 0.5,
                 timeout_s: float = 15, max_wait_s: float = 900, comment_author: str = "",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s  # the longest a call waits out rate limits in all
        self.sleep = sleep
        self.session = requests.Session()
        self._lock = threading.Lock()
        self._installations: dict[str, str] = {}  # repository -> installation id
        self._tokens: dict[str, tuple[str, float]] = {}  # installation id -> (token, expires at)
        self._identity = comment_author
        self._redactor = Redactor([v for v in (auth.token,) if v])

    # --- auth -----------------------------------------------------------------------------------
    @property
    def is_app(self) -> bool:
        return not self.auth.token and bool(self.auth.app_id and self.auth.app_private_key_pem)

    def _jwt(self) -> str:
        return f"Bearer {app_jwt(self.auth.app_id, self.auth.app_private_key_pem)}"

    def token(self, repo: str = "") -> str:
        """The token calls (and git) use: the configured one, or an App installation's, looked up from
        the repository when no installation id is configured, and minted again only near its expiry."""
        if self.auth.token:
            return self.auth.token
        if not self.is_app:
            raise GitHubError("no GitHub credentials: set a token or GitHub App id and key")
        with self._lock:
            installation = self.auth.installation_id or self._installations.get(repo, "")
            if not installation:
                if not repo:
                    raise GitHubError("a GitHub App without installation_id needs the repository to find it")
                data = self._send("GET", f"/repos/{repo}/installation", None, self._jwt())
                installation = self._installations[repo] = str(data["id"])
            token, expires = self._tokens.get(installation, ("", 0.0))
            if time.time() > expires - 300:
                data = self._send("POST", f"/app/installations/{installation}/access_tokens", None, self._jwt())
                token = str(data["token"])
                expires = _timestamp(str(data.get("expires_at", ""))) or time.time() + 3000
                self._redactor.add([token])
                self._tokens[installation] = (token, expires)
            return token

    def identity(self) -> str:
        """The login tfo's own comments are written under, so that a sticky comment is never someone else's."""
        if not self._identity:
            if self.is_app:
                self._identity = f"{self._send('GET', '/app', None, self._jwt())['slug']}[bot]"
            else:
                try:
                    self._identity = str(self.request("GET", "/user")["login"])
                except GitHubError as e:
                    # An installation token (Actions' GITHUB_TOKEN, an App's) cannot read /user; what it
                    # writes is a bot's, and people quoting the marker are not bots.
                    if " 403" not in str(e) and " 401" not in str(e):
                        raise
                    self._identity = ANY_BOT
        return self._identity

    def _is_mine(self, comment: dict[str, Any]) -> bool:
        user = comment.get("user") or {}
        me = self.identity()
        if me == ANY_BOT:
            return str(user.get("type", "")) == "Bot"
        return str(user.get("login", "")).lower() == me.lower()

    # --- transport ------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: dict[str, Any] | None, authorization: str, *,
              idempotent: bool = True) -> Any:
        """One call: rate limits are waited out (within max_wait_s); 5xx and lost connections are retried
        with backoff, unless the call is not idempotent (a POST that may have landed): then _Unsure."""
        url = path if path.startswith("http") else f"{self.api_url}{path}"
        headers = {"Accept": "application/vnd.github+json", "Authorization": authorization,
                   "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "tfo"}
        last = ""
        waited = 0.0
        limited = 0
        attempt = 0
        while True:
            try:
                r = self.session.request(method, url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {e}"
                if not idempotent:
                    raise _Unsure(last) from e
            else:
                if r.status_code < 300:
                    return r.json() if r.content else {}
                wait = _rate_limit_wait(r)
                if wait is not None:  # nothing was done: safe to send again, POST included
                    wait = max(wait, 1.0)  # "Retry-After: 0" or a reset already past: still a pause
                    limited += 1
                    if waited + wait > self.max_wait_s or limited > MAX_RATE_LIMIT_WAITS:
                        raise GitHubError(f"GitHub {method} {path}: rate limited; the limit resets in {wait:.0f} s, "
                                          f"beyond the {self.max_wait_s:.0f} s tfo waits")
                    log.warning("GitHub %s %s: rate limited (HTTP %d); waiting %.0f s", method, path,
                                r.status_code, wait)
                    self.sleep(wait)
                    waited += wait
                    continue
                if r.status_code not in RETRY_STATUSES:
                    raise GitHubError(self._redactor.redact(
                        f"GitHub {method} {path} failed with {r.status_code}: {r.text[:300]}"))
                last = f"HTTP {r.status_code}"
                if not idempotent:
                    raise _Unsure(last)
            if attempt >= self.max_retries:
                raise GitHubError(self._redactor.redact(f"GitHub {method} {path} failed after retries: {last}"))
            self.sleep(self.backoff_s * (2**attempt))
            attempt += 1

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, repo: str = "",
                idempotent: bool = True) -> Any:
        return self._send(method, path, body, f"token {self.token(repo)}", idempotent=idempotent)

    # --- what tfo posts -------------------------------------------------------------------------
    def _own_report_comments(self, repo: str, number: int) -> dict[int, list[int]]:
        """Part number -> ids of tfo's report comments on the PR (its own, by marker and author), oldest
        first; two runs finishing at once can each have created one."""
        found: dict[int, list[int]] = {}
        page = 1
        while True:
            comments = self.request("GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}",
                                    repo=repo)
            for c in comments:
                m = MARKER.match(str(c.get("body", "")))
                if m and self._is_mine(c):
                    found.setdefault(int(m.group(1) or 1), []).append(int(c["id"]))
            if len(comments) < 100:
                return found
            page += 1

    def upsert_sticky_comment(self, repo: str, number: int, markdown: str) -> int:
        """One report in one comment (see upsert_report)."""
        return self.upsert_report(repo, number, [markdown])[0]

    def upsert_report(self, repo: str, number: int, parts: list[str]) -> list[int]:
        """The PR's report as `parts` comments, each created once and then edited in place; parts left
        from a longer report are deleted. A create that may have landed is looked for, not repeated."""
        total = len(parts)
        existing = self._own_report_comments(repo, number)
        ids = []
        for i, markdown in enumerate(parts, start=1):
            body = sticky_body(markdown, part=i, parts=total)
            if i in existing:
                self.request("PATCH", f"/repos/{repo}/issues/comments/{existing[i][0]}", {"body": body}, repo=repo)
                ids.append(existing[i][0])
                continue
            ids.append(self._create_comment(repo, number, i, body))
        for i, comment_ids in sorted(existing.items()):
            for comment_id in comment_ids[1:] if i <= total else comment_ids:  # surplus parts and duplicates
                self.request("DELETE", f"/repos/{repo}/issues/comments/{comment_id}", repo=repo)
        return ids

    def _create_comment(self, repo: str, number: int, part: int, body: str) -> int:
        for attempt in range(self.max_retries + 1):
            try:
                created = self.request("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body}, repo=repo,
                                       idempotent=False)
                return int(created["id"])
            except _Unsure as e:
                landed = self._own_report_comments(repo, number).get(part)
                if landed:  # the POST went through; only its answer was lost
                    self.request("PATCH", f"/repos/{repo}/issues/comments/{landed[0]}", {"body": body}, repo=repo)
                    return landed[0]
                if attempt == self.max_retries:
                    raise GitHubError(f"GitHub POST comment on {repo}#{number} failed after retries: {e}") from e
                self.sleep(self.backoff_s * (2**attempt))
        raise AssertionError("unreachable")

    def pull_request(self, repo: str, number: int) -> PullRequest:
        data = self.request("GET", f"/repos/{repo}/pulls/{number}", repo=repo)
        head, base = data.get("head") or {}, data.get("base") or {}
        mergeable = data.get("mergeable")
        return PullRequest(number, str(head.get("sha", "")), str(base.get("sha", "")),
                           str((head.get("repo") or {}).get("full_name", "")), str(data.get("author_association", "")),
                           str(data.get("state", "")), str((data.get("user") or {}).get("login", "")),
                           mergeable if isinstance(mergeable, bool) else None, str(base.get("ref", "")))

    def approvers(self, repo: str, number: int, head_sha: str, author: str) -> tuple[str, ...]:
        """Who approves the pull request's head commit: each reviewer's latest deciding review (approve,
        request changes, dismissed) is an approval of exactly that commit; its author never counts."""
        latest: dict[str, tuple[str, str]] = {}
        page = 1
        while True:
            reviews = self.request("GET", f"/repos/{repo}/pulls/{number}/reviews?per_page=100&page={page}", repo=repo)
            if not isinstance(reviews, list) or not reviews:
                break
            for r in reviews:
                login, state = str((r.get("user") or {}).get("login", "")), str(r.get("state", ""))
                if login and state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                    latest[login.lower()] = (state, str(r.get("commit_id", "")))
            if len(reviews) < 100 or page >= 30:
                break
            page += 1
        return tuple(sorted(login for login, (state, commit) in latest.items()
                            if state == "APPROVED" and commit == head_sha and login != author.lower()))

    def comment(self, repo: str, comment_id: int) -> tuple[str, str, int]:
        """(author login, body, issue or pull request number) of an issue comment, as GitHub has it;
        ("", "", 0) when there is none."""
        try:
            data = self.request("GET", f"/repos/{repo}/issues/comments/{comment_id}", repo=repo)
        except GitHubError as e:
            if "failed with 404" in str(e):
                return "", "", 0
            raise
        number = str(data.get("issue_url", "")).rstrip("/").rsplit("/", 1)[-1]
        return (str((data.get("user") or {}).get("login", "")), str(data.get("body", "")),
                int(number) if number.isdigit() else 0)

    def role(self, repo: str, login: str) -> str:
        """The person's role on the repository (admin, maintain, write, triage, read), "none" if they have none."""
        try:
            data = self.request("GET", f"/repos/{repo}/collaborators/{login}/permission", repo=repo)
        except GitHubError as e:
            if "failed with 404" in str(e):
                return "none"
            raise
        return str(data.get("role_name") or data.get("permission") or "none")

    def set_status(self, repo: str, sha: str, state: str, context: str, description: str,
                   target_url: str = "") -> None:
        body: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        self.request("POST", f"/repos/{repo}/statuses/{sha}", body, repo=repo)  # the same status twice is harmless


class _Unsure(Exception):
    """A call that changes something failed in a way that does not say whether it was done."""


def _timestamp(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


def _rate_limit_wait(r: requests.Response) -> float | None:
    """Seconds to wait before sending again when GitHub says the call was rate limited, else None."""
    if r.status_code not in (403, 429):
        return None
    retry_after = r.headers.get("Retry-After", "")
    if retry_after.isdigit():
        return float(retry_after)
    if r.headers.get("x-ratelimit-remaining") == "0" and r.headers.get("x-ratelimit-reset", "").isdigit():
        return max(1.0, float(r.headers["x-ratelimit-reset"]) - time.time() + 1)
    if r.status_code == 429 or "rate limit" in r.text.lower():
        return 60.0  # a secondary limit without a hint: GitHub asks for at least a minute
    return None  # a 403 that is a permission problem


def sticky_body(markdown: str, limit: int = GITHUB_COMMENT_LIMIT, part: int = 1, parts: int = 1) -> str:
    """The part's marker plus the (already redacted) report, cut to GitHub's comment limit with a note."""
    head = (STICKY_MARKER if part == 1 else f"<!-- tfo:sticky-report:{part} -->") + "\n"
    if parts > 1:
        head += f"_tfo report, part {part} of {parts}_\n\n"
    text = Redactor().redact(markdown)
    if len(head) + len(text) <= limit:
        return head + text
    note = "\n\n_report truncated to fit GitHub's comment limit; the full output is in the audit record_\n"
    return head + text[: limit - len(head) - len(note)] + note
