"""The same end-to-end path on the s3 store: moto's HTTP server, Terraform's S3 backend and DynamoDB lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    FIRST_APPLY_WORLD,
    SECRET_PASSWORD,
    SECRET_TOKEN,
    Repo,
    configure_s3,
    write_sample,
)
from tests.helpers import (
    aws_client as _client,
)

pytestmark = pytest.mark.integration

@pytest.fixture
def s3_repo(repo: Repo, moto_endpoint: str) -> tuple[Repo, str, str]:
    bucket, table = configure_s3(repo, moto_endpoint)
    return repo, bucket, table


def test_apply_and_rollback_on_s3_store(s3_repo: tuple[Repo, str, str], moto_endpoint: str, tmp_path: Path) -> None:
    repo, bucket, table = s3_repo
    s3 = _client("s3", moto_endpoint)
    ddb = _client("dynamodb", moto_endpoint)
    write_sample(repo)
    first = repo.tfo("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    after_first = repo.world_state()
    # Terraform's S3 backend wrote each shard's state at its sharded key
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "s3/acct-a/us-west-2/data-lake/terraform.tfstate" in keys
    assert "iam/acct-b/us-east-1/platform/terraform.tfstate" in keys

    write_sample(repo, failing=True)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    second = repo.tfo("apply", "--json-out", str(out), "--markdown-out", str(md))
    assert second.returncode == 1, second.stdout + second.stderr
    s3dep = {d["id"]: d for d in json.loads(out.read_text())["deployments"]}["s3/acct-a/us-west-2/data-lake"]
    assert s3dep["status"] == "rolled_back" and s3dep["rollback"]["matches_target"] is True
    assert repo.world_state() == after_first

    # the backup: server-side encrypted, with the source version id recorded
    head = s3.head_object(Bucket=bucket, Key=s3dep["backup_key"])
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["source-version-id"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix=s3dep["state_key"])["Versions"]
    assert head["Metadata"]["source-version-id"] in {v["VersionId"] for v in versions}
    backed_up = json.loads(s3.get_object(Bucket=bucket, Key=s3dep["backup_key"])["Body"].read())
    assert {i["index_key"] for r in backed_up["resources"] for i in r["instances"]} == {"raw", "curated"}

    # audit: encrypted, full output with secrets; console and Markdown without
    audit = s3.get_object(Bucket=bucket, Key=s3dep["audit_key"])
    assert audit["ServerSideEncryption"] == "AES256"
    audit_text = audit["Body"].read().decode()
    assert "failed on purpose" in audit_text and SECRET_PASSWORD in audit_text
    shown = second.stdout + second.stderr + md.read_text() + out.read_text()
    assert SECRET_PASSWORD not in shown and SECRET_TOKEN not in shown

    # no lock of ours (tfo-lease:) nor Terraform's left in the table; only Terraform's -md5 digests
    items = [i["LockID"]["S"] for i in ddb.scan(TableName=table)["Items"]]
    assert items, "terraform keeps state digests in the lock table"
    assert all(i.endswith("-md5") for i in items), items


def test_state_rollback_on_s3_keeps_terraform_digest_valid(s3_repo: tuple[Repo, str, str], tmp_path: Path) -> None:
    repo, _, _ = s3_repo
    write_sample(repo)
    assert repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars").returncode == 0
    write_sample(repo, failing=True)
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--rollback", "state", "--json-out", str(out), "Accounts/acct-a/data-lake.tfvars")
    assert r.returncode == 1
    s3dep = {d["id"]: d for d in json.loads(out.read_text())["deployments"]}["s3/acct-a/us-west-2/data-lake"]
    assert s3dep["status"] == "rolled_back", s3dep
    # Terraform still accepts the restored state (its MD5 digest in DynamoDB was updated with it)
    write_sample(repo)
    again = repo.tfo("plan", "Accounts/acct-a/data-lake.tfvars")
    assert again.returncode == 0, again.stdout + again.stderr


def _moto(endpoint: str, path: str, method: str = "POST") -> bytes:
    import urllib.request

    req = urllib.request.Request(endpoint + path, method=method,  # noqa: S310 - loopback test server
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback test server
        return r.read()


def test_account_role_credentials_reach_boto3_and_terraform(s3_repo: tuple[Repo, str, str],
                                                            moto_endpoint: str, tmp_path: Path) -> None:
    repo, _, _ = s3_repo
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + '\n[tfo.accounts.acct-a]\n'
                    'role_arn = "arn:aws:iam::123456789012:role/tfo-deployer"\n')
    write_sample(repo)
    _moto(moto_endpoint, "/moto-api/recorder/reset-recording")
    _moto(moto_endpoint, "/moto-api/recorder/start-recording")
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out))
    _moto(moto_endpoint, "/moto-api/recorder/stop-recording")
    assert r.returncode == 0, r.stdout + r.stderr
    recording = [json.loads(line) for line in _moto(moto_endpoint, "/moto-api/recorder/download-recording",
                                                    "GET").decode().splitlines() if line.strip()]

    def key_ids(predicate: Any) -> set[str]:
        out: set[str] = set()
        for rec in recording:
            auth = rec.get("headers", {}).get("Authorization", "")
            if "Credential=" in auth and predicate(rec):
                out.add(auth.split("Credential=", 1)[1].split("/", 1)[0])
        return out

    # the role was assumed, and its temporary key id (ASIA...) signed acct-a's state traffic
    def on_acct(account: str) -> Any:
        return lambda rec: f"/{account}/" in rec.get("url", "")

    def by(agent: str) -> Any:
        return lambda rec: agent in rec.get("headers", {}).get("User-Agent", "")

    acct_a = key_ids(lambda rec: on_acct("acct-a")(rec) and by("Terraform")(rec))
    assert acct_a and all(k.startswith("ASIA") for k in acct_a), acct_a  # terraform's backend
    boto_a = key_ids(lambda rec: on_acct("acct-a")(rec) and by("Boto3")(rec) and "backups" in rec.get("url", ""))
    assert boto_a and all(k.startswith("ASIA") for k in boto_a), boto_a  # tfo's backup copy via boto3
    # acct-b has no role: the ambient credentials
    assert key_ids(lambda rec: on_acct("acct-b")(rec) and by("Terraform")(rec)) == {"testing"}
    # and the providers got them too (terraform passes its environment on)
    journal_keys = {e["aws_access_key_id"] for e in repo.journal() if e["name"].startswith(("s3.acct-a", "kms.acct-a"))}
    assert journal_keys == acct_a
    # none of it is shown to people
    assert not any(k in r.stdout + r.stderr + out.read_text() for k in acct_a)


def test_a_saved_plan_on_s3_is_applied_and_then_stale(s3_repo: tuple[Repo, str, str], moto_endpoint: str,
                                                      tmp_path: Path) -> None:
    repo, bucket, _ = s3_repo
    write_sample(repo)
    plan = repo.tfo("plan", "--json-out", str(tmp_path / "plan.json"))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    planned = json.loads((tmp_path / "plan.json").read_text())["run_id"]
    s3 = _client("s3", moto_endpoint)
    saved = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"runs/{planned}/plans/")["Contents"]]
    assert len([k for k in saved if k.endswith(".tfplan")]) == 3
    assert s3.head_object(Bucket=bucket, Key=next(k for k in saved if k.endswith(".tfplan")))["ServerSideEncryption"]
    applied = repo.tfo("apply", "--from-plan", planned, "--json-out", str(tmp_path / "applied.json"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    again = repo.tfo("apply", "--from-plan", planned, "--json-out", str(tmp_path / "again.json"))
    assert again.returncode == 1, again.stdout + again.stderr
    assert {d["status"] for d in json.loads((tmp_path / "again.json").read_text())["deployments"]} == {"stale"}


def test_the_dashboard_index_reads_an_s3_store_with_listings(s3_repo: tuple[Repo, str, str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A real apply on the S3 store, then the dashboard's index over it: runs found by a delimiter listing
    after the newest known, progress records by their ETags, a run's card and summary read back."""
    from orchestrator import keys
    from orchestrator.config import load_config
    from orchestrator.history import RunIndex
    from orchestrator.store import open_store

    repo = s3_repo[0]
    for name, value in repo.env.items():  # boto3 here reads this process's environment (moto's credentials)
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    write_sample(repo)
    out = tmp_path / "apply.json"
    assert repo.tfo("apply", "--json-out", str(out)).returncode == 0
    run_id = json.loads(out.read_text())["run_id"]
    store = open_store(load_config(repo.root / "tfo.toml", repo_root=repo.root, environ=repo.env))
    children = store.list_children(keys.RUNS)
    assert f"{run_id}.json" in children and f"{run_id}/" in children
    assert store.list_children(keys.RUNS, start_after=f"{keys.RUNS}{run_id}/") == []
    progress = store.list_keys(keys.progress_prefix(run_id))
    assert len(progress) == 3 and all(k.stamp for k in progress)
    index = RunIndex(store)
    assert index.refresh() is True
    run = index.run(run_id)
    assert run is not None and run.status == "succeeded" and run.executor == "local"
    assert {d.status for d in run.deployments} == {"succeeded"} and len(run.deployments) == 3
    first = run.deployments[0].id
    before = {k.key: k.stamp for k in progress}[keys.progress(run_id, first)]
    store.put_json(keys.progress(run_id, first), {"deployment": first, "phases": []})
    after = {k.key: k.stamp for k in store.list_keys(keys.progress_prefix(run_id))}
    assert after[keys.progress(run_id, first)] != before  # the ETag moved
