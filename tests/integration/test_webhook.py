"""The webhook served by waitress on loopback: signed GitHub events for a local git remote enqueue runs
on a real Redis and real workers; results come back to a recording GitHub stub."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.github import STICKY_MARKER
from orchestrator.report import GITHUB_COMMENT_LIMIT
from tests.cluster import REDIS_PASSWORD, Workers
from tests.github_stub import GitHubStub
from tests.helpers import EXAMPLE, SECRET_PASSWORD, SECRET_TOKEN, Repo, free_port, write_sample
from tests.integration.test_untrusted_code import add_probe, probe_environ

pytestmark = pytest.mark.integration
SECRET = "webhook-shared-secret-4242"
Stack = tuple[Repo, "Hook", GitHubStub, Path, dict[str, str]]
GH_TOKEN = "ghp_stubtoken0123456789abcdefghijklmnopqr"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.email=dev@example.com", "-c", "user.name=dev", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


class Hook:
    def __init__(self, url: str, launch: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.url = url
        self.launch = launch
        self.proc = launch()

    def wait_healthy(self, log: Path) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):  # noqa: S310
                    return
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, log.read_text()
                time.sleep(0.2)

    def send(self, event: str, payload: dict[str, Any] | bytes, *, delivery: str | None = None,
             secret: str | None = SECRET, signature: str | None = None, form: bool = False
             ) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if form:  # GitHub's default content type for a new webhook
            body = urllib.parse.urlencode({"payload": body.decode()}).encode()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                   "Content-Type": "application/x-www-form-urlencoded" if form else "application/json"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        elif secret is not None:
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(self.url + "/webhook", data=body, headers=headers,  # noqa: S310 - loopback
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback test server
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return e.code, {"raw": raw.decode(errors="replace")}


@pytest.fixture
def stack(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> Iterator[Stack]:
    server, workers = celery_repo
    # the infra repository, as a git remote
    work = tmp_path / "infra-work"
    shutil.copytree(EXAMPLE / "terraform", work / "terraform")
    (work / "tfo.toml").write_text('[tfo]\nrollback = "reapply"\n')
    infra = Repo(work, server.world, server.env)
    write_sample(infra)
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "base")
    remote = tmp_path / "infra.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(remote)], check=True)
    git(work, "remote", "add", "origin", str(remote))
    base = git(work, "rev-parse", "HEAD")

    stub = GitHubStub()
    api = stub.start()
    toml = server.root / "tfo.toml"
    toml.write_text(toml.read_text() + f"""
[tfo.webhook]
repository = "org/infra"
remote_url = "{remote}"
mirror_dir = "{tmp_path}/mirror"
apply_branch = "main"
max_body_bytes = 200000
apply_on = "both"

[tfo.github]
api_url = "{api}"
""")
    server.env.update({"TFO_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": GH_TOKEN})
    workers.start("w1")
    port = free_port()
    log = open(tmp_path / "webhook.log", "ab")  # noqa: SIM115 - closed below

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "webhook", "--listen", f"127.0.0.1:{port}"],
                                cwd=server.root, env=server.env, stdout=log, stderr=subprocess.STDOUT)

    hook = Hook(f"http://127.0.0.1:{port}", launch)
    hook.wait_healthy(tmp_path / "webhook.log")
    yield server, hook, stub, work, {"base": base}
    stub.gate.set()
    hook.proc.terminate()
    hook.proc.wait(timeout=20)
    log.close()
    stub.stop()


def _summary(server: Repo, run_id: str, timeout: float = 180) -> dict[str, Any]:
    path = server.root / ".tfo" / "store" / "runs" / f"{run_id}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"run {run_id} never finished"
        time.sleep(0.5)
    time.sleep(0.5)  # the notification follows the summary
    return json.loads(path.read_text())


def _push(work: Path, before: str, ref: str = "refs/heads/main") -> dict[str, Any]:
    return {"ref": ref, "before": before, "after": git(work, "rev-parse", "HEAD"),
            "repository": {"full_name": "org/infra"}, "sender": {"login": "dev"}}


def _pr(action: str, number: int, head: str, base: str, head_repo: str = "org/infra", association: str = "MEMBER",
        sender: str = "dev") -> dict[str, Any]:
    return {"action": action, "number": number, "repository": {"full_name": "org/infra"}, "sender": {"login": sender},
            "pull_request": {"number": number, "head": {"sha": head, "repo": {"full_name": head_repo}},
                             "base": {"sha": base}, "author_association": association}}


def test_signatures_sizes_events_and_ping(stack: Stack) -> None:
    _, hook, stub, _, _ = stack
    assert hook.send("ping", {"zen": "hi"}) == (200, {"status": "pong"})
    assert hook.send("ping", {"zen": "hi"}, secret="wrong-secret")[0] == 401
    assert hook.send("ping", {"zen": "hi"}, secret=None)[0] == 401
    assert hook.send("ping", {"zen": "hi"}, signature="sha1=abc")[0] == 401
    assert hook.send("push", b"x" * 300_000)[0] == 413
    code, body = hook.send("issues", {"action": "opened"})
    assert code == 200 and body["status"] == "ignored"
    code, body = hook.send("installation", {"action": "created", "installation": {"id": 1}})
    assert code == 200 and body["status"] == "ignored"  # a GitHub App always gets these: not a failed delivery
    code, body = hook.send("push", {"ref": "refs/heads/feature", "before": "a" * 40, "after": "b" * 40,
                                    "repository": {"full_name": "org/infra"}})
    assert code == 200 and body["status"] == "ignored"
    assert stub.requests == []


def test_push_to_main_applies_and_replay_is_ignored(stack: Stack) -> None:
    server, hook, stub, work, refs = stack
    p = work / "Accounts/acct-b/platform.tfvars"
    p.write_text(p.read_text() + "\n# touched\n")
    git(work, "commit", "-qam", "touch platform")
    git(work, "push", "-q", "origin", "main")
    delivery = str(uuid.uuid4())
    start = time.monotonic()
    code, body = hook.send("push", _push(work, refs["base"]), delivery=delivery)
    answered_in = time.monotonic() - start
    assert code == 202 and body["action"] == "apply", body
    assert answered_in < 10  # answered at once: the run is prepared in the background
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "succeeded"
    assert [d["id"] for d in summary["deployments"]] == ["iam/acct-b/us-east-1/platform"]  # only what changed
    assert set(server.world_state()) == {"iam.acct-b.us-east-1.platform.deployer"}
    # a replayed delivery starts nothing
    assert hook.send("push", _push(work, refs["base"]), delivery=delivery) == (200, {"status": "duplicate",
                                                                                   "delivery": delivery})
    time.sleep(2)
    runs = [p for p in (server.root / ".tfo/store/runs").glob("*.json") if not p.name.endswith("meta.json")]
    assert len(runs) == 1
    sha = git(work, "rev-parse", "HEAD")
    states = [(s["sha"], s["state"], s["context"]) for s in stub.statuses]
    assert states == [(sha, "pending", "tfo/apply"), (sha, "success", "tfo/apply")]


def test_pull_request_plans_and_keeps_one_sticky_comment(
        stack: Stack) -> None:
    server, hook, stub, work, refs = stack
    git(work, "checkout", "-q", "-b", "feature")
    p = work / "Accounts/acct-a/data-lake.tfvars"
    p.write_text(p.read_text().replace("curated = { versioning = true }", "curated = { versioning = false }"))
    git(work, "commit", "-qam", "change data lake")
    git(work, "push", "-q", "origin", "feature")

    def pr(action: str) -> dict[str, Any]:
        return _pr(action, 17, git(work, "rev-parse", "HEAD"), refs["base"])

    code, body = hook.send("pull_request", pr("opened"))
    assert code == 202 and body["action"] == "plan"
    assert _summary(server, body["run_id"])["status"] == "succeeded"
    assert server.world_state() == {}  # a plan changes nothing
    p.write_text(p.read_text().replace("raw     = { versioning = true }", "raw     = { versioning = false }"))
    git(work, "commit", "-qam", "more")
    git(work, "push", "-q", "origin", "feature")
    code, body = hook.send("pull_request", pr("synchronize"))
    assert code == 202
    _summary(server, body["run_id"])
    assert hook.send("pull_request", {**pr("closed")})[1]["status"] == "released"  # its reservations go

    comment_calls = [r.method for r in stub.requests if "/comments" in r.path and r.method != "GET"]
    assert comment_calls == ["POST", "PATCH"]  # created once, then edited in place
    (comment,) = stub.comments.values()
    assert comment["issue"] == 17 and body["run_id"] in comment["body"]
    assert "s3/acct-a/us-west-2/data-lake" in comment["body"]
    for r in stub.requests:  # nothing secret in anything sent to GitHub
        assert SECRET_TOKEN not in r.body and SECRET_PASSWORD not in r.body and GH_TOKEN not in r.body
    assert all(s["context"] == "tfo/plan" for s in stub.statuses)


def test_invalid_change_is_reported_and_nothing_runs(stack: Stack) -> None:
    server, hook, stub, work, refs = stack
    (work / "Accounts/acct-a/broken.tfvars").write_text("s3_buckets = {\n  raw = \n}\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "broken")
    git(work, "push", "-q", "origin", "main")
    code, body = hook.send("push", _push(work, refs["base"]))
    assert code == 202
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "invalid" and "broken.tfvars" in summary["error"]
    assert server.world_state() == {}
    assert stub.statuses[-1]["state"] == "failure"


def test_an_event_accepted_just_before_the_webhook_dies_runs_when_it_restarts(stack: Stack, tmp_path: Path) -> None:
    server, hook, stub, work, refs = stack
    p = work / "Accounts/acct-b/platform.tfvars"
    p.write_text(p.read_text() + "\n# touched\n")
    git(work, "commit", "-qam", "touch platform")
    git(work, "push", "-q", "origin", "main")
    stub.gate.clear()  # GitHub holds the "pending" status call, made just before the run is enqueued
    code, body = hook.send("push", _push(work, refs["base"]))
    assert code == 202, body
    run_id = body["run_id"]
    deadline = time.monotonic() + 60
    while not any("/statuses/" in r.path for r in stub.requests):
        assert time.monotonic() < deadline, "the background thread never got as far as the pending status"
        time.sleep(0.05)
    hook.proc.kill()  # the webhook dies between its 202 and the enqueue
    hook.proc.wait(timeout=10)
    stub.gate.set()
    spool = server.root / ".tfo" / "webhook-spool"
    assert [f.name for f in spool.iterdir()] == [f"{run_id}.json"]  # the accepted job is on disk
    time.sleep(2)
    assert not (server.root / ".tfo" / "store" / "runs" / f"{run_id}.json").exists()  # nothing was enqueued

    hook.proc = hook.launch()  # systemd brings it back
    hook.wait_healthy(tmp_path / "webhook.log")
    summary = _summary(server, run_id)
    assert summary["status"] == "succeeded", (summary, (tmp_path / "webhook.log").read_text()[-3000:])
    assert [d["id"] for d in summary["deployments"]] == ["iam/acct-b/us-east-1/platform"]
    assert set(server.world_state()) == {"iam.acct-b.us-east-1.platform.deployer"}
    assert list(spool.iterdir()) == []
    assert f"resuming run {run_id}" in (tmp_path / "webhook.log").read_text()
    sha = git(work, "rev-parse", "HEAD")
    assert (sha, "success", "tfo/apply") in [(s["sha"], s["state"], s["context"]) for s in stub.statuses]


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _runs(server: Repo) -> list[Path]:
    return [p for p in (server.root / ".tfo/store/runs").glob("*.json") if not p.name.endswith("meta.json")]


def _said(stub: GitHubStub, pr: int, login: str, body: str, association: str = "MEMBER") -> dict[str, Any]:
    """A comment that exists on GitHub (tfo reads it back), as an issue_comment event carries it."""
    cid = 5000 + len(stub.comments)
    stub.comments[cid] = {"id": cid, "issue": pr, "body": body, "user": {"login": login, "type": "User"}}
    return {"id": cid, "body": body, "author_association": association}


def _fork_branch(work: Path, remote_ref: str) -> str:
    """A commit that exists in the repository only as a pull request's head (as a fork's does on GitHub)."""
    git(work, "checkout", "-q", "-b", f"fork-{uuid.uuid4().hex[:8]}")
    p = work / "Accounts/acct-a/data-lake.tfvars"
    p.write_text(p.read_text().replace("curated = { versioning = true }", "curated = { versioning = false }")
                 + f"# {uuid.uuid4()}\n")
    git(work, "commit", "-qam", "a fork's change")
    sha = git(work, "rev-parse", "HEAD")
    git(work, "push", "-q", "origin", f"+HEAD:{remote_ref}")  # a fork may force-push
    git(work, "checkout", "-q", "main")
    return sha


def test_fork_and_outside_contributor_prs_are_not_planned_until_a_member_names_the_commit(stack: Stack) -> None:
    server, hook, stub, work, refs = stack
    head = _fork_branch(work, "refs/pull/21/head")
    code, body = hook.send("pull_request", _pr("opened", 21, head, refs["base"], head_repo="mallory/infra",
                                               association="NONE", sender="mallory"))
    assert (code, body["status"]) == (200, "refused") and "fork (mallory/infra)" in body["reason"]
    _wait_for("the explanation on the PR", lambda: len(stub.comments) == 1)
    (comment,) = stub.comments.values()
    assert comment["issue"] == 21 and f"/tfo plan {head}" in comment["body"] and "fork" in comment["body"]
    _wait_for("the status", lambda: bool(stub.statuses))
    assert [(s["sha"], s["state"], s["context"]) for s in stub.statuses] == [(head, "failure", "tfo/plan")]

    # an outside contributor's PR from a branch of the repository itself: the same
    git(work, "push", "-q", "origin", f"{head}:refs/heads/outsider")
    code, body = hook.send("pull_request", _pr("opened", 22, head, refs["base"], association="CONTRIBUTOR",
                                               sender="outsider"))
    assert (code, body["status"]) == (200, "refused") and "CONTRIBUTOR" in body["reason"]
    # anyone may comment; only an allowed association's command counts
    drive_by = {"action": "created", "repository": {"full_name": "org/infra"}, "sender": {"login": "mallory"},
                "issue": {"number": 21, "pull_request": {}},
                "comment": {"body": f"/tfo plan {head}", "author_association": "NONE"}}
    code, body = hook.send("issue_comment", drive_by)
    assert code == 200 and body["status"] == "ignored" and "association" in body["reason"]
    time.sleep(2)
    assert _runs(server) == [] and server.world_state() == {}

    stub.pulls[21] = {"number": 21, "state": "open", "author_association": "NONE", "user": {"login": "mallory"},
                      "head": {"sha": head, "repo": {"full_name": "mallory/infra"}}, "base": {"sha": refs["base"]}}
    sticky = stub.comments[min(stub.comments)]
    # an organisation member with read access only: their association is MEMBER, their role is not enough
    stub.roles["reader"] = "read"
    reader = {**drive_by, "sender": {"login": "reader"}, "comment": _said(stub, 21, "reader", f"/tfo plan {head}")}
    assert hook.send("issue_comment", reader)[0] == 202
    _wait_for("the refusal of a reader's command", lambda: "whose role on org/infra is read" in sticky["body"])
    # a prefix of the commit is not enough (a second commit can share it)
    stub.roles["maintainer"] = "write"
    prefix = {**drive_by, "sender": {"login": "maintainer"},
              "comment": {"body": f"/tfo plan {head[:12]}", "author_association": "MEMBER"}}
    assert hook.send("issue_comment", prefix)[1]["status"] == "ignored"
    time.sleep(1)
    assert _runs(server) == []

    # nobody approves their own untrusted pull request, whatever their role
    stub.roles["mallory"] = "write"
    own = {**drive_by, "comment": _said(stub, 21, "mallory", f"/tfo plan {head}", "COLLABORATOR")}
    assert hook.send("issue_comment", own)[0] == 202
    _wait_for("the refusal of a self-approval", lambda: "mallory opened it" in sticky["body"])
    assert _runs(server) == []

    # a maintainer reviewed the fork's commit and names it: that commit is planned, nothing is applied
    review = {**drive_by, "sender": {"login": "maintainer"},
              "comment": _said(stub, 21, "maintainer", f"/tfo plan {head}")}
    # the same command as a signed event, but no such comment on GitHub: dropped
    forged = {**review, "comment": {"id": 999999, "body": f"/tfo plan {head}", "author_association": "MEMBER"}}
    code, dropped = hook.send("issue_comment", forged)
    assert code == 202
    code, body = hook.send("issue_comment", review)
    assert code == 202 and body["action"] == "plan", body
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "succeeded", summary
    assert {d["id"] for d in summary["deployments"]} == {"s3/acct-a/us-west-2/data-lake",
                                                         "kms/acct-a/us-west-2/data-lake"}  # the file's
    assert server.world_state() == {}
    assert not (server.root / ".tfo/store/runs" / f"{dropped['run_id']}.json").exists()
    assert body["run_id"] in stub.comments[min(stub.comments)]["body"]  # the same sticky comment, now the plan

    # the fork pushes again after the review: the old command no longer matches the head
    newer = _fork_branch(work, "refs/pull/21/head")
    stub.pulls[21]["head"]["sha"] = newer
    code, body = hook.send("issue_comment", review)
    assert code == 202
    _wait_for("the refusal of a stale command", lambda: f"/tfo plan {newer}" in sticky["body"])
    assert "not the commit" in sticky["body"]
    assert not (server.root / ".tfo/store/runs" / f"{body['run_id']}.json").exists()


def test_foreign_repository_form_encoded_push_and_a_failed_start_then_redeliver(stack: Stack) -> None:
    server, hook, stub, work, refs = stack
    p = work / "Accounts/acct-b/platform.tfvars"
    p.write_text(p.read_text() + "\n# touched\n")
    git(work, "commit", "-qam", "touch platform")
    foreign = {**_push(work, refs["base"]), "repository": {"full_name": "someone/else"}}
    code, body = hook.send("push", foreign)
    assert code == 200 and body["status"] == "ignored" and "someone/else" in body["reason"]

    # GitHub's default (form-encoded) delivery of a push whose commit the remote does not have yet
    delivery = str(uuid.uuid4())
    code, body = hook.send("push", _push(work, refs["base"]), delivery=delivery, form=True)
    assert code == 202, body
    failed = _summary(server, body["run_id"])
    assert failed["status"] == "failed" and "checkout" in failed["error"].lower(), failed
    sha = git(work, "rev-parse", "HEAD")
    _wait_for("the failure status", lambda: any(s["state"] == "failure" for s in stub.statuses))
    assert (sha, "failure", "tfo/apply") in [(s["sha"], s["state"], s["context"]) for s in stub.statuses]
    assert server.world_state() == {}

    git(work, "push", "-q", "origin", "main")  # the cause is fixed; the operator presses Redeliver
    code, body = hook.send("push", _push(work, refs["base"]), delivery=delivery, form=True)
    assert code == 202, body  # the same delivery id, not taken for a replay
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "succeeded"
    assert set(server.world_state()) == {"iam.acct-b.us-east-1.platform.deployer"}
    assert (sha, "success", "tfo/apply") in [(s["sha"], s["state"], s["context"]) for s in stub.statuses]
    assert hook.send("push", _push(work, refs["base"]), delivery=delivery, form=True)[1]["status"] == "duplicate"


def test_a_member_pr_whose_module_reads_the_environment_gets_none_of_tfo_secrets(stack: Stack,
                                                                                tmp_path: Path) -> None:
    server, hook, stub, work, refs = stack
    git(work, "checkout", "-q", "-b", "probe")
    add_probe(work / "terraform")  # a trusted author's PR can still carry a compromised module
    git(work, "commit", "-qam", "read the environment")
    git(work, "push", "-q", "origin", "probe")
    code, body = hook.send("pull_request", _pr("opened", 31, git(work, "rev-parse", "HEAD"), refs["base"]))
    assert code == 202, body
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "succeeded", summary
    (comment,) = stub.comments.values()
    seen = probe_environ(comment["body"])  # base64 survives redaction: what terraform saw, in full
    assert seen["TFOTEST_WORLD"] == str(server.world) and seen["TF_IN_AUTOMATION"] == "1"
    assert {"GITHUB_TOKEN", "TFO_WEBHOOK_SECRET"} & set(seen) == set()
    audit = server.tfo("audit", "show", body["run_id"], "--unredacted")
    assert audit.returncode == 0, audit.stderr
    log = "".join(f.read_text(errors="replace") for f in tmp_path.glob("*.log"))
    for where, text in (("comment", comment["body"]), ("audit", audit.stdout), ("logs", log),
                        ("GitHub calls", "".join(r.body for r in stub.requests))):
        for secret in (GH_TOKEN, SECRET, REDIS_PASSWORD):
            assert secret not in text, (where, secret)
            assert base64.b64encode(secret.encode()).decode()[:-4] not in text, (where, secret)


def test_a_report_longer_than_one_comment_is_split_and_a_rate_limited_comment_waits(stack: Stack,
                                                                                   tmp_path: Path) -> None:
    from tests.unit.test_github import assert_balanced

    server, hook, stub, work, refs = stack
    git(work, "checkout", "-q", "-b", "many")
    buckets = "\n".join(f'  bucket-{i:03d} = {{ versioning = true, tags = {{ team = "platform-{i}" }} }}'
                        for i in range(220))
    (work / "Accounts/acct-a/many.tfvars").write_text(f'region = "us-west-2"\ns3_buckets = {{\n{buckets}\n}}\n')
    git(work, "add", "-A")
    git(work, "commit", "-qm", "many buckets")
    git(work, "push", "-q", "origin", "many")
    stub.rate_limit_posts = 1
    code, body = hook.send("pull_request", _pr("opened", 41, git(work, "rev-parse", "HEAD"), refs["base"]))
    assert code == 202, body
    summary = _summary(server, body["run_id"], timeout=300)
    assert summary["status"] == "succeeded", summary
    _wait_for("every part of the report", lambda: len(stub.comments) >= 2 and not stub.rate_limit_posts)
    time.sleep(1)
    parts = sorted(stub.comments.values(), key=lambda c: c["id"])
    assert len(parts) >= 2 and parts[0]["body"].startswith(STICKY_MARKER)
    assert parts[1]["body"].startswith("<!-- tfo:sticky-report:2 -->")
    text = "".join(c["body"] for c in parts)
    assert all(len(c["body"]) <= GITHUB_COMMENT_LIMIT for c in parts)
    for c in parts:
        assert_balanced(c["body"])
    assert "bucket-000" in text and "bucket-219" in text  # the whole plan, over several comments
    posts = [r for r in stub.requests if r.method == "POST" and r.path.endswith("/comments")]
    assert len(posts) == len(parts) + 1  # the rate-limited one, sent again after the wait
    assert "rate limited (HTTP 403); waiting 1 s" in (tmp_path / "w1.log").read_text()


def test_two_repositories_with_the_same_deployment_keep_their_own_state(stack: Stack, tmp_path: Path) -> None:
    """One webhook, two repositories, one store: the same deployment id in each is two states, two last-goods.
    Were the state shared, the second repository's apply would destroy the first one's role."""
    server, hook, stub, work, refs = stack
    second = tmp_path / "second-work"
    shutil.copytree(EXAMPLE / "terraform", second / "terraform")
    # pinned in the repository for its own CLI and CI runs; the webhook checks it matches
    (second / "tfo.toml").write_text('[tfo]\nrollback = "reapply"\nnamespace = "repos/org/second"\n')
    (second / "Accounts/acct-b/policies").mkdir(parents=True)
    (second / "Accounts/acct-b/policies/auditor.json").write_text('{"Statement": []}\n')
    role = 'iam_roles = {\n  %s = { policy_file = "policies/auditor.json" }\n}\n'
    (second / "Accounts/acct-b/platform.tfvars").write_text(role % "auditor")
    git(tmp_path, "init", "-q", "-b", "main", str(second))
    git(second, "add", "-A")
    git(second, "commit", "-qm", "base")
    second_base = git(second, "rev-parse", "HEAD")
    remote = tmp_path / "second.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(second), str(remote)], check=True)
    toml = server.root / "tfo.toml"
    toml.write_text(toml.read_text() + f'\n[tfo.webhook.repositories."org/second"]\nremote_url = "{remote}"\n')
    hook.proc.terminate()
    hook.proc.wait(timeout=20)
    hook.proc = hook.launch()
    hook.wait_healthy(tmp_path / "webhook.log")

    p = work / "Accounts/acct-b/platform.tfvars"
    p.write_text(p.read_text() + "\n# touched\n")
    git(work, "commit", "-qam", "touch platform")
    git(work, "push", "-q", "origin", "main")
    code, body = hook.send("push", _push(work, refs["base"]))
    assert code == 202, body
    assert _summary(server, body["run_id"])["status"] == "succeeded"

    (second / "Accounts/acct-b/platform.tfvars").write_text(role % "auditor" + "# touched\n")
    git(second, "commit", "-qam", "touch platform")
    git(second, "push", "-q", str(remote), "main")
    event = {"ref": "refs/heads/main", "before": second_base, "after": git(second, "rev-parse", "HEAD"),
             "repository": {"full_name": "org/second"}, "sender": {"login": "dev"}}
    code, body = hook.send("push", event)
    assert code == 202, body
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "succeeded", json.dumps(summary["deployments"])
    [dep] = summary["deployments"]
    assert dep["id"] == "iam/acct-b/us-east-1/platform"
    assert dep["state_key"] == "repos/org/second/iam/acct-b/us-east-1/platform/terraform.tfstate"

    assert set(server.world_state()) == {"iam.acct-b.us-east-1.platform.deployer",
                                         "iam.acct-b.us-east-1.platform.auditor"}
    store = server.root / ".tfo" / "store"
    first_state = json.loads((store / "iam/acct-b/us-east-1/platform/terraform.tfstate").read_text())
    second_state = json.loads((store / dep["state_key"]).read_text())
    assert "deployer" in json.dumps(first_state) and "auditor" not in json.dumps(first_state)
    assert "auditor" in json.dumps(second_state) and "deployer" not in json.dumps(second_state)
    assert (store / "last-good/iam/acct-b/us-east-1/platform.json").is_file()
    assert (store / "last-good/repos/org/second/iam/acct-b/us-east-1/platform.json").is_file()
    second_sha = event["after"]
    assert (second_sha, "success", "tfo/apply") in [(s["sha"], s["state"], s["context"]) for s in stub.statuses]

    # a repository cannot move onto another namespace (another repository's state): the run is refused
    (second / "tfo.toml").write_text('[tfo]\nnamespace = "repos/org/infra"\n')
    git(second, "commit", "-qam", "claim another namespace")
    git(second, "push", "-q", str(remote), "main")
    code, body = hook.send("push", {**event, "before": second_sha, "after": git(second, "rev-parse", "HEAD")})
    assert code == 202, body
    refused = _summary(server, body["run_id"])
    assert refused["status"] == "invalid" and "repos/org/infra" in refused["error"], refused

    # a signed push naming a commit that is not on the apply branch (a pull request's head) applies nothing
    git(second, "checkout", "-qb", "feature")
    (second / "Accounts/acct-b/platform.tfvars").write_text(role % "intruder")
    git(second, "commit", "-qam", "unreviewed")
    git(second, "push", "-q", str(remote), "feature")
    code, body = hook.send("push", {**event, "before": second_sha, "after": git(second, "rev-parse", "HEAD")})
    assert code == 202, body
    forged = _summary(server, body["run_id"])
    assert forged["status"] == "failed" and "not on refs/heads/main" in forged["error"], forged
    assert "iam.acct-b.us-east-1.platform.intruder" not in server.world_state()


def test_a_pull_request_is_applied_from_its_saved_plan_by_comment_once_reviewed(stack: Stack) -> None:
    server, hook, stub, work, refs = stack
    git(work, "checkout", "-q", "-b", "lake")
    p = work / "Accounts/acct-a/data-lake.tfvars"
    p.write_text(p.read_text().replace("curated = { versioning = true }", "curated = { versioning = false }"))
    git(work, "commit", "-qam", "curated without versioning")
    git(work, "push", "-q", "origin", "lake")
    head = git(work, "rev-parse", "HEAD")
    code, body = hook.send("pull_request", _pr("opened", 31, head, refs["base"]))
    assert code == 202, body
    plan_id = body["run_id"]
    assert _summary(server, plan_id)["status"] == "succeeded"
    sticky = next(c for c in stub.comments.values() if c["issue"] == 31)
    assert "To apply the plans above" in sticky["body"] and "/tfo apply" in sticky["body"]
    stub.pulls[31] = {"number": 31, "state": "open", "author_association": "MEMBER", "user": {"login": "dev"},
                      "mergeable": True, "head": {"sha": head, "repo": {"full_name": "org/infra"}},
                      "base": {"sha": refs["base"], "ref": "main"}}
    stub.roles.update({"reader": "read", "maint": "write"})

    def comment(login: str, text: str = "/tfo apply", comment_id: int | None = None) -> tuple[int, dict[str, Any]]:
        cid = comment_id or 9000 + len(stub.comments)
        if comment_id is None:  # the comment exists on GitHub, as the event says
            stub.comments[cid] = {"id": cid, "issue": 31, "body": text, "user": {"login": login, "type": "User"}}
        return hook.send("issue_comment", {
            "action": "created", "repository": {"full_name": "org/infra"}, "sender": {"login": login},
            "issue": {"number": 31, "pull_request": {}},
            "comment": {"id": cid, "body": text, "author_association": "MEMBER"}})

    def refused(login: str, words: str) -> None:
        sticky["body"] = "<!-- tfo:sticky-report -->\n"  # each refusal rewrites the sticky comment
        code, body = comment(login)
        assert (code, body["action"]) == (202, "apply")
        _wait_for(words, lambda: words in sticky["body"])
        assert "tfo apply: not run" in sticky["body"] and "To apply the plans above" in sticky["body"]

    refused("reader", "who has no write access to org/infra")
    refused("maint", "by people with write access other than its author (it has 0)")
    stub.reviews[31] = [{"user": {"login": "dev"}, "state": "APPROVED", "commit_id": head}]  # its author's own
    refused("maint", "by people with write access other than its author (it has 0)")
    stub.reviews[31].append({"user": {"login": "bob"}, "state": "APPROVED", "commit_id": refs["base"]})  # old commit
    stub.roles["bob"] = "write"
    refused("maint", "by people with write access other than its author (it has 0)")
    stub.reviews[31].append({"user": {"login": "carol"}, "state": "APPROVED", "commit_id": head})  # read only
    stub.roles["carol"] = "read"
    refused("maint", "by people with write access other than its author (it has 0)")
    stub.reviews[31].append({"user": {"login": "alice"}, "state": "APPROVED", "commit_id": head})
    stub.roles["alice"] = "write"
    stub.pulls[31]["mergeable"] = False
    refused("maint", "it has merge conflicts")
    # a forged event: signed with the webhook's secret, naming a comment GitHub does not have
    stub.pulls[31]["mergeable"] = True
    code, forged = comment("maint", comment_id=424242)
    assert code == 202
    assert server.world_state() == {}

    # a real comment of the maintainer on another pull request, replayed onto this one
    stub.comments[8800] = {"id": 8800, "issue": 77, "body": "/tfo apply", "user": {"login": "maint", "type": "User"}}
    code, elsewhere = comment("maint", comment_id=8800)
    assert code == 202

    code, body = comment("maint")
    assert code == 202, body
    applied_comment = max(stub.comments)
    summary = _summary(server, body["run_id"])
    assert summary["status"] == "succeeded", summary
    assert {d["id"] for d in summary["deployments"]} == {"s3/acct-a/us-west-2/data-lake",
                                                         "kms/acct-a/us-west-2/data-lake"}
    assert json.loads(server.world_state()["s3.acct-a.us-west-2.data-lake.curated"]["content"])["versioning"] is False
    records = json.loads(server.tfo("audit", "show", body["run_id"]).stdout)
    assert {r["record"]["from_plan"] for r in records} == {plan_id}
    assert {tuple(r["record"]["approved_by"]) for r in records} == {("github:alice",)}
    assert not (server.root / ".tfo/store/runs" / f"{forged['run_id']}.json").exists()  # the forged one never ran
    assert not (server.root / ".tfo/store/runs" / f"{elsewhere['run_id']}.json").exists()  # nor the misplaced one
    code, replayed = comment("maint", comment_id=applied_comment)  # the same comment, a new delivery: used once
    assert code == 202
    time.sleep(3)
    assert not (server.root / ".tfo/store/runs" / f"{replayed['run_id']}.json").exists()
    # applied once: the same plan again is stale
    code, body = comment("maint")
    again = _summary(server, body["run_id"])
    assert again["status"] == "failed" and {d["status"] for d in again["deployments"]} == {"stale"}
    # main moves on without the pull request: it has diverged
    git(work, "checkout", "-q", "main")
    (work / "README.md").write_text("moved on\n")
    git(work, "add", "README.md")
    git(work, "commit", "-qm", "main moves on")
    git(work, "push", "-q", "origin", "main")
    refused("maint", "it needs the latest commit of `main` merged in (it has diverged)")


def test_a_deployment_planned_by_one_pull_request_is_reserved_until_it_closes(stack: Stack) -> None:
    server, hook, stub, work, refs = stack

    def branch(name: str, change: str) -> str:
        git(work, "checkout", "-q", "main")
        git(work, "checkout", "-q", "-b", name)
        p = work / "Accounts/acct-a/data-lake.tfvars"
        p.write_text(p.read_text().replace("lake = { rotation = true }", change))
        git(work, "commit", "-qam", name)
        git(work, "push", "-q", "origin", name)
        return git(work, "rev-parse", "HEAD")

    first = branch("first", "lake = { rotation = false }")
    stub.pulls[41] = {"number": 41, "state": "open", "head": {"sha": first}}
    code, body = hook.send("pull_request", _pr("opened", 41, first, refs["base"]))
    assert code == 202 and _summary(server, body["run_id"])["status"] == "succeeded"
    second = branch("second", "lake = { rotation = true, deletion_window = 7 }")
    code, body = hook.send("pull_request", _pr("opened", 42, second, refs["base"]))
    assert code == 202
    _wait_for("the refusal on #42", lambda: any(c["issue"] == 42 and "reserved by org/infra#41" in c["body"]
                                                for c in stub.comments.values()))
    comment = next(c for c in stub.comments.values() if c["issue"] == 42)
    assert "tfo plan: not run" in comment["body"] and "`kms/acct-a/us-west-2/data-lake`" in comment["body"]
    assert not (server.root / ".tfo/store/runs" / body["run_id"] / "spec.json").exists()  # nothing ran
    # #41 is merged or closed: its reservations go, and #42 plans
    assert hook.send("pull_request", {**_pr("closed", 41, first, refs["base"])})[1]["status"] == "released"
    _wait_for("the release", lambda: not list((server.root / ".tfo/store/reservations").rglob("*.json")))
    code, body = hook.send("pull_request", _pr("synchronize", 42, second, refs["base"]))
    assert code == 202 and _summary(server, body["run_id"])["status"] == "succeeded"
    held = [json.loads(p.read_text()) for p in (server.root / ".tfo/store/reservations").rglob("*.json")
            if not p.name.endswith(".tfo-meta.json")]
    assert {h["pr"] for h in held} == {42} and len(held) == 2
    # `/tfo plan PATH` plans what it names, even what the pull request does not change
    stub.pulls[42] = {"number": 42, "state": "open", "author_association": "MEMBER", "user": {"login": "dev"},
                      "head": {"sha": second, "repo": {"full_name": "org/infra"}},
                      "base": {"sha": refs["base"], "ref": "main"}}
    stub.roles["maint"] = "write"
    code, body = hook.send("issue_comment", {
        "action": "created", "repository": {"full_name": "org/infra"}, "sender": {"login": "maint"},
        "issue": {"number": 42, "pull_request": {}},
        "comment": _said(stub, 42, "maint", "/tfo plan Accounts/acct-b/platform.tfvars")})
    assert code == 202, body
    summary = _summary(server, body["run_id"])
    assert [d["id"] for d in summary["deployments"]] == ["iam/acct-b/us-east-1/platform"]
