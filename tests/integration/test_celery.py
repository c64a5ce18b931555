"""The distributed executor against a real redis-server and real `tfo worker` processes (never eager)."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import REDIS_PASSWORD, RedisServer, Workers
from tests.helpers import FIRST_APPLY_WORLD, SECRET_PASSWORD, SECRET_TOKEN, Repo, write_sample

pytestmark = pytest.mark.integration
STORE = Path(".tfo") / "store"


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in report["deployments"]}


def _no_locks_left(repo: Repo) -> None:
    store = repo.root / STORE
    assert list((store / "locks").glob("*.lease")) == [], "lease left behind"
    assert list(store.rglob("*.lock.info")) == [], "terraform state lock left behind"


def _state_matches_world(repo: Repo, state_key: str, prefix: str) -> None:
    state = json.loads((repo.root / STORE / state_key).read_text())
    in_state = {i["attributes"]["name"] for r in state["resources"] for i in r["instances"]}
    in_world = {n for n in repo.world_state() if n.startswith(prefix)}
    assert in_state == in_world


def _wait_for_journal(repo: Repo, event: str = "start", timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not any(e["event"] == event for e in repo.journal()):
        assert time.monotonic() < deadline, f"no {event!r} in the provider journal"
        time.sleep(0.1)


def test_fan_out_over_two_workers(celery_repo: tuple[Repo, Workers], redis: RedisServer, tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo, delay=2)
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "celery executor" in r.stderr
    report = _report(out)
    assert {d["status"] for d in report["deployments"]} == {"succeeded"}
    hosts = {d["host"].split("@")[0] for d in report["deployments"]}
    assert hosts == {"w1", "w2"}, hosts  # deployments really ran on both workers
    assert set(repo.world_state()) == FIRST_APPLY_WORLD  # the same world as the local executor makes
    for d in report["deployments"]:
        _state_matches_world(repo, d["state_key"], d["service"] + ".")
    # task arguments and results carry no secrets: Flower and the result backend show only ids
    for name in ("w1", "w2"):
        assert SECRET_TOKEN not in workers.log(name) and SECRET_PASSWORD not in workers.log(name)
    _no_locks_left(repo)
    # results are references (the whole result is in the store): small per deployment in Redis,
    # finalize's arguments included
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis.url)
    metas = {k.decode(): client.get(k) or b"" for k in client.scan_iter("celery-task-meta-*")}
    deploys = [v for k, v in metas.items() if ".deploy." in k]
    (final,) = [v for k, v in metas.items() if k.endswith(".finalize")]
    assert len(deploys) == len(report["deployments"]) and max(len(v) for v in deploys) < 1024, \
        max(len(v) for v in deploys)
    assert len(final) < 400 + 400 * len(deploys), len(final)


def test_failure_is_rolled_back_by_the_chord_callback_and_atomic_rolls_back_all(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo)
    assert repo.tfo("apply", timeout=240).returncode == 0
    before = repo.world_state()

    write_sample(repo, failing=True)
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out), timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr
    report = _report(out)
    deps = _by_id(report)
    assert deps["s3/acct-a/us-west-2/data-lake"]["status"] == "rolled_back"
    assert deps["s3/acct-a/us-west-2/data-lake"]["rollback"]["matches_target"] is True
    assert deps["kms/acct-a/us-west-2/data-lake"]["status"] in ("succeeded", "no_changes")
    assert repo.world_state() == before
    assert report["audit_key"] and (repo.root / STORE / report["audit_key"]).exists()
    # the client shows every deployment's last line, the one finalize decided included, before it exits
    last = {}
    for line in r.stderr.splitlines():
        if line.startswith("[tfo"):
            dep_id, phase = line.split("] ", 1)[1].split(" ")[:2]
            last[dep_id] = phase.rstrip(":")
    assert last == {d: v["status"] for d, v in deps.items()}, (last, r.stderr[-3000:])

    p = repo.root / "Accounts/acct-a/data-lake.tfvars"
    p.write_text(p.read_text().replace("lake = { rotation = true }", "lake = { rotation = false }"))
    out2 = tmp_path / "atomic.json"
    r = repo.tfo("apply", "--atomic", "--json-out", str(out2), timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr
    deps = _by_id(_report(out2))
    assert deps["s3/acct-a/us-west-2/data-lake"]["status"] == "rolled_back"
    assert deps["kms/acct-a/us-west-2/data-lake"]["status"] == "rolled_back"
    assert repo.world_state() == before
    assert _report(out2)["audit_key"]
    _no_locks_left(repo)


def test_zero_and_one_deployment_runs(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    write_sample(repo)
    repo.write("README.md", "docs\n")
    out = tmp_path / "zero.json"
    r = repo.tfo("apply", "--changed-files", "-", "--json-out", str(out), input="README.md\n", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _report(out)["deployments"] == [] and _report(out)["status"] == "succeeded"
    out = tmp_path / "one.json"
    r = repo.tfo("apply", "Accounts/acct-b/platform.tfvars", "--json-out", str(out), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [d["status"] for d in _report(out)["deployments"]] == ["succeeded"]


def test_a_policy_refusal_travels_with_the_run_to_workers_started_without_it(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    """The producer fixes the rules in the run: a worker whose own config has none still blocks the destroy."""
    repo, workers = celery_repo
    workers.start("w1")  # reads tfo.toml now, before it has a [tfo.policy]
    write_sample(repo)
    assert repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars", timeout=180).returncode == 0
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + '\n[tfo.policy]\nprotect_destroy = ["tfotest_*"]\n')
    lake = repo.root / "Accounts/acct-a/data-lake.tfvars"
    lake.write_text("\n".join(ln for ln in lake.read_text().splitlines() if "curated" not in ln) + "\n")
    out = tmp_path / "blocked.json"
    r = repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars", "--json-out", str(out), timeout=180)
    assert r.returncode == 4, r.stdout + r.stderr
    statuses = {d["service"]: (d["status"], [v["rule"] for v in d["policy"]]) for d in _report(out)["deployments"]}
    assert statuses == {"s3": ("blocked", ["protect_destroy"]), "kms": ("no_changes", [])}
    assert "s3.acct-a.us-west-2.data-lake.curated" in repo.world_state()


def test_no_wait_then_runs_show_and_cancel(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        s3_buckets = {
          slow = { delay_seconds = 8 }
        }
        """)
    r = repo.tfo("apply", "--no-wait", timeout=60)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    _wait_for_journal(repo)
    live = repo.tfo("runs", "show", run_id)
    data = json.loads(live.stdout)
    assert data["status"] == "running"
    assert live.returncode == 0 and (data["done"], data["total"]) == (0, 1)  # running is not failed
    (dep,) = data["deployments"].values()
    assert dep["phase"] == "apply" and dep["host"].startswith("w1@")
    assert repo.tfo("runs", "cancel", run_id).returncode == 0
    deadline = time.monotonic() + 120
    while True:
        shown = repo.tfo("runs", "show", run_id)
        summary = json.loads(shown.stdout)
        if summary["status"] != "running":
            break
        assert time.monotonic() < deadline, "cancelled run never finished"
        time.sleep(1)
    assert summary["status"] == "cancelled"
    assert summary["deployments"][0]["status"] == "cancelled"
    _no_locks_left(repo)
    _state_matches_world(repo, "s3/acct-a/us-east-1/data-lake/terraform.tfstate", "s3.")


def test_an_apply_that_completes_after_the_cancel_is_recorded_succeeded(celery_repo: tuple[Repo, Workers],
                                                                        tmp_path: Path) -> None:
    """`tfo runs cancel` reaches a deployment mid-apply: tfo sends terraform one SIGINT, but this terraform
    finishes anyway ("Apply complete!", exit 0; here the signal never reaches it: it runs in a session of its
    own behind a wrapper that ignores SIGINT). Its outcome decides: succeeded, with its last-good recorded,
    so a later rollback targets this apply; the deployment queued behind it is cancelled; nothing is rolled
    back."""
    repo, workers = celery_repo
    wrapper = tmp_path / "terraform-that-finishes"
    wrapper.write_text(f"#!/bin/sh\ntrap '' INT\nexec setsid -w {repo.env['TFO_TERRAFORM_BIN']} \"$@\"\n")
    wrapper.chmod(0o755)
    env = {"TFO_TERRAFORM_BIN": str(wrapper)}
    workers.start("w1", env=env)  # one process: the second deployment waits behind the first
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        s3_buckets = {
          slow = { delay_seconds = 6 }
        }
        """)
    repo.write("Accounts/acct-b/platform.tfvars", """\
        iam_roles = {
          deployer = { policy_file = "policies/deployer.json" }
        }
        """)
    repo.write("Accounts/acct-b/policies/deployer.json", '{"Statement": []}\n')
    r = repo.tfo("apply", "--no-wait", timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    _wait_for_journal(repo)  # the bucket's create has started
    assert repo.tfo("runs", "cancel", run_id).returncode == 0
    deadline = time.monotonic() + 120
    while (summary := json.loads(repo.tfo("runs", "show", run_id).stdout))["status"] == "running":
        assert time.monotonic() < deadline, "the cancelled run never finished"
        time.sleep(1)
    by_id = {d["id"]: d for d in summary["deployments"]}
    s3, iam = by_id["s3/acct-a/us-east-1/data-lake"], by_id["iam/acct-b/us-east-1/platform"]
    assert s3["status"] == "succeeded" and s3["rollback"] is None, (s3["error"], s3)
    assert iam["status"] == "cancelled" and "not started" in iam["error"], iam
    assert summary["status"] == "cancelled"
    assert set(repo.world_state()) == {"s3.acct-a.us-east-1.data-lake.slow"}
    last_good = json.loads((repo.root / STORE / "last-good/s3/acct-a/us-east-1/data-lake.json").read_text())
    assert last_good["run_id"] == run_id  # what a rollback would go back to is this apply
    audit = repo.tfo("audit", "show", run_id)
    assert "Apply complete!" in audit.stdout
    _no_locks_left(repo)
    _state_matches_world(repo, "s3/acct-a/us-east-1/data-lake/terraform.tfstate", "s3.")


def _creates(repo: Repo) -> Counter[str]:
    return Counter(e["name"] for e in repo.journal() if e["event"] == "start" and e["op"] == "create")


def test_worker_sigkilled_mid_apply(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        s3_buckets = {
          one = { delay_seconds = 6 }
          two = { delay_seconds = 6 }
        }
        """)
    out = tmp_path / "r.json"
    client = repo.popen("apply", "--json-out", str(out))
    _wait_for_journal(repo)
    workers.start("w2")
    workers.kill("w1")  # main process and pool child, mid-apply
    stdout, stderr = client.communicate(timeout=300)  # terminal in bounded time
    report = _report(out)
    (dep,) = report["deployments"]
    assert dep["status"] in ("succeeded", "rolled_back"), (dep, stdout, stderr)
    assert dep["host"].startswith("w2@")  # the redelivered task finished the job on the other worker
    assert max(_creates(repo).values()) == 1, "a resource was created twice"
    _no_locks_left(repo)
    _state_matches_world(repo, dep["state_key"], "s3.")
    assert len(list((repo.root / STORE / "backups/s3").rglob("*.tfstate.*Z"))) == 1  # backed up once


def test_redis_restart_mid_run(celery_repo: tuple[Repo, Workers], redis: RedisServer, tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo, delay=4)
    out = tmp_path / "r.json"
    client = repo.popen("apply", "--json-out", str(out))
    _wait_for_journal(repo)
    redis.stop()
    time.sleep(2)
    redis.start()
    stdout, stderr = client.communicate(timeout=300)
    assert out.exists(), stdout + stderr
    report = _report(out)
    # Terminal, and every deployment either finished (redelivered or resumed) or, when its apply was
    # interrupted half-way, was recorded failed and rolled back; never applied twice.
    statuses = {d["id"]: d["status"] for d in report["deployments"]}
    assert set(statuses.values()) <= {"succeeded", "rolled_back"}, (report, stdout, stderr)
    assert statuses["iam/acct-b/us-east-1/platform"] == "succeeded"
    assert report["audit_key"]
    assert not _creates(repo) or max(_creates(repo).values()) == 1, "a resource was created twice"
    for d in report["deployments"]:
        _state_matches_world(repo, d["state_key"], d["service"] + ".")
        if d["status"] == "rolled_back":
            assert d["rollback"]["matches_target"] is True
            assert not [n for n in repo.world_state() if n.startswith(d["service"] + ".")]
    _no_locks_left(repo)


def test_two_runs_on_one_deployment_never_interleave(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        s3_buckets = {
          one = { versioning = true, delay_seconds = 3 }
        }
        """)
    a = repo.popen("apply", "--json-out", str(tmp_path / "a.json"))
    b = repo.popen("apply", "--json-out", str(tmp_path / "b.json"))
    out_a = a.communicate(timeout=240)
    out_b = b.communicate(timeout=240)
    assert a.returncode == 0 and b.returncode == 0, (out_a, out_b)
    spans: dict[int, list[float]] = {}
    for e in repo.journal():
        spans.setdefault(e["terraform_pid"], []).append(e["t"])
    ordered = sorted((min(t), max(t)) for t in spans.values())
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert end < start, f"applies interleaved: {ordered}"
    _no_locks_left(repo)


def test_flower_shows_readable_tasks_without_secrets_behind_basic_auth(
        celery_repo: tuple[Repo, Workers], redis: RedisServer, tmp_path: Path) -> None:
    import base64
    import subprocess
    import sys
    import urllib.error
    import urllib.parse
    import urllib.request

    from tests.helpers import free_port

    repo, workers = celery_repo
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - closed below
    flower = subprocess.Popen([sys.executable, "-m", "cli.main", "flower", "--port", str(port)], cwd=repo.root,
                              env={**repo.env, "TFO_FLOWER_BASIC_AUTH": "ops:flower-pass-123"},
                              stdout=log, stderr=subprocess.STDOUT)
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:flower-pass-123").decode()}

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback test server
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get("/healthcheck")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
            time.sleep(0.3)
        workers.start("w1")
        write_sample(repo)
        assert repo.tfo("apply", timeout=240).returncode == 0
        assert get("/metrics")[0] == 401  # not exposed unauthenticated
        assert get("/api/tasks")[0] == 401
        assert get("/metrics", auth)[0] == 200
        time.sleep(2)  # let Flower take in the last events
        status, body = get("/api/tasks", auth)
        assert status == 200
        tasks = json.loads(body)
        names = {t["name"] for t in tasks.values()}
        assert {"tfo.deploy", "tfo.finalize"} <= names
        deploy_args = {t["args"] for t in tasks.values() if t["name"] == "tfo.deploy"}
        assert any("s3/acct-a/us-west-2/data-lake" in a for a in deploy_args)  # says which deployment runs
        assert SECRET_TOKEN not in body and SECRET_PASSWORD not in body
        # The worker's config as Flower shows it (Config tab, /api/workers): the broker is there, masked.
        status, body = get("/api/workers?refresh=1", auth)
        assert status == 200
        conf = json.loads(body)["w1@" + socket.gethostname()]["conf"]
        assert conf["task_acks_late"] is True and f"127.0.0.1:{redis.port}" in conf["broker_url"]
        assert REDIS_PASSWORD not in body and "tfo_config" not in body
        status, page = get(f"/worker/w1@{socket.gethostname()}", auth)
        assert status == 200 and "task_acks_late" in page
        assert REDIS_PASSWORD not in page

        # A failed deployment is a SUCCESS task (deploy never raises, so the chord's callback runs), and
        # is found by its result: Flower's search `result:failed` (README, Distributed mode).
        write_sample(repo, failing=True)
        assert repo.tfo("apply", timeout=240).returncode == 1
        time.sleep(2)
        status, body = get("/api/tasks?taskname=tfo.deploy&search=" + urllib.parse.quote("result:failed"), auth)
        assert status == 200
        found = json.loads(body)
        assert found and all("'failed'" in t["result"] for t in found.values())
        assert any("s3/acct-a/us-west-2/data-lake" in t["args"] for t in found.values())
        everything = json.loads(get("/api/tasks?taskname=tfo.deploy", auth)[1])
        assert len(everything) > len(found)  # the ones that succeeded are not in the search
    finally:
        flower.terminate()
        flower.wait(timeout=20)
        log.close()


def test_ctrl_c_on_a_waiting_client_does_not_cancel_the_run(celery_repo: tuple[Repo, Workers]) -> None:
    import signal

    repo, workers = celery_repo
    workers.start("w1")
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        s3_buckets = {
          slow = { delay_seconds = 4 }
        }
        """)
    client = repo.popen("apply")
    _wait_for_journal(repo)
    client.send_signal(signal.SIGINT)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 1 and "goes on" in stderr
    run_id = stderr.split("run ", 1)[1].split(",", 1)[0]
    deadline = time.monotonic() + 120
    while json.loads(repo.tfo("runs", "show", run_id).stdout)["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(1)
    summary = json.loads(repo.tfo("runs", "show", run_id).stdout)
    assert summary["status"] == "succeeded"
    assert set(repo.world_state()) == {"s3.acct-a.us-east-1.data-lake.slow"}


def test_soft_time_limit_stops_terraform_and_records_cancelled(celery_repo: tuple[Repo, Workers],
                                                               tmp_path: Path) -> None:
    repo, workers = celery_repo
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text().replace("soft_time_limit_s = 30", "soft_time_limit_s = 12")
                    .replace("time_limit_s = 35", "time_limit_s = 60").replace("visibility_timeout_s = 40",
                                                                               "visibility_timeout_s = 90"))
    workers.start("w1")
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        s3_buckets = {
          slow = { delay_seconds = 20 }
        }
        """)
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out), timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    (dep,) = _report(out)["deployments"]
    assert dep["status"] == "cancelled" and "time limit" in dep["error"]
    assert dep["rollback"] is None
    _no_locks_left(repo)
    # terraform finished its in-flight operation and recorded it: state and world agree
    _state_matches_world(repo, dep["state_key"], "s3.")


def test_workers_that_cannot_read_the_run_do_not_leave_the_client_waiting(
        celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    repo, workers = celery_repo
    # A misconfigured worker: another store key than the producer's, so it cannot decrypt the run spec.
    workers.start("w1", env={"TFO_STORE_ENCRYPTION_KEY": Fernet.generate_key().decode()})
    write_sample(repo)
    started = time.monotonic()
    r = repo.tfo("apply", timeout=240)
    assert r.returncode == 3, r.stdout + r.stderr  # tfo could not run: the platform's fault
    assert "cannot be finalized by the workers" in r.stderr and "cannot decrypt" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 120
    assert repo.journal() == []  # nothing ran
    _no_locks_left(repo)


def test_a_saved_plan_is_applied_by_workers_and_only_once(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo)
    plan = repo.tfo("plan", "--json-out", str(tmp_path / "plan.json"), timeout=180)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    planned = _report(tmp_path / "plan.json")["run_id"]
    lake = repo.root / "Accounts/acct-a/data-lake.tfvars"
    lake.write_text(lake.read_text().replace("raw ", "extra = {}\n  raw "))  # not what was reviewed
    out = tmp_path / "applied.json"
    applied = repo.tfo("apply", "--from-plan", planned, "--json-out", str(out), timeout=180)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert {d["status"] for d in _report(out)["deployments"]} == {"succeeded"}
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    again = repo.tfo("apply", "--from-plan", planned, "--json-out", str(out), timeout=180)
    assert again.returncode == 1, again.stdout + again.stderr
    assert {d["status"] for d in _report(out)["deployments"]} == {"stale"}


def test_drift_detection_and_remediation_fan_out_to_workers(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo)
    assert repo.tfo("apply", timeout=180).returncode == 0
    (repo.world / "s3.acct-a.us-west-2.data-lake.raw.json").unlink()
    out = tmp_path / "drift.json"
    found = repo.tfo("drift", "--json-out", str(out), timeout=180)
    assert found.returncode == 5, found.stdout + found.stderr
    statuses = {d["id"]: (d["status"], d["severity"]) for d in _report(out)["deployments"]}
    assert statuses["s3/acct-a/us-west-2/data-lake"] == ("drifted", "high")
    assert {s for i, s in statuses.items() if not i.startswith("s3/")} == {("in_sync", None)}
    assert "s3.acct-a.us-west-2.data-lake.raw" not in repo.world_state()  # detection changed nothing
    fixed = repo.tfo("drift", "--remediate", "--json-out", str(out), timeout=180)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
