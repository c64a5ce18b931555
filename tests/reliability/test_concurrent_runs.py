"""Twenty `tfo apply` processes at once on overlapping deployments: no two applies of a state interleave.

Each run comes from its own checkout (as twenty CI jobs would) with its own change, and touches two of
three deployments, so every deployment is contended by about thirteen runs. All share one store, one
lease directory and one world.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import Repo

pytestmark = pytest.mark.integration
RUNS = 20
PROJECTS = ("p0", "p1", "p2")


def _checkout(repo: Repo, tmp_path: Path, i: int, store: Path, workdir: Path) -> Repo:
    root = tmp_path / f"checkout-{i:02d}"
    shutil.copytree(repo.root, root, ignore=shutil.ignore_patterns(".tfo"))
    clone = Repo(root, repo.world, repo.env)
    clone.write("tfo.toml", f"""\
        [tfo]
        max_workers = 2
        lock_timeout_s = 900
        lease_ttl_s = 30
        workdir = "{workdir}"

        [tfo.store]
        kind = "local"
        path = "{store}"
        """)
    for k, project in enumerate(PROJECTS):
        clone.write(f"Accounts/acct-a/{project}.tfvars", f"""\
            tags = {{ run = "{i}" }}
            s3_buckets = {{ x = {{ versioning = {str((i + k) % 2 == 0).lower()}, delay_seconds = 1 }} }}
            """)
    return clone


def _touched(i: int) -> tuple[str, str]:
    return PROJECTS[i % 3], PROJECTS[(i + 1) % 3]


def test_twenty_concurrent_overlapping_runs_never_interleave(repo: Repo, tmp_path: Path) -> None:
    store, workdir = tmp_path / "store", tmp_path / "work"
    clones = [_checkout(repo, tmp_path, i, store, workdir) for i in range(RUNS)]
    procs: list[subprocess.Popen[str]] = []
    for i, clone in enumerate(clones):
        paths = [f"Accounts/acct-a/{p}.tfvars" for p in _touched(i)]
        procs.append(clone.popen("apply", *paths, "--json-out", str(tmp_path / f"run-{i:02d}.json")))
    outputs = [p.communicate(timeout=1500) for p in procs]
    for i, (p, (stdout, stderr)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, (i, stdout, stderr[-3000:])

    # Every apply of a deployment's state ran alone: group the provider's journal by terraform process,
    # and per deployment no two processes' operations overlap in time.
    spans: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in repo.journal():
        project = e["name"].split(".")[3]
        spans[project][e["terraform_pid"]].append(e["t"])
    interleavings = []
    for project, by_pid in spans.items():
        ordered = sorted((min(t), max(t), pid) for pid, t in by_pid.items())
        interleavings += [(project, a, b) for a, b in itertools.pairwise(ordered) if a[1] >= b[0]]
    assert interleavings == []

    for project in PROJECTS:
        runs_on_it = [i for i in range(RUNS) if project in _touched(i)]
        # each run applied its own change exactly once, and the state counted every one of them
        assert len(spans[project]) == len(runs_on_it), (project, len(spans[project]), len(runs_on_it))
        state = json.loads((store / f"s3/acct-a/us-east-1/{project}/terraform.tfstate").read_text())
        assert state["serial"] >= len(runs_on_it)
        (instance,) = state["resources"][0]["instances"]
        world = repo.world_state()[f"s3.acct-a.us-east-1.{project}.x"]
        assert instance["attributes"]["content"] == world["content"]  # state says what exists
    assert list((store / "locks").glob("*.lease")) == []
    assert list(store.rglob("*.lock.info")) == []
