"""Hundreds of deployments in one run, through both executors, with the real terraform: every run exits, its
JSON has every deployment, its Markdown report fits one pull-request comment with its fences balanced.

The module has no provider (its deployments change only outputs, which terraform still plans, backs up and
applies), so 300 deployments cost terraform's own start-ups and tfo's work around them, nothing else: what
broke at scale was tfo's (a report that never ended past ~134 deployments, a client that polled per
deployment), not terraform's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.report import GITHUB_COMMENT_LIMIT
from tests.cluster import Workers
from tests.helpers import Repo

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("scale")]
N = 300
MODULE = """\
variable "s3_buckets" {
  type    = any
  default = {}
}

output "buckets" {
  value = var.s3_buckets
}
"""


def _write(repo: Repo, n: int, salt: int) -> None:
    shutil.rmtree(repo.root / "terraform", ignore_errors=True)
    shutil.rmtree(repo.root / "Accounts", ignore_errors=True)
    repo.write("terraform/main.tf", MODULE)
    for i in range(n):
        repo.write(f"Accounts/acct-{i % 6}/proj-{i:03d}.tfvars", f"s3_buckets = {{\n  b = {{ n = {i + salt} }}\n}}\n")


def _run(repo: Repo, tmp_path: Path, action: str, name: str) -> tuple[dict[str, Any], str]:
    js, md = tmp_path / f"{name}.json", tmp_path / f"{name}.md"
    r = repo.tfo(action, "--json-out", str(js), "--markdown-out", str(md), timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return json.loads(js.read_text()), md.read_text()


def _check(report: dict[str, Any], markdown: str, statuses: set[str]) -> None:
    assert len(report["deployments"]) == N, len(report["deployments"])
    assert {d["status"] for d in report["deployments"]} <= statuses, {d["status"] for d in report["deployments"]}
    assert len({d["id"] for d in report["deployments"]}) == N
    assert len(markdown) <= GITHUB_COMMENT_LIMIT, len(markdown)
    assert markdown.count("```") % 2 == 0  # every fence closed, however it was cut
    assert report["run_id"] in markdown


def _plan_and_apply(repo: Repo, tmp_path: Path) -> None:
    _write(repo, N, 0)
    report, markdown = _run(repo, tmp_path, "plan", "plan")
    _check(report, markdown, {"succeeded"})  # every one has changes (its output)
    report, markdown = _run(repo, tmp_path, "apply", "apply")
    _check(report, markdown, {"succeeded"})
    assert all(d["backup_key"] for d in report["deployments"])  # backed up before its apply, each
    _write(repo, N, 0)
    report, markdown = _run(repo, tmp_path, "plan", "again")
    _check(report, markdown, {"no_changes"})  # applied: nothing left to do


def test_300_deployments_through_the_local_executor(repo: Repo, tmp_path: Path) -> None:
    _plan_and_apply(repo, tmp_path)


def test_300_deployments_through_celery_workers(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1", concurrency=2)
    workers.start("w2", concurrency=2)
    _plan_and_apply(repo, tmp_path)
