"""The GitHub reporter against a loopback server that records every request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.github import STICKY_MARKER, GitHubAuth, GitHubClient, GitHubError, app_jwt, sticky_body
from orchestrator.report import GITHUB_COMMENT_LIMIT
from tests.github_stub import GitHubStub

TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def stub() -> Iterator[GitHubStub]:
    s = GitHubStub()
    s.url = s.start()  # type: ignore[attr-defined]
    yield s
    s.stop()


def client(stub: GitHubStub, **kw: object) -> GitHubClient:
    return GitHubClient(stub.url, GitHubAuth(token=TOKEN), backoff_s=0.01, **kw)  # type: ignore[attr-defined,arg-type]


def test_sticky_comment_is_created_once_then_edited(stub: GitHubStub) -> None:
    c = client(stub)
    first = c.upsert_sticky_comment("org/infra", 7, "## plan 1")
    second = c.upsert_sticky_comment("org/infra", 7, "## plan 2")
    assert first == second
    assert [r.method for r in stub.requests] == ["GET", "POST", "GET", "PATCH"]
    (comment,) = stub.comments.values()
    assert comment["body"].startswith(STICKY_MARKER) and "## plan 2" in comment["body"]
    assert stub.requests[1].headers["Authorization"] == f"token {TOKEN}"


def test_comment_respects_the_size_limit_and_carries_no_secret(stub: GitHubStub) -> None:
    huge = "x" * (GITHUB_COMMENT_LIMIT * 2) + "\npassword = hunter2hunter2\nAKIAIOSFODNN7EXAMPLE"
    client(stub).upsert_sticky_comment("org/infra", 8, "secret: token=abcdef123456\n" + huge)
    (comment,) = stub.comments.values()
    assert len(comment["body"]) <= GITHUB_COMMENT_LIMIT
    assert "truncated" in comment["body"]
    for r in stub.requests:
        assert "abcdef123456" not in r.body and "hunter2hunter2" not in r.body
        assert TOKEN not in r.body


def test_retries_on_502_then_succeeds(stub: GitHubStub) -> None:
    stub.fail_next = 2
    client(stub).set_status("org/infra", "a" * 40, "success", "tfo/apply", "run x: succeeded")
    assert [r.method for r in stub.requests] == ["POST", "POST", "POST"]
    assert stub.statuses == [{"sha": "a" * 40, "state": "success", "context": "tfo/apply",
                              "description": "run x: succeeded"}]


def test_gives_up_after_retries_with_a_clear_error(stub: GitHubStub) -> None:
    stub.fail_next = 100
    with pytest.raises(GitHubError, match="after retries: HTTP 502"):
        client(stub, max_retries=2).set_status("org/infra", "b" * 40, "failure", "tfo/plan", "d")
    assert len(stub.requests) == 3


def test_client_error_is_not_retried_and_names_the_call(stub: GitHubStub) -> None:
    with pytest.raises(GitHubError, match="404"):
        client(stub).request("GET", "/nope")
    assert len(stub.requests) == 1


def test_github_app_credentials(stub: GitHubStub) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    jwt = app_jwt("12345", pem, now=1_700_000_000)
    assert jwt.count(".") == 2
    c = GitHubClient(stub.url, GitHubAuth(app_id="12345", app_private_key_pem=pem, installation_id="99"),  # type: ignore[attr-defined]
                     backoff_s=0.01)
    c.set_status("org/infra", "c" * 40, "pending", "tfo/plan", "queued")
    token_call, status_call = stub.requests
    assert token_call.path == "/app/installations/99/access_tokens"
    assert token_call.headers["Authorization"].startswith("Bearer ")
    assert status_call.headers["Authorization"] == "token ghs_installationtokenvalue0123456789abcd"


def test_sticky_body_keeps_short_reports_whole() -> None:
    assert sticky_body("hello") == STICKY_MARKER + "\nhello"
