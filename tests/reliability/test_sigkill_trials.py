"""Ten SIGKILLs of a worker at a random moment of an apply, on a real Redis with real worker processes.

Trials alternate between killing the whole worker (main process and pool child: the task comes back
after the visibility timeout) and killing only the pool child running the task (Celery rejects it at
once: reject_on_worker_lost). Terraform runs in its own session, so it survives and finishes; the
redelivered task waits for it, then resumes from the store's checkpoint. After every trial: the run is
terminal, no state is lost, no lock is left, nothing was applied twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import RedisServer, Workers, two_workers
from tests.helpers import Repo

pytestmark = pytest.mark.integration
TRIALS = 10
SEED = 20261125  # the moments are random but reproducible; the seed is in docs/reliability.md
APPLY_S = 3  # each resource's create/delete sleeps this long in the provider
STORE = Path(".tfo") / "store"
STATE_KEY = "s3/acct-a/us-west-2/data-lake/terraform.tfstate"


@pytest.fixture
def cluster(repo: Repo, redis: RedisServer, tmp_path: Path) -> Iterator[tuple[Repo, Workers]]:
    # Shorter limits than the suite's: each whole-worker kill waits out the visibility timeout. A trial's
    # task (plan, then two 3 s resources in parallel; or a resumed attempt) takes ~6 s, far below 16 s.
    with two_workers(repo, redis.url, tmp_path, soft_s=16, hard_s=18, visibility_s=20) as workers:
        yield repo, workers


def _write_trial(repo: Repo, trial: int) -> None:
    repo.write("Accounts/acct-a/data-lake.tfvars", f"""\
        region = "us-west-2"
        s3_buckets = {{
          t{trial}a = {{ versioning = true, delay_seconds = {APPLY_S} }}
          t{trial}b = {{ versioning = true, delay_seconds = {APPLY_S} }}
        }}
        """)


def _names_in_state(repo: Repo) -> set[str]:
    state = json.loads((repo.root / STORE / STATE_KEY).read_text())
    return {i["attributes"]["name"] for r in state["resources"] for i in r["instances"]}


def _no_locks_left(repo: Repo) -> None:
    store = repo.root / STORE
    assert list((store / "locks").glob("*.lease")) == [], "lease left behind"
    assert list(store.rglob("*.lock.info")) == [], "terraform state lock left behind"


def _kill_mid_apply(repo: Repo, workers: Workers, since: int, delay: float, whole: bool) -> str:
    """Wait for this trial's first resource operation, wait `delay`, SIGKILL the worker running it."""
    deadline = time.monotonic() + 120
    while True:
        started = [e for e in repo.journal()[since:] if e["event"] == "start"]
        if started:
            break
        assert time.monotonic() < deadline, "the apply never started"
        time.sleep(0.05)
    owner = workers.owner_of(started[0]["terraform_pid"])
    assert owner is not None, "no worker runs this terraform"
    name, child = owner
    time.sleep(delay)
    if whole:
        workers.kill(name)
        workers.start(name)  # the host comes back, as systemd would restart it
    else:
        os.kill(child, signal.SIGKILL)
    return name


def test_ten_sigkills_mid_apply(cluster: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = cluster
    rng = random.Random(SEED)
    outcomes: list[dict[str, Any]] = []
    for trial in range(TRIALS):
        since = len(repo.journal())
        _write_trial(repo, trial)
        out = tmp_path / f"trial-{trial}.json"
        client = repo.popen("apply", "--json-out", str(out))
        whole = trial % 2 == 0
        delay = round(rng.uniform(0, APPLY_S - 0.3), 2)  # within the resources' operations
        victim = _kill_mid_apply(repo, workers, since, delay, whole)
        stdout, stderr = client.communicate(timeout=300)
        assert out.exists(), f"trial {trial}: run not terminal\n{stdout}\n{stderr}"
        report = json.loads(out.read_text())
        (dep,) = report["deployments"]
        outcome = {"trial": trial, "kill": "worker" if whole else "pool child", "victim": victim,
                   "delay_s": delay, "status": dep["status"], "exit": client.returncode}
        outcomes.append(outcome)

        # terminal, with a known outcome
        assert dep["status"] in ("succeeded", "rolled_back"), (outcome, dep, stderr[-3000:])
        assert client.returncode == (0 if dep["status"] == "succeeded" else 1), outcome
        # no lost state: the state exists and says exactly what exists; the pre-apply backup is kept
        in_state = _names_in_state(repo)
        assert in_state == set(repo.world_state()), (outcome, in_state, repo.world_state())
        expected = {f"s3.acct-a.us-west-2.data-lake.t{trial}{x}" for x in "ab"}
        if dep["status"] == "succeeded":
            assert in_state == expected, outcome
        else:
            assert dep["rollback"]["matches_target"] is True, (outcome, dep)
        assert dep["backup_key"] and (repo.root / STORE / dep["backup_key"]).exists(), outcome
        # no double apply: every resource operation of this trial ran once
        ops = Counter((e["op"], e["name"]) for e in repo.journal()[since:] if e["event"] == "start")
        assert max(ops.values()) == 1, (outcome, ops)
        _no_locks_left(repo)
    print("\n".join(json.dumps(o) for o in outcomes))
