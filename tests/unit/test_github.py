"""The GitHub reporter against a loopback server that records every request."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator.errors import GitHubError
from orchestrator.github import STICKY_MARKER, GitHubAuth, GitHubClient, app_jwt, sticky_body
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
    # comments listed, none: created; listed again, it has the marker: whose is it (GET /user, once)
    assert [(r.method, r.path.split("?")[0]) for r in stub.requests] == [
        ("GET", "/repos/org/infra/issues/7/comments"), ("POST", "/repos/org/infra/issues/7/comments"),
        ("GET", "/repos/org/infra/issues/7/comments"), ("GET", "/user"),
        ("PATCH", f"/repos/org/infra/issues/comments/{first}")]
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
    c.set_status("org/infra", "c" * 40, "success", "tfo/plan", "done")
    token_call, status_call, second = stub.requests
    assert token_call.path == "/app/installations/99/access_tokens"
    assert token_call.headers["Authorization"].startswith("Bearer ")
    assert status_call.headers["Authorization"] == "token ghs_installationtokenvalue0123456789abcd"
    assert second.path.startswith("/repos/org/infra/statuses/") and stub.minted == 1  # the token is reused


def test_sticky_body_keeps_short_reports_whole() -> None:
    assert sticky_body("hello") == STICKY_MARKER + "\nhello"


def app_client(stub: GitHubStub, **kw: object) -> GitHubClient:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return GitHubClient(stub.url, GitHubAuth(app_id="12345", app_private_key_pem=pem),  # type: ignore[attr-defined]
                        backoff_s=0.01, **kw)  # type: ignore[arg-type]


def test_app_installation_is_found_from_the_repository_and_its_token_renewed_near_expiry(stub: GitHubStub) -> None:
    stub.token_lifetime_s = 3600
    c = app_client(stub)
    assert c.token("org/infra") == "ghs_installationtokenvalue0123456789abcd"
    c.upsert_sticky_comment("org/infra", 3, "## plan")
    paths = [r.path for r in stub.requests]
    assert paths[:2] == ["/repos/org/infra/installation", "/app/installations/99/access_tokens"]
    assert paths.count("/repos/org/infra/installation") == 1 and stub.minted == 1
    (comment,) = stub.comments.values()
    assert comment["user"]["login"] == "tfo-app[bot]"
    stub.token_lifetime_s = 120  # the next token is close to expiry as soon as it is minted
    c._tokens.clear()
    c.token("org/infra")
    c.token("org/infra")
    assert stub.minted == 3  # renewed each time: under 5 minutes left


def test_the_sticky_comment_is_tfo_s_own_not_anyone_quoting_its_marker(stub: GitHubStub) -> None:
    stub.comments[1] = {"id": 1, "issue": 7, "body": STICKY_MARKER + "\nquoted by someone",
                        "user": {"login": "mallory"}}
    stub.comments[2] = {"id": 2, "issue": 7, "body": "> " + STICKY_MARKER + "\n> a quote",
                        "user": {"login": "tfo-bot"}}
    own = client(stub).upsert_sticky_comment("org/infra", 7, "## plan")
    assert own not in (1, 2)
    assert stub.comments[1]["body"].endswith("quoted by someone") and stub.comments[2]["body"].endswith("a quote")
    assert client(stub).upsert_sticky_comment("org/infra", 7, "## plan 2") == own
    assert sorted(stub.comments) == [1, 2, own]


def test_rate_limits_are_waited_out_within_a_bound(stub: GitHubStub, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    slept: list[float] = []
    reset = int(time.time()) + 300
    stub.queued = [(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                    {"message": "API rate limit exceeded"}),
                   (429, {"Retry-After": "120"}, {"message": "slow down"}),
                   (403, {}, {"message": "You have exceeded a secondary rate limit"})]
    with caplog.at_level(logging.WARNING, logger="tfo.github"):
        client(stub, sleep=slept.append).set_status("org/infra", "d" * 40, "success", "tfo/apply", "ok")
    assert 295 <= slept[0] <= 302 and slept[1:] == [120.0, 60.0]  # no 60 s cap on what GitHub asks for
    assert len(stub.statuses) == 1
    assert "rate limited (HTTP 403); waiting" in caplog.text
    stub.queued = [(429, {"Retry-After": "3600"}, {})]
    with pytest.raises(GitHubError, match="resets in 3600 s, beyond the 900 s"):
        client(stub, sleep=slept.append).set_status("org/infra", "d" * 40, "success", "tfo/apply", "ok")
    stub.queued = [(403, {}, {"message": "Resource not accessible by integration"})]
    with pytest.raises(GitHubError, match="403"):  # a permission problem is not waited out
        client(stub, sleep=slept.append).set_status("org/infra", "d" * 40, "success", "tfo/apply", "ok")


def test_a_comment_whose_answer_was_lost_is_not_posted_twice(stub: GitHubStub) -> None:
    stub.lose_post_answers = 1
    client(stub).upsert_sticky_comment("org/infra", 9, "## plan")
    assert len(stub.comments) == 1
    assert [r.method for r in stub.requests if "/comments" in r.path] == ["GET", "POST", "GET", "PATCH"]


def assert_balanced(body: str) -> None:
    """Every code fence closes, and every <details> outside them, in order."""
    fence, depth = "", 0
    for line in body.split("\n"):
        run = re.match(r"`{3,}", line)
        if fence:
            if run and line.strip() == "`" * len(line.strip()) and len(line.strip()) >= len(fence):
                fence = ""
            continue
        if run:
            fence = run.group(0)
            continue
        depth += line.count("<details>") - line.count("</details>")
        assert depth >= 0, body
    assert fence == "" and depth == 0, body[-500:]


def test_a_long_report_is_split_over_comments_each_whole_and_surplus_parts_are_deleted(stub: GitHubStub) -> None:
    from orchestrator.report import report_parts
    from tests.unit.test_report_bundle import run_result
    from tests.unit.test_report_markdown import PLAN_ONE, changed, details

    big = run_result([changed(i, text=PLAN_ONE * 60) for i in range(40)])  # ~1 MB of plan output
    limit = 60_000
    parts = report_parts(big, limit, max_parts=6)
    assert len(parts) == 6 and all(len(p) <= limit for p in parts)
    c = client(stub)
    ids = c.upsert_report("org/infra", 12, parts)
    assert len(ids) == 6 and len(stub.comments) == 6
    bodies = [stub.comments[i]["body"] for i in ids]
    assert bodies[0].startswith(STICKY_MARKER) and bodies[3].startswith("<!-- tfo:sticky-report:4 -->")
    for body in bodies:
        assert len(body) <= GITHUB_COMMENT_LIMIT and "part" in body.splitlines()[1]
        assert body.count("<details>") == body.count("</details>")
        assert_balanced(body)
    assert all("<details><summary>(continued)</summary>" in b for b in bodies[1:])
    shown = {d for body in bodies for d, _ in details(body) if not d.startswith("(")}
    assert len(shown) >= 30  # the split carries far more than one comment could

    small = run_result([changed(1)])
    again = c.upsert_report("org/infra", 12, report_parts(small, limit, max_parts=6))
    assert again == ids[:1] and list(stub.comments) == ids[:1]  # edited in place, the rest deleted


def test_statuses_link_to_the_dashboard_and_the_app_token_serves_the_clone(stub: GitHubStub, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.webhook import RunStarter
    from orchestrator import notify
    from orchestrator.config import load_config

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("TFO_GITHUB_APP_KEY", pem)
    (tmp_path / "tfo.toml").write_text(f'[tfo.github]\napi_url = "{stub.url}"\napp_id = "12345"\n'  # type: ignore[attr-defined]
                                       'dashboard_url = "https://tfo.example.com/"\n'
                                       '[tfo.webhook]\nrepository = "org/infra"\nremote_url = "x"\n')
    cfg = load_config(repo_root=tmp_path, environ={})
    error = notify.post_not_run(cfg, {"github": {"repo": "org/infra", "sha": "e" * 40, "pr": None}}, "apply",
                                "text", "did not start", run_id="20261128T000000Z-abc123")
    assert error == ""
    assert stub.statuses[-1]["target_url"] == "https://tfo.example.com/runs/20261128T000000Z-abc123"
    starter = RunStarter(cfg, submit=lambda c, r: None)
    assert starter._git_token("org/infra") == "ghs_installationtokenvalue0123456789abcd"  # the clone's
    assert starter._git_token("org/infra") == "ghs_installationtokenvalue0123456789abcd"
    assert stub.minted == 1  # one token for the status and both clones: cached per process
    assert "ghs_installationtokenvalue0123456789abcd" in starter.secrets  # redacted from its errors


def test_a_retry_after_of_zero_still_pauses_and_the_waits_are_bounded(stub: GitHubStub) -> None:
    slept: list[float] = []
    stub.queued = [(429, {"Retry-After": "0"}, {})] * 100
    with pytest.raises(GitHubError, match="rate limited"):
        client(stub, sleep=slept.append).set_status("org/infra", "d" * 40, "success", "tfo/apply", "ok")
    assert 0 < len(stub.requests) <= 31 and all(s >= 1 for s in slept)


def test_duplicate_report_comments_from_runs_finishing_together_are_removed(stub: GitHubStub) -> None:
    mine = {"login": "tfo-bot", "type": "User"}
    stub.comments[1] = {"id": 1, "issue": 4, "body": STICKY_MARKER + "\nrun a", "user": mine}
    stub.comments[2] = {"id": 2, "issue": 4, "body": STICKY_MARKER + "\nrun b", "user": mine}
    assert client(stub).upsert_sticky_comment("org/infra", 4, "## plan c") == 1
    assert list(stub.comments) == [1] and "plan c" in stub.comments[1]["body"]


def test_a_token_that_cannot_say_whose_it_is_edits_only_a_bot_s_comment(stub: GitHubStub) -> None:
    installation = GitHubClient(stub.url, GitHubAuth(token="ghs_" + "x" * 36), backoff_s=0.01)  # type: ignore[attr-defined]
    stub.comments[1] = {"id": 1, "issue": 6, "body": STICKY_MARKER + "\nquoted",
                        "user": {"login": "dev", "type": "User"}}
    stub.comments[2] = {"id": 2, "issue": 6, "body": STICKY_MARKER + "\nold report",
                        "user": {"login": "some-app[bot]", "type": "Bot"}}
    assert installation.upsert_sticky_comment("org/infra", 6, "## new") == 2
    assert stub.comments[1]["body"].endswith("quoted") and "## new" in stub.comments[2]["body"]
