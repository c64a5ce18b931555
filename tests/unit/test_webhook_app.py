"""The webhook's request handling, with a recording starter instead of git and Celery."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import stat
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from cli.webhook import (
    Deliveries,
    EnqueueUncertain,
    Job,
    Refusal,
    Release,
    RunStarter,
    apply_hint,
    create_app,
    verify_signature,
)
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.models import Action

SECRET = b"s3cr3t-hook"


class RecordingStarter(RunStarter):
    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.refusals: list[Refusal] = []
        self.deliveries = Deliveries("", 3600)

    def start(self, job: Job) -> None:
        self.jobs.append(job)

    def refuse(self, refusal: Refusal) -> None:
        self.refusals.append(refusal)


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.fixture
def app(tmp_path: Path) -> tuple[Any, RecordingStarter]:
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nmax_body_bytes = 1000\napply_branch = "main"\n'
                                       'repository = "o/r"\n')
    cfg = load_config(repo_root=tmp_path, environ={})
    starter = RecordingStarter()
    return create_app(cfg, SECRET, starter).test_client(), starter


def post(client: Any, event: str, payload: Any, delivery: str = "d-1", signature: str | None = None,
         form: bool = False) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if form:
        body = urllib.parse.urlencode({"payload": body.decode()}).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
               "X-Hub-Signature-256": signature if signature is not None else sign(body)}
    return client.post("/webhook", data=body, headers=headers,
                       content_type="application/x-www-form-urlencoded" if form else "application/json")


def push(ref: str = "refs/heads/main") -> dict[str, Any]:
    return {"ref": ref, "before": "1" * 40, "after": "2" * 40, "repository": {"full_name": "o/r"},
            "sender": {"login": "dev"}}


def test_signature_is_checked_in_constant_time_form() -> None:
    assert verify_signature(SECRET, b"x", sign(b"x"))
    assert not verify_signature(SECRET, b"x", sign(b"y"))
    assert not verify_signature(SECRET, b"x", None)
    assert not verify_signature(SECRET, b"x", "sha1=" + "0" * 40)


def test_health_and_ping(app: tuple[Any, RecordingStarter]) -> None:
    client, _ = app
    assert client.get("/healthz").status_code == 200
    assert post(client, "ping", {"zen": "x"}).get_json() == {"status": "pong"}


def test_rejections(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    assert post(client, "push", push(), signature="sha256=" + "0" * 64).status_code == 401
    assert post(client, "push", push(), signature="").status_code == 401
    assert post(client, "push", b"{" + b" " * 2000 + b"}").status_code == 413
    assert post(client, "issues", {"a": 1}).get_json()["status"] == "ignored"  # 2xx: not a failed delivery
    assert post(client, "push", b"not json").status_code == 400
    assert post(client, "push", {**push(), "after": "not-a-sha"}).status_code == 400
    assert post(client, "push", push(), delivery="").status_code == 400
    assert starter.jobs == []


def test_push_to_main_is_an_apply_and_a_replay_is_ignored(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    r = post(client, "push", push(), delivery="abc")
    assert r.status_code == 202 and r.get_json()["action"] == "apply"
    (job,) = starter.jobs
    expected = ("o/r", "2" * 40, "1" * 40, None, r.get_json()["run_id"])
    assert (job.repo, job.sha, job.base, job.pr, job.run_id) == expected
    assert post(client, "push", push(), delivery="abc").get_json()["status"] == "duplicate"
    assert len(starter.jobs) == 1
    assert post(client, "push", push("refs/heads/feature"), delivery="other").get_json()["status"] == "ignored"
    new_branch = {**push(), "before": "0" * 40}
    post(client, "push", new_branch, delivery="new")
    assert starter.jobs[-1].base == ""  # a new branch: every deployment


def pull_request(action: str = "opened", head_repo: str | None = "o/r", association: str = "MEMBER"
                 ) -> dict[str, Any]:
    return {"action": action, "number": 5, "repository": {"full_name": "o/r"}, "sender": {"login": "dev"},
            "pull_request": {"head": {"sha": "3" * 40, "repo": {"full_name": head_repo} if head_repo else None},
                             "base": {"sha": "4" * 40}, "author_association": association}}


def test_pull_request_actions(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    payload = pull_request()
    assert post(client, "pull_request", payload, delivery="p1").status_code == 202
    assert starter.jobs[-1].action.value == "plan" and starter.jobs[-1].pr == 5
    labeled = post(client, "pull_request", {**payload, "action": "labeled"}, delivery="p2")
    assert labeled.get_json()["status"] == "ignored"


class HeldStarter(RunStarter):
    """The real spool and background thread; `run` records the job instead of git and Celery, when let."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg, submit=lambda c, r: None)
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, job: Job) -> None:
        assert self.gate.wait(10)
        self.ran.append(job.run_id)


def a_job(run_id: str) -> Job:
    return Job(run_id, Action.APPLY, "o/r", "2" * 40, "1" * 40, None, f"d-{run_id}", "dev")


def test_a_job_is_on_disk_before_it_is_answered_and_gone_once_started(tmp_path: Path) -> None:
    starter = HeldStarter(load_config(repo_root=tmp_path, environ={}))
    starter.gate.clear()  # the background thread is busy elsewhere
    starter.start(a_job("r1"))
    spool = tmp_path / ".tfo" / "webhook-spool"
    entry = json.loads((spool / "r1.json").read_text())
    assert entry["stage"] == "accepted" and Job.from_dict(entry["job"]) == a_job("r1")
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    starter.gate.set()
    starter.pool.shutdown(wait=True)
    assert starter.ran == ["r1"]
    assert list(spool.iterdir()) == []


def test_a_restart_resumes_accepted_jobs_and_never_enqueues_one_twice(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / ".tfo" / "webhook-spool"
    spool.mkdir(parents=True)
    (spool / "r1.json").write_text(json.dumps({"stage": "accepted", "job": a_job("r1").to_dict()}))
    (spool / "r2.json").write_text(json.dumps({"stage": "enqueueing", "job": a_job("r2").to_dict()}))
    (spool / "r3.json").write_text("{not json")
    starter = HeldStarter(load_config(repo_root=tmp_path, environ={}))
    with caplog.at_level(logging.INFO, logger="tfo.webhook"):
        assert starter.resume_spooled() == ["r1"]
        starter.pool.shutdown(wait=True)
    assert starter.ran == ["r1"]
    assert "resuming run r1" in caplog.text
    assert "run r2" in caplog.text and "not enqueued again" in caplog.text  # it may be queued already
    assert sorted(p.name for p in spool.iterdir()) == ["r3.json.bad"]  # unreadable: kept aside, not lost


def test_an_unwritable_spool_answers_503_and_the_redelivery_is_taken(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nspool_dir = "spool"\nrepository = "o/r"\n')
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    cfg = load_config(repo_root=tmp_path, environ={})
    starter = HeldStarter(cfg)
    client = create_app(cfg, SECRET, starter).test_client()
    r = post(client, "push", push(), delivery="d-9")
    assert r.status_code == 503 and "redeliver" in r.get_json()["error"]
    (tmp_path / "spool").unlink()
    r = post(client, "push", push(), delivery="d-9")  # GitHub's redelivery: same delivery id
    assert r.status_code == 202
    starter.pool.shutdown(wait=True)
    assert starter.ran == [r.get_json()["run_id"]]


def test_forks_and_outside_authors_are_refused_with_a_reason(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    fork = post(client, "pull_request", pull_request(head_repo="mallory/r"), delivery="f1").get_json()
    assert fork["status"] == "refused" and "fork (mallory/r)" in fork["reason"]
    gone = post(client, "pull_request", pull_request(head_repo=None), delivery="f2").get_json()
    assert gone["status"] == "refused" and "deleted repository" in gone["reason"]
    outsider = post(client, "pull_request", pull_request(association="CONTRIBUTOR"), delivery="f3").get_json()
    assert outsider["status"] == "refused" and "is CONTRIBUTOR" in outsider["reason"]
    assert starter.jobs == []
    assert [(r.pr, r.sha) for r in starter.refusals] == [(5, "3" * 40)] * 3
    for who in ("OWNER", "MEMBER", "COLLABORATOR"):
        assert post(client, "pull_request", pull_request(association=who), delivery=f"ok-{who}").status_code == 202
    assert len(starter.jobs) == 3


def test_forks_may_be_allowed_by_config(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nrepository = "o/r"\nplan_forks = true\n'
                                       'pr_authors = ["OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR"]\n')
    starter = RecordingStarter()
    client = create_app(load_config(repo_root=tmp_path, environ={}), SECRET, starter).test_client()
    friend = pull_request(head_repo="friend/r", association="CONTRIBUTOR")
    assert post(client, "pull_request", friend).status_code == 202


def test_events_of_another_repository_start_nothing(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    for i, (event, payload) in enumerate((("push", {**push(), "repository": {"full_name": "evil/r"}}),
                                          ("pull_request", {**pull_request(), "repository": {"full_name": "o/x"}}),
                                          ("push", {k: v for k, v in push().items() if k != "repository"}))):
        r = post(client, event, payload, delivery=f"x-{i}")
        assert r.status_code == 200 and r.get_json()["status"] == "ignored", r.get_json()
        assert "not handled here" in r.get_json()["reason"]
    assert starter.jobs == [] and starter.refusals == []
    upper = post(client, "push", {**push(), "repository": {"full_name": "O/R"}}, delivery="case")
    assert upper.status_code == 202  # GitHub names are case-insensitive


def test_form_encoded_deliveries_and_unhandled_events(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    r = post(client, "push", push(), delivery="form-1", form=True)
    assert r.status_code == 202 and starter.jobs[-1].sha == "2" * 40
    assert post(client, "push", b"payload=%7Bnot", delivery="form-2", form=False).status_code == 400
    bad_form = post(client, "push", b"", delivery="form-3", form=True)
    assert bad_form.status_code == 400 and "form body" in bad_form.get_json()["error"]
    for event in ("installation", "create", "delete", "issues", "check_run"):
        r = post(client, event, {"action": "created"}, delivery=f"u-{event}")
        assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert len(starter.jobs) == 1


def comment(body: str, association: str = "MEMBER", on_pr: bool = True, action: str = "created") -> dict[str, Any]:
    return {"action": action, "repository": {"full_name": "o/r"}, "sender": {"login": "maintainer"},
            "issue": {"number": 5, **({"pull_request": {"url": "x"}} if on_pr else {})},
            "comment": {"body": body, "author_association": association}}


def test_plan_command_from_an_allowed_person(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    r = post(client, "issue_comment", comment("/tfo plan " + "3" * 40 + "\nlooks fine"), delivery="c1")
    assert r.status_code == 202
    job = starter.jobs[-1]
    assert (job.lookup, job.sha, job.pr, job.sender, job.action.value) == (True, "3" * 40, 5, "maintainer", "plan")
    assert post(client, "issue_comment", comment("/tfo plan"), delivery="c2").status_code == 202
    assert starter.jobs[-1].sha == ""
    for i, ignored in enumerate((comment("/tfo plan 3333333", "MEMBER"),
                                 comment("/tfo plan " + "3" * 39), comment("/tfo plan", "CONTRIBUTOR"),
                                 comment("please /tfo plan"), comment("/tfo plan", on_pr=False),
                                 comment("/tfo plan", action="edited"), comment("/tfo plan ZZZZZZZ"))):
        r = post(client, "issue_comment", ignored, delivery=f"n{i}")
        assert r.status_code == 200 and r.get_json()["status"] == "ignored", (ignored, r.get_json())
    assert len(starter.jobs) == 2


@pytest.mark.parametrize(("error", "redelivery_runs"), [(OSError("mirror fetch failed"), True),
                                                        (EnqueueUncertain("handed over part-way"), False)])
def test_a_failed_start_frees_its_delivery_unless_the_run_may_be_queued(tmp_path: Path, error: Exception,
                                                                        redelivery_runs: bool) -> None:
    class Failing(RunStarter):
        def run(self, job: Job) -> None:
            raise error

    starter = Failing(load_config(repo_root=tmp_path, environ={}), submit=lambda c, r: None)
    job = a_job("r9")
    assert starter.deliveries.first_time(job.delivery)
    starter._safely(job)
    assert starter.deliveries.first_time(job.delivery) is redelivery_runs
    summary = tmp_path / ".tfo" / "store" / "runs" / "r9.json"
    assert summary.exists() is redelivery_runs  # "failed" is written only when nothing can be running


def test_a_resumed_pull_request_plan_passes_today_s_trust_policy_first(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from tests.github_stub import GitHubStub

    stub = GitHubStub()
    api = stub.start()
    try:
        (tmp_path / "tfo.toml").write_text(f'[tfo.github]\napi_url = "{api}"\n[tfo.webhook]\nrepository = "o/r"\n')
        cfg = load_config(repo_root=tmp_path, environ={"GITHUB_TOKEN": "ghp_" + "t" * 36})
        spool = tmp_path / ".tfo" / "webhook-spool"
        spool.mkdir(parents=True)
        pr_job = replace(a_job("r7"), action=Action.PLAN, pr=5)
        (spool / "r7.json").write_text(json.dumps({"stage": "accepted", "job": pr_job.to_dict()}))
        seen: list[Job] = []

        class Recording(HeldStarter):
            def run(self, job: Job) -> None:
                seen.append(job)

        starter = Recording(cfg)
        assert starter.resume_spooled() == ["r7"]
        starter.pool.shutdown(wait=True)
        assert seen[0].recheck  # a resumed PR plan is checked again before it runs

        monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "t" * 36)
        stub.pulls[5] = {"number": 5, "state": "open", "author_association": "NONE", "user": {"login": "x"},
                         "head": {"sha": "2" * 40, "repo": {"full_name": "x/r"}}, "base": {"sha": "1" * 40}}
        assert not starter._still_trusted(seen[0])
        (comment,) = stub.comments.values()
        assert "fork (x/r)" in comment["body"]
        stub.pulls[5].update(author_association="MEMBER", head={"sha": "2" * 40, "repo": {"full_name": "o/r"}})
        assert starter._still_trusted(seen[0])
    finally:
        stub.stop()


SEVERAL = '''[tfo.webhook]
repository = "o/r"
remote_url = "/git/r.git"

[tfo.webhook.repositories."o/second"]
remote_url = "/git/second.git"

[tfo.webhook.repositories."Team/Legacy"]
remote_url = "/git/legacy.git"
namespace = "teams/legacy/infra"
'''


def test_several_repositories_each_with_its_remote_mirror_and_store_namespace(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text(SEVERAL)
    cfg = load_config(repo_root=tmp_path, environ={})
    served = cfg.webhook.served()
    assert {s.name: (s.remote_url, s.namespace) for s in served.values()} == {
        "o/r": ("/git/r.git", ""),  # the one a webhook served alone keeps its state where it was
        "o/second": ("/git/second.git", "repos/o/second"),
        "Team/Legacy": ("/git/legacy.git", "teams/legacy/infra")}
    assert len({s.mirror for s in served.values()}) == 3  # one mirror each, none inside another
    assert all(cfg.resolve(s.mirror).parent == cfg.resolve(cfg.webhook.mirror_dir).parent for s in served.values())
    starter = RecordingStarter()
    client = create_app(cfg, SECRET, starter).test_client()
    for i, name in enumerate(("o/second", "team/legacy", "o/r")):
        r = post(client, "push", {**push(), "repository": {"full_name": name}}, delivery=f"s-{i}")
        assert r.status_code == 202, r.get_json()
    assert [j.repo for j in starter.jobs] == ["o/second", "team/legacy", "o/r"]
    r = post(client, "push", {**push(), "repository": {"full_name": "o/third"}}, delivery="s-x")
    assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert "o/r, o/second, Team/Legacy" in r.get_json()["reason"]


@pytest.mark.parametrize("extra, message", [
    ('[tfo.webhook.repositories."o/x"]\nnamespace = "a/b/c"\n', "needs remote_url"),
    ('[tfo.webhook.repositories."O/SECOND"]\nremote_url = "/g"\n', "O/SECOND is named twice"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = "repos/o/second"\n', "could collide"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = "REPOS/O/SECOND"\n', "could collide"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = "repos/o/second/x"\n', "could collide"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = ""\n', "could collide"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = "a/b"\n', "fewer than 3 parts"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = "../up/x"\n', "namespace"),
    ('[tfo.webhook.repositories."o/x"]\nremote_url = "/g"\nnamespace = "runs/x/y"\n', "tfo's own store prefixes"),
    ('[tfo.webhook.repositories."o/.github"]\nremote_url = "/g"\n', "set .* namespace"),
    ('[tfo.webhook.repositories."not-a-repo"]\nremote_url = "/g"\n', "expected OWNER/NAME"),
    ('[tfo.webhook.repositories]\n"o/x" = "/g"\n', "must be a table"),
])
def test_bad_repository_tables_are_config_errors(tmp_path: Path, extra: str, message: str) -> None:
    from orchestrator.errors import ConfigError

    (tmp_path / "tfo.toml").write_text(SEVERAL + "\n" + extra)
    with pytest.raises(ConfigError, match=message):
        load_config(repo_root=tmp_path, environ={})


def test_a_lone_remote_url_and_the_repositories_table_in_the_environment_are_refused_clearly(tmp_path: Path) -> None:
    from orchestrator.errors import ConfigError

    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nremote_url = "/g"\n')
    with pytest.raises(ConfigError, match=r"without webhook\.repository"):
        load_config(repo_root=tmp_path, environ={})
    (tmp_path / "tfo.toml").write_text(SEVERAL)
    cfg = load_config(repo_root=tmp_path, environ={"TFO_WEBHOOK_REPOSITORIES": "x"})  # not settable: ignored
    assert set(cfg.webhook.served()) == {"o/r", "o/second", "team/legacy"}


def test_apply_command_names_deployments_and_apply_on_decides_what_applies(tmp_path: Path) -> None:
    def app_with(apply_on: str) -> tuple[Any, RecordingStarter]:
        (tmp_path / "tfo.toml").write_text(f'[tfo.webhook]\napply_branch = "main"\nrepository = "o/r"\n'
                                           f'apply_on = "{apply_on}"\n')
        starter = RecordingStarter()
        return create_app(load_config(repo_root=tmp_path, environ={}), SECRET, starter).test_client(), starter

    client, starter = app_with("both")
    body = comment("/tfo apply Accounts/acct-a/lake.tfvars s3/acct-a/us-west-2/lake")
    body["comment"]["id"] = 77
    assert post(client, "issue_comment", body, delivery="a1").status_code == 202
    job = starter.jobs[-1]
    assert (job.action, job.lookup, job.pr, job.comment_id, job.sha) == (Action.APPLY, True, 5, 77, "")
    assert job.paths == ("Accounts/acct-a/lake.tfvars", "s3/acct-a/us-west-2/lake")
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job  # survives the spool
    for i, ignored in enumerate((comment("/tfo apply ../../etc/passwd"), comment("/tfo apply $(id)"),
                                 comment("/tfo apply", "CONTRIBUTOR"), comment("/tfo applyall"))):
        r = post(client, "issue_comment", ignored, delivery=f"i{i}")
        assert r.get_json()["status"] == "ignored", (ignored, r.get_json())
    assert post(client, "push", push(), delivery="p1").status_code == 202  # both: merging applies too

    client, starter = app_with("comment")
    r = post(client, "push", push(), delivery="p2")
    assert r.get_json()["status"] == "ignored" and "apply_on = comment" in r.get_json()["reason"]
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nrepository = "o/r"\napply_on = "always"\n')
    with pytest.raises(ConfigError, match="apply_on"):
        load_config(repo_root=tmp_path, environ={})
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nrepository = "o/r"\napply_requirements = ["green"]\n')
    with pytest.raises(ConfigError, match="apply_requirements has green"):
        load_config(repo_root=tmp_path, environ={})


def test_the_apply_hint_says_what_each_setting_needs(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nrepository = "o/r"\napply_on = "comment"\napprovals = 2\n'
                                       'apply_requirements = ["approved"]\n')
    hint = apply_hint(load_config(repo_root=tmp_path, environ={}), "a" * 40)
    assert "`/tfo apply`" in hint and "2 approving review(s) of `aaaaaaaaaaaa`" in hint
    assert "merge conflict" not in hint and "Or merging" not in hint
    (tmp_path / "tfo.toml").write_text('[tfo.webhook]\nrepository = "o/r"\n')
    assert apply_hint(load_config(repo_root=tmp_path, environ={}), "a" * 40).startswith("**To apply:** merging")


def test_a_closed_pull_request_releases_its_reservations(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    released: list[Release] = []
    starter.release = released.append  # type: ignore[method-assign]
    closed = {"action": "closed", "number": 9, "repository": {"full_name": "o/r"}, "sender": {"login": "dev"},
              "pull_request": {"number": 9, "merged": True}}
    r = post(client, "pull_request", closed, delivery="close-1")
    assert r.status_code == 200 and r.get_json() == {"status": "released", "pr": 9}
    assert released == [Release("o/r", 9)] and starter.jobs == []


def test_plan_command_may_name_deployments(app: tuple[Any, RecordingStarter]) -> None:
    client, starter = app
    sha = "4" * 40
    r = post(client, "issue_comment", comment(f"/tfo plan {sha} Accounts/a/x.tfvars s3/a/us-east-1/x"), delivery="pp")
    assert r.status_code == 202
    assert (starter.jobs[-1].sha, starter.jobs[-1].paths) == (sha, ("Accounts/a/x.tfvars", "s3/a/us-east-1/x"))
    assert post(client, "issue_comment", comment("/tfo plan Accounts/a/x.tfvars"), delivery="p2").status_code == 202
    assert (starter.jobs[-1].sha, starter.jobs[-1].paths) == ("", ("Accounts/a/x.tfvars",))
    for i, text in enumerate(("/tfo plan Accounts/../../etc/x.tfvars", "/tfo plan 4444444", "/tfo plan everything")):
        assert post(client, "issue_comment", comment(text), delivery=f"q{i}").get_json()["status"] == "ignored", text
