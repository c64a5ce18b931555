"""SIGKILL of the worker running a rollback: the finalize task (the chord's callback) rolls a failed apply
back; killing it mid-rollback must not leave the deployment half rolled back, a lock behind, or an
operation run twice.

Trial 0 kills only the pool child running finalize (Celery requeues it at once: reject_on_worker_lost);
trial 1 the whole worker (the task comes back after the visibility timeout). Terraform runs in its own
session, so the killed rollback's terraform finishes; the redelivered finalize must wait for it, then
finish the rollback and the run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import RedisServer, Workers, two_workers
from tests.helpers import Repo

pytestmark = pytest.mark.integration
STORE = Path(".tfo") / "store"
STATE_KEY = "s3/acct-a/us-west-2/data-lake/terraform.tfstate"
OP_S = 2  # each resource operation sleeps this long in the provider, rollback's included


@pytest.fixture
def cluster(repo: Repo, redis: RedisServer, tmp_path: Path) -> Iterator[tuple[Repo, Workers]]:
    # finalize with a rollback takes ~10 s; the whole-worker trial waits out the visibility timeout once
    with two_workers(repo, redis.url, tmp_path, soft_s=25, hard_s=28, visibility_s=30) as workers:
        yield repo, workers


def _write(repo: Repo, trial: int, failing: bool) -> None:
    buckets = (f"t{trial}a = {{ versioning = false, delay_seconds = {OP_S} }}\n"
               f"t{trial}b = {{ versioning = true, delay_seconds = {OP_S} }}\n"
               f"t{trial}x = {{ fail = true }}\n") if failing else (
              f"t{trial}a = {{ versioning = true, delay_seconds = {OP_S} }}\n")
    repo.write("Accounts/acct-a/data-lake.tfvars", f'region = "us-west-2"\ns3_buckets = {{\n{buckets}}}\n')


def _names_in_state(repo: Repo) -> set[str]:
    state = json.loads((repo.root / STORE / STATE_KEY).read_text())
    return {i["attributes"]["name"] for r in state["resources"] for i in r["instances"]}


@pytest.mark.parametrize("whole", [False, True], ids=["pool-child", "whole-worker"])
def test_sigkill_mid_rollback(cluster: tuple[Repo, Workers], tmp_path: Path, whole: bool) -> None:
    repo, workers = cluster
    trial = int(whole)
    _write(repo, trial, failing=False)
    first = repo.tfo("apply", timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    before = repo.world_state()
    since = len(repo.journal())

    _write(repo, trial, failing=True)
    out = tmp_path / "r.json"
    client = repo.popen("apply", "--json-out", str(out))
    # The rollback's first operation: a `start` after the failure, by another terraform than the apply's.
    deadline = time.monotonic() + 180
    while True:
        events = repo.journal()[since:]
        failed = next((e for e in events if e["event"] == "fail"), None)
        rollback_ops = [e for e in events if failed and e["event"] == "start" and e["t"] > failed["t"]
                        and e["terraform_pid"] != failed["terraform_pid"]]
        if rollback_ops:
            break
        assert time.monotonic() < deadline and client.poll() is None, "the rollback never started"
        time.sleep(0.05)
    owner = workers.owner_of(rollback_ops[0]["terraform_pid"])
    assert owner is not None, "no worker runs the rollback's terraform"
    name, child = owner
    time.sleep(OP_S / 2)  # mid-operation
    if whole:
        workers.kill(name)
        workers.start(name)
    else:
        os.kill(child, signal.SIGKILL)
    stdout, stderr = client.communicate(timeout=300)
    assert out.exists(), f"run not terminal\n{stdout}\n{stderr}"
    assert failed is not None
    (dep,) = json.loads(out.read_text())["deployments"]
    assert client.returncode == 1, (stdout, stderr)
    assert dep["status"] == "rolled_back", (json.dumps(dep.get("rollback"), indent=1), dep.get("error"),
                                            stderr[-3000:], workers.log("w1")[-4000:], workers.log("w2")[-4000:])
    assert dep["rollback"]["matches_target"] is True, dep
    # the lost attempt's terraform finished the rollback; the redelivered finalize waited, then verified
    assert "completed by an interrupted attempt of this rollback" in dep["rollback"]["error"], dep["rollback"]
    # rolled back all the way: the world is the first apply's, and the state says exactly that
    assert repo.world_state() == before
    assert _names_in_state(repo) == set(before)
    # no operation of the rollback ran twice (the failed apply's own operations came before its failure)
    ops = Counter((e["op"], e["name"]) for e in repo.journal()[since:]
                  if e["event"] == "start" and e["t"] > failed["t"] and e["terraform_pid"] != failed["terraform_pid"])
    assert ops and max(ops.values()) == 1, ops
    store = repo.root / STORE
    assert list((store / "locks").glob("*.lease")) == [], "lease left behind"
    assert list(store.rglob("*.lock.info")) == [], "terraform state lock left behind"
