"""The webhook served by waitress on loopback: signed GitHub events for a local git remote enqueue runs
on a real Redis and real workers; results come back to a recording GitHub stub."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Workers
from tests.github_stub import GitHubStub
from tests.helpers import EXAMPLE, SECRET_PASSWORD, SECRET_TOKEN, Repo, free_port, write_sample

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
             secret: str | None = SECRET, signature: str | None = None) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                   "Content-Type": "application/json"}
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
remote_url = "{remote}"
mirror_dir = "{tmp_path}/mirror"
apply_branch = "main"
max_body_bytes = 200000

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


def test_signatures_sizes_events_and_ping(stack: Stack) -> None:
    _, hook, stub, _, _ = stack
    assert hook.send("ping", {"zen": "hi"}) == (200, {"status": "pong"})
    assert hook.send("ping", {"zen": "hi"}, secret="wrong-secret")[0] == 401
    assert hook.send("ping", {"zen": "hi"}, secret=None)[0] == 401
    assert hook.send("ping", {"zen": "hi"}, signature="sha1=abc")[0] == 401
    assert hook.send("push", b"x" * 300_000)[0] == 413
    code, body = hook.send("issues", {"action": "opened"})
    assert code == 400 and "unsupported event" in body["error"]
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
        return {"action": action, "number": 17, "repository": {"full_name": "org/infra"}, "sender": {"login": "dev"},
                "pull_request": {"head": {"sha": git(work, "rev-parse", "HEAD")}, "base": {"sha": refs["base"]}}}

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
    assert hook.send("pull_request", {**pr("closed")})[1]["status"] == "ignored"

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
