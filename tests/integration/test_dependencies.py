"""Deployments that need other deployments' outputs run after them, with the real terraform and the project's
provider: the bucket reads the key's id from tfo_dependency_outputs, a failing key skips the bucket, and an
explicit edge crosses accounts."""

from __future__ import annotations

import json
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
        toml.write_text(toml.read_text() + '\n[tfo.dependencies]\ns3 = ["kms"]\n')
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
    again = _run(repo, tmp_path, "plan")
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


def test_both_through_celery_workers_level_by_level(celery_repo: tuple[Repo, Workers], tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_repo(repo)
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 0, out
    assert {d["status"] for d in report["deployments"]} == {"succeeded"}
    journal = repo.journal()
    assert _last(journal, "done", "kms.") < min(_first(journal, "start", "s3."), _first(journal, "start", "iam."))
    assert json.loads(repo.world_state()["s3.acct-a.us-west-2.lake.raw"]["content"])["kms_key_id"] == KEY_ID
    # the key fails now: the next level's deployments are skipped by the workers
    write_repo(repo, key_fails=True)
    code, report, out = _run(repo, tmp_path, "apply")
    assert code == 1, out
    by_id = {d["id"]: d for d in report["deployments"]}
    assert by_id[KMS]["status"] in ("failed", "rolled_back"), out
    assert by_id[S3]["status"] == by_id[IAM]["status"] == "skipped"
    assert by_id[IAM]["error"] == f"not run: it depends on {KMS}, which failed"


def test_atomic_rolls_back_dependents_before_what_they_depend_on(repo: Repo, tmp_path: Path) -> None:
    write_repo(repo)
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
    # the role and the bucket (level 2) are taken back before the key (level 1) they were built on
    assert deleted["iam.acct-b"] < deleted["kms.acct-a"] and deleted["s3.acct-a"] < deleted["kms.acct-a"], deleted
