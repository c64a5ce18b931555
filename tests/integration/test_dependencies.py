"""Deployments that need other deployments' outputs run after them, with the real terraform and the project's
provider: the bucket reads the key's id from tfo_dependency_outputs, a failing key skips the bucket, and an
explicit edge crosses accounts."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Workers
from tests.helpers import Repo

pytestmark = pytest.mark.integration

KMS, S3, IAM = "kms/acct-a/us-west-2/lake", "s3/acct-a/us-west-2/lake", "iam/acct-b/us-east-1/platform"
KEY_ID = "kms.acct-a.us-west-2.lake.main"


def write_repo(repo: Repo, *, key_fails: bool = False, delay: int = 1) -> None:
    toml = repo.root / "tfo.toml"
    if "[tfo.dependencies]" not in toml.read_text():
        # acct-b reads acct-a's outputs, acct-c acct-b's: edges into other accounts, allowed
        toml.write_text(toml.read_text() + '\n[tfo.dependencies]\ns3 = ["kms"]\n'
                        '[tfo.accounts.acct-b]\noutputs_from = ["acct-a"]\n'
                        '[tfo.accounts.acct-c]\noutputs_from = ["acct-b"]\n')
    fail = ", fail = true" if key_fails else ""
    repo.write("Accounts/acct-a/lake.tfvars", f"""\
        region = "us-west-2"
        kms_keys = {{
          main = {{ delay_seconds = {delay}{fail} }}
        }}
        s3_buckets = {{
          raw = {{ kms_key = "main" }}
        }}
        """)
    repo.write("Accounts/acct-b/platform.tfvars", f"""\
        tfo_depends_on = ["{KMS}"]
        iam_roles = {{
          deployer = {{ policy_file = "policies/deployer.json" }}
        }}
        """)
    repo.write("Accounts/acct-b/policies/deployer.json", '{"Statement": []}\n')


def _run(repo: Repo, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "report.json"
    out.unlink(missing_ok=True)
    r = repo.tfo(*args, "--json-out", str(out), timeout=240)
    return r.returncode, json.loads(out.read_text()) if out.exists() else {}, r.stdout + r.stderr


def _first(journal: list[dict[str, Any]], event: str, prefix: str) -> float:
    return min(e["t"] for e in journal if e["event"] == event and e["name"].startswith(prefix))


def _last(journal: list[dict[str, Any]], event: str, prefix: str) -> float:
    return max(e["t"] for e in journal if e["event"] == event and e["name"].startswith(prefix))


def test_a_bucket_is_created_after_the_key_it_reads_and_carries_its_id(repo: Repo, tmp_path: Path) -> None:
    write_repo(repo)
    shown = repo.tfo("discover")
    assert shown.stdout.splitlines()[0] == "# level 1" and f"{KMS}\t" in shown.stdout.splitlines()[1], shown.stdout
    code, report, out = _run(repo, tmp_path, "plan")
    assert code == 0, out  # planned against the key's outputs as they are (none yet): nothing fails
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 0, out
    assert {d["id"]: d["status"] for d in report["deployments"]} == {KMS: "succeeded", S3: "succeeded",
                                                                     IAM: "succeeded"}
    journal = repo.journal()
    # the key exists before the bucket and the role start (the key sleeps 1 s in its write)
    assert _last(journal, "done", "kms.") < _first(journal, "start", "s3.")
    assert _last(journal, "done", "kms.") < _first(journal, "start", "iam.")
    bucket = json.loads(repo.world_state()["s3.acct-a.us-west-2.lake.raw"]["content"])
    assert bucket["kms_key_id"] == KEY_ID
    again = _run(repo, tmp_path, "plan")  # back where it was: the old tfvars plan no change
    assert again[0] == 0 and {d["status"] for d in again[1]["deployments"]} == {"no_changes"}, again[2]


def test_a_failing_key_skips_what_depends_on_it(repo: Repo, tmp_path: Path) -> None:
    write_repo(repo, key_fails=True)
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 1, out
    by_id = {d["id"]: d for d in report["deployments"]}
    assert by_id[KMS]["status"] in ("failed", "rolled_back")
    for downstream in (S3, IAM):
        assert by_id[downstream]["status"] == "skipped"
        assert by_id[downstream]["error"] == f"not run: it depends on {KMS}, which failed"
    assert not any(n.startswith(("s3.", "iam.")) for n in repo.world_state())  # never started
    assert not any(e["name"].startswith(("s3.", "iam.")) for e in repo.journal())
    assert report["status"] == "failed"


def test_both_through_celery_workers_each_as_soon_as_its_upstreams_are_done(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    """Sent as a graph, not level by level: the bucket starts once the key is done, while a slow deployment
    of the key's level still runs; the role of acct-c waits for acct-b's role only."""
    repo, workers = celery_repo
    write_repo(repo)  # before the workers start: they read the accounts' settings once
    workers.start("w1")
    workers.start("w2")
    repo.write("Accounts/acct-c/late.tfvars", f"""\
        tfo_depends_on = ["{IAM}"]
        iam_roles = {{
          late = {{ policy_file = "../acct-b/policies/deployer.json" }}
        }}
        """)
    repo.write("Accounts/acct-d/slow.tfvars", "s3_buckets = {\n  slow = { delay_seconds = 20 }\n}\n")
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 0, out
    assert {d["id"]: d["status"] for d in report["deployments"]} == {
        KMS: "succeeded", S3: "succeeded", IAM: "succeeded", "iam/acct-c/us-east-1/late": "succeeded",
        "s3/acct-d/us-east-1/slow": "succeeded"}
    journal = repo.journal()
    assert _last(journal, "done", "kms.") < min(_first(journal, "start", "s3.acct-a"), _first(journal, "start", "iam."))
    assert _last(journal, "done", "iam.acct-b") < _first(journal, "start", "iam.acct-c")
    # the key's level held a slow bucket too: the key's dependents did not wait for it
    assert _first(journal, "start", "s3.acct-a") < _last(journal, "done", "s3.acct-d"), journal
    assert json.loads(repo.world_state()["s3.acct-a.us-west-2.lake.raw"]["content"])["kms_key_id"] == KEY_ID
    # the key fails now: its dependents are skipped by the workers, and theirs
    write_repo(repo, key_fails=True)
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 1, out
    by_id = {d["id"]: d for d in report["deployments"]}
    assert by_id[KMS]["status"] in ("failed", "rolled_back"), out
    assert by_id[S3]["status"] == by_id[IAM]["status"] == by_id["iam/acct-c/us-east-1/late"]["status"] == "skipped"
    assert by_id[IAM]["error"] == f"not run: it depends on {KMS}, which failed"
    assert by_id["iam/acct-c/us-east-1/late"]["error"] == f"not run: it depends on {IAM}, which was skipped"


def _atomic_across_three_levels(repo: Repo, tmp_path: Path) -> None:
    """Level 3 fails: --atomic takes everything back, the role and the bucket (level 2) before the key
    (level 1) they were built on."""
    platform = repo.root / "Accounts/acct-b/platform.tfvars"
    platform.write_text(platform.read_text().replace('policy_file = "policies/deployer.json"',
                                                     'policy_file = "policies/deployer.json", delay_seconds = 2'))
    repo.write("Accounts/acct-c/late.tfvars", f"""\
        tfo_depends_on = ["{IAM}"]
        iam_roles = {{
          breaks = {{ policy_file = "../acct-b/policies/deployer.json", fail = true }}
        }}
        """)
    code, report, out = _run(repo, tmp_path, "apply", "--atomic")
    assert code == 1, out
    by_id = {d["id"]: d["status"] for d in report["deployments"]}
    assert by_id["iam/acct-c/us-east-1/late"] in ("failed", "rolled_back")  # level 3: after the role it needs
    assert {by_id[KMS], by_id[S3], by_id[IAM]} == {"rolled_back"}, out
    assert not any(n.startswith(("kms.", "s3.", "iam.")) for n in repo.world_state())  # all taken back
    deleted = {e["name"].split(".")[0] + "." + e["name"].split(".")[1]: e["t"] for e in repo.journal()
               if e["op"] == "delete" and e["event"] == "done"}
    assert deleted["iam.acct-b"] < deleted["kms.acct-a"] and deleted["s3.acct-a"] < deleted["kms.acct-a"], deleted


def test_atomic_rolls_back_dependents_before_what_they_depend_on(repo: Repo, tmp_path: Path) -> None:
    write_repo(repo)
    _atomic_across_three_levels(repo, tmp_path)


def test_atomic_through_celery_rolls_back_dependents_first(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    write_repo(repo)  # before the workers start: they read the accounts' settings once
    workers.start("w1")
    workers.start("w2")
    _atomic_across_three_levels(repo, tmp_path)


def test_a_saved_plan_is_stale_once_an_upstream_it_read_has_moved(repo: Repo, tmp_path: Path) -> None:
    """The plan holds the upstream's outputs as they were when it was made: applying it after the upstream's
    own apply changed them would build on the old values."""
    write_repo(repo)
    code, report, out = _run(repo, tmp_path, "plan")
    assert code == 0, out
    code, report, out = _run(repo, tmp_path, "apply", "--from-plan", report["run_id"])
    assert code == 1, out
    by_id = {d["id"]: d for d in report["deployments"]}
    assert by_id[KMS]["status"] == "succeeded"  # the key's plan read no upstream: applied as reviewed
    for downstream in (S3, IAM):
        assert by_id[downstream]["status"] == "stale", out
        assert f"the outputs of {KMS}, which it depends on, changed since the plan" in by_id[downstream]["error"]
    assert not any(n.startswith(("s3.", "iam.")) for n in repo.world_state())
    # planned again, against the key as it is: applied, and the bucket carries the key's id
    code, report, out = _run(repo, tmp_path, "plan")
    assert code == 0, out
    code, report, out = _run(repo, tmp_path, "apply", "--from-plan", report["run_id"])
    assert code == 0, out
    assert {d["id"]: d["status"] for d in report["deployments"]} == {KMS: "no_changes", S3: "succeeded",
                                                                     IAM: "succeeded"}
    assert json.loads(repo.world_state()["s3.acct-a.us-west-2.lake.raw"]["content"])["kms_key_id"] == KEY_ID


def test_a_dependent_is_rolled_back_against_what_its_upstream_returns_to(repo: Repo, tmp_path: Path) -> None:
    """--atomic rolls the bucket back before the key; the bucket's old configuration reads key `main`, which
    the failed run replaced by `other`: it is given the key's outputs from the key's pre-apply backup (what
    the key's own rollback returns to), not the key's new ones."""
    write_repo(repo)
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 0, out
    lake = repo.root / "Accounts/acct-a/lake.tfvars"
    lake.write_text(lake.read_text().replace("main = {", "other = {")
                    .replace('raw = { kms_key = "main" }', 'raw = { kms_key = "other", fail = true }'))
    code, report, out = _run(repo, tmp_path, "apply", "--atomic")
    assert code == 1, out
    by_id = {d["id"]: d for d in report["deployments"]}
    assert by_id[S3]["status"] == by_id[KMS]["status"] == "rolled_back", out
    assert by_id[S3]["rollback"]["matches_target"] is True, by_id[S3]["rollback"]
    world = repo.world_state()
    assert KEY_ID in world and "kms.acct-a.us-west-2.lake.other" not in world
    assert json.loads(world["s3.acct-a.us-west-2.lake.raw"]["content"])["kms_key_id"] == KEY_ID
    lake.write_text(lake.read_text().replace("other = {", "main = {")
                    .replace('raw = { kms_key = "other", fail = true }', 'raw = { kms_key = "main" }'))
    again = _run(repo, tmp_path, "plan")  # back where it was: the old tfvars plan no change
    assert again[0] == 0 and {d["status"] for d in again[1]["deployments"]} == {"no_changes"}, again[2]


def test_a_deployment_sent_twice_runs_once_and_a_settled_one_sends_nothing_again(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    """A second copy of a deployment waits for the first one's lease and reports its result instead of
    planning and recording again; a deployment settled again (its task redelivered after it sent its
    dependents) finds them and the run's finalize sent."""
    from orchestrator.config import load_config
    from orchestrator.store import open_store
    from workers import dag
    from workers.app import make_app

    repo, workers = celery_repo
    write_repo(repo, delay=4)  # before the workers start: they read the accounts' settings once
    workers.start("w1")
    workers.start("w2")
    started = repo.tfo("apply", "--no-wait", timeout=60)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 90
    while not any(e["event"] == "start" and e["name"].startswith("kms.") for e in repo.journal()):
        assert time.monotonic() < deadline, "the key's apply never started"
        time.sleep(0.1)
    cfg = load_config(repo.root / "tfo.toml", repo_root=repo.root, environ=repo.env)
    app = make_app(cfg)
    try:
        copy = app.send_task("tfo.deploy", args=(run_id, KMS), kwargs={"dag": True},
                             task_id=f"{run_id}.deploy.copy", queue="tfo")
        answer = copy.get(timeout=180)
        summary = _finished(repo, run_id, deadline + 180)
        by_id = {d["id"]: d for d in summary["deployments"]}
        assert {d["status"] for d in by_id.values()} == {"succeeded"}, summary
        # the copy reported the first attempt's result, its host and all (no "resumed", no second verdict)
        assert (answer["status"], answer["host"], answer["error"]) == ("succeeded", by_id[KMS]["host"], ""), answer
        assert Counter(e["name"] for e in repo.journal() if e["event"] == "start")[KEY_ID] == 1
        # settled again, as the key's task redelivered would be (its own id) or a sibling: its dependents and
        # the finalize were sent already, by nobody again
        store = open_store(cfg)
        for me in (dag.load_graph(store, run_id).task_ids[KMS], "another-task"):
            assert dag.settle(app, store, run_id, KMS, me) == dag.Settled(sent=(), finalized=False)
        # a finalize sent twice: the copy finds the run finalized and ends nothing again
        again = app.send_task("tfo.finalize", args=([], run_id), kwargs={"collect": True, "sent_as": "copy"},
                              task_id=f"{run_id}.finalize.copy", queue="tfo.finalize").get(timeout=60)
        assert again == {"run_id": run_id, "finalized": False, "reason": "finalized already"}
        assert _finished(repo, run_id, deadline + 180)["finished_at"] == summary["finished_at"]
    finally:
        app.close()


def _finished(repo: Repo, run_id: str, deadline: float) -> dict[str, Any]:
    while True:
        summary = json.loads(repo.tfo("runs", "show", run_id).stdout)
        if summary["status"] != "running":
            return summary  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(1)


def test_a_deployment_whose_task_raised_is_lost_and_the_run_still_ends(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    """A deploy task that raises (here: its spec in the store is unreadable) is settled by its error callback:
    the deployment is reported lost, what depends on it is skipped, the rest goes on, the run finalizes."""
    from orchestrator import keys
    from orchestrator.config import load_config
    from orchestrator.store import open_store

    repo, workers = celery_repo
    write_repo(repo, delay=3)  # before the workers start: they read the accounts' settings once
    workers.start("w1")
    workers.start("w2")
    repo.write("Accounts/acct-a/reader.tfvars", f'region = "us-west-2"\ntfo_depends_on = ["{S3}"]\n'
                                                 "iam_roles = {\n  reader = {}\n}\n")
    started = repo.tfo("apply", "--no-wait", timeout=60)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().splitlines()[-1]
    # before the key is done (it sleeps 3 s in its apply), so before the bucket's task is sent
    store = open_store(load_config(repo.root / "tfo.toml", repo_root=repo.root, environ=repo.env))
    store.put(keys.deployment_spec(run_id, S3), b"not a spec")
    summary = _finished(repo, run_id, time.monotonic() + 240)
    by_id = {d["id"]: d for d in summary["deployments"]}
    assert by_id[KMS]["status"] == by_id[IAM]["status"] == "succeeded", summary
    assert by_id[S3]["status"] == "failed" and "deployment lost" in by_id[S3]["error"], by_id[S3]
    reader = by_id["iam/acct-a/us-west-2/reader"]
    assert (reader["status"], reader["error"]) == ("skipped", f"not run: it depends on {S3}, which did not finish")
    assert summary["status"] == "failed"
    assert not any(e["name"].startswith(("s3.", "iam.acct-a")) for e in repo.journal())
    assert "deployment s3/acct-a/us-west-2/lake of run" in workers.log("w1") + workers.log("w2")


def test_a_deployment_revoked_before_it_ran_is_settled_by_the_watch(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    """No task reports a revoked deployment (no error callback runs): the watch finds its task REVOKED and no
    done checkpoint, and settles it lost, so what depends on it is skipped and the run ends."""
    from orchestrator import keys
    from orchestrator.config import load_config
    from workers.app import make_app

    repo, workers = celery_repo
    write_repo(repo, delay=3)
    repo.write("Accounts/acct-a/reader.tfvars", f'region = "us-west-2"\ntfo_depends_on = ["{S3}"]\n'
                                                 "iam_roles = {\n  reader = {}\n}\n")
    workers.start("w1")
    workers.start("w2")
    started = repo.tfo("apply", "--no-wait", timeout=60)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().splitlines()[-1]
    app = make_app(load_config(repo.root / "tfo.toml", repo_root=repo.root, environ=repo.env))
    try:
        app.control.revoke(f"{run_id}.deploy.{keys.slug(S3)}")  # before the key is done, so before it is sent
    finally:
        app.close()
    summary = _finished(repo, run_id, time.monotonic() + 180)
    by_id = {d["id"]: d for d in summary["deployments"]}
    assert by_id[KMS]["status"] == by_id[IAM]["status"] == "succeeded", summary
    assert by_id[S3]["status"] == "failed" and "deployment lost" in by_id[S3]["error"], by_id[S3]
    assert by_id["iam/acct-a/us-west-2/reader"]["status"] == "skipped"
    assert not any(e["name"].startswith("s3.") for e in repo.journal())  # it never ran


def test_a_send_claim_is_one_tasks_until_it_is_stale_or_sent(redis: Any, tmp_path: Path) -> None:
    from orchestrator.config import CeleryConfig, TfoConfig
    from workers import dag
    from workers.app import make_app

    app = make_app(TfoConfig(repo_root=tmp_path, celery=CeleryConfig(broker_url=redis.url)))
    client = dag.redis_of(app)
    try:
        assert dag.claim(client, "tfo-dag:r1:send:x", "task-1", 60)
        assert not dag.claim(client, "tfo-dag:r1:send:x", "task-2", 60)  # a sibling: the first one sends
        assert dag.claim(client, "tfo-dag:r1:send:x", "task-1", 60)  # task-1 redelivered: its own claim
        assert dag.claim(client, "tfo-dag:r1:send:y", "task-2", 60)  # another message: its own claim
        # a claim whose task never came back (its time on Redis' clock): taken over once stale
        client.set("tfo-dag:r1:send:x", f"task-1 {int(client.time()[0]) - dag.CLAIM_STALE_S - 1}")
        assert dag.claim(client, "tfo-dag:r1:send:x", "task-2", 60)
        dag.sent(client, "tfo-dag:r1:send:x", 60)
        assert not dag.claim(client, "tfo-dag:r1:send:x", "task-2", 60)  # sent: by nobody again
        assert 0 < client.ttl("tfo-dag:r1:send:x") <= 60
    finally:
        app.close()


def test_outputs_too_large_for_the_environment_reach_terraform_in_a_file(repo: Repo, tmp_path: Path) -> None:
    """An environment string over 128 KiB stops terraform from starting (E2BIG): large outputs go in a
    var file, and strings stay literal there too. The upstream is not in the run: read as last applied."""
    from orchestrator.config import load_config
    from orchestrator.store import open_store

    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + "\n[tfo.dependencies]\ns3 = [\"kms\"]\n")
    repo.write("Accounts/acct-a/lake.tfvars", """\
        region = "us-west-2"
        s3_buckets = {
          raw = { kms_key = "main" }
        }
        """)
    repo.write("Accounts/acct-a/keys.tfvars", 'region = "us-west-2"\nkms_keys = {}\n')
    key = "kms/acct-a/us-west-2/keys"
    lake = repo.root / "Accounts/acct-a/lake.tfvars"
    lake.write_text(f'tfo_depends_on = ["{key}"]\n' + lake.read_text())
    key_id = "key-${not.a.template}-%{if x}☃"
    outputs = {"key_ids": {"value": {"main": key_id}, "type": "any"},
               "policy": {"value": "x" * 200_000, "type": "string"}}
    state = {"version": 4, "terraform_version": "1.0.3", "serial": 3, "lineage": "fixed", "outputs": outputs,
             "resources": []}
    store = open_store(load_config(toml, repo_root=repo.root, environ=repo.env))
    store.restore_state(f"{key}/terraform.tfstate", json.dumps(state).encode())
    code, report, out = _run(repo, tmp_path, "apply", "Accounts/acct-a/lake.tfvars")
    assert code == 0, out
    assert [d["id"] for d in report["deployments"]] == [S3]
    bucket = json.loads(repo.world_state()["s3.acct-a.us-west-2.lake.raw"]["content"])
    assert bucket["kms_key_id"] == key_id


def test_workers_that_cannot_read_a_graph_run_do_not_leave_the_client_waiting(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    """A worker with another store key than the producer's: every deployment is lost, each dependent settles
    in turn, finalize cannot read the run either, and the client hears it (exit 3) instead of waiting."""
    from cryptography.fernet import Fernet

    from tests.slack_stub import SlackStub

    repo, workers = celery_repo
    write_repo(repo)
    slack = SlackStub()
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + f'\n[tfo.alerts]\nslack_webhook_url = "{slack.url}"\n')
    workers.start("w1", env={"TFO_STORE_ENCRYPTION_KEY": Fernet.generate_key().decode()})
    started = time.monotonic()
    try:
        r = repo.tfo("apply", timeout=240)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "cannot be finalized by the workers" in r.stderr and "cannot decrypt" in r.stderr, r.stderr
        assert time.monotonic() - started < 150
        assert repo.journal() == []  # nothing ran
        run_id = r.stderr.split("run ", 1)[1].split(",", 1)[0]
        # and a person hears of it: the reconciler's failure is alerted
        (message,) = _until_one(slack.messages)
        assert f"tfo run `{run_id}` could not be finalized" in message and "cannot decrypt" in message, message
    finally:
        slack.server.shutdown()


def _until_one(messages: list[str], timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while not messages and time.monotonic() < deadline:
        time.sleep(0.2)
    return messages
