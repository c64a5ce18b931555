"""S3 going away at the worst moments, through a fault proxy in front of moto's real HTTP server.

During the pre-apply backup the apply must not run; during an audit upload the record must be retried,
and if the store stays away, kept locally and uploaded later. DynamoDB stays up, so leases are freed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultproxy import FaultProxy
from tests.helpers import SECRET_TOKEN, Repo, aws_client, configure_s3, write_sample

pytestmark = pytest.mark.integration
S3_DEP = "s3/acct-a/us-west-2/data-lake"


@pytest.fixture
def proxied(repo: Repo, moto_endpoint: str) -> Iterator[tuple[Repo, FaultProxy, str, str]]:
    proxy = FaultProxy(moto_endpoint)
    bucket, table = configure_s3(repo, proxy.url)
    write_sample(repo)
    first = repo.tfo("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    yield repo, proxy, bucket, table
    proxy.close()


def _versions(endpoint: str, bucket: str, key: str) -> list[str]:
    listing = aws_client("s3", endpoint).list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


def _locks(endpoint: str, table: str) -> list[dict[str, Any]]:
    items = aws_client("dynamodb", endpoint).scan(TableName=table)["Items"]
    # Terraform keeps a "-md5" digest item per state; that is not a lock
    return [i for i in items if not i["LockID"]["S"].endswith("-md5")]


def _report(path: Path) -> dict[str, Any]:
    return {d["id"]: d for d in json.loads(path.read_text())["deployments"]}


def test_s3_down_during_backup_means_the_apply_never_runs(proxied: tuple[Repo, FaultProxy, str, str],
                                                          moto_endpoint: str, tmp_path: Path) -> None:
    repo, proxy, bucket, table = proxied
    state_key = f"{S3_DEP}/terraform.tfstate"
    versions_before = _versions(moto_endpoint, bucket, state_key)
    world_before = repo.world_state()
    journal_before = len(repo.journal())

    write_sample(repo, failing=True)  # changes for every s3 resource
    proxy.trigger = lambda method, path: "backups/" in path  # S3 vanishes at the first backup request
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out), timeout=400)
    proxy.restore()

    assert proxy.dropped() and all("backups/" in s.path for s in proxy.dropped()[:1])
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    deps = _report(out)
    for dep in deps.values():
        if dep["plan"]["add"] + dep["plan"]["change"] + dep["plan"]["destroy"] == 0:
            continue
        assert dep["status"] == "failed" and dep["backup_key"] is None and dep["rollback"] is None, dep
        assert "backing up" in dep["error"] and "the apply was not run" in dep["error"], dep["error"]
    assert "the apply was not run" in r.stdout + r.stderr
    # nothing was applied: the provider saw no operation, the world and the state are as before
    assert len(repo.journal()) == journal_before
    assert repo.world_state() == world_before
    assert _versions(moto_endpoint, bucket, state_key) == versions_before
    assert _locks(moto_endpoint, table) == []  # leases and Terraform locks freed (DynamoDB stayed up)

    # With S3 back, the same change goes through, and the records kept locally meanwhile go up.
    again = repo.tfo("apply", "--json-out", str(out), timeout=400)
    assert again.returncode == 1, again.stdout + again.stderr  # the sample's `broken` bucket fails on purpose
    assert _report(out)[S3_DEP]["status"] == "rolled_back"
    assert not list((repo.root / ".tfo" / "work").rglob("audit-pending/**/*.json"))


def test_audit_upload_retried_through_a_short_outage(proxied: tuple[Repo, FaultProxy, str, str],
                                                      moto_endpoint: str, tmp_path: Path) -> None:
    repo, proxy, bucket, _ = proxied
    repo.write("Accounts/acct-a/data-lake.tfvars", f"""\
        region = "us-west-2"
        api_token = "{SECRET_TOKEN}"
        s3_buckets = {{ one = {{ versioning = true }} }}
        """)
    proxy.down_for_s = 3  # shorter than the audit's own retries, longer than boto3's
    proxy.trigger = lambda method, path: method == "PUT" and "/audit/" in path
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars", "--json-out", str(out), timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    dropped = [s for s in proxy.dropped() if "/audit/" in s.path]
    assert dropped, "the outage never happened"
    report = json.loads(out.read_text())
    dep = _report(out)[S3_DEP]
    assert dep["audit_key"] and not dep["error"], dep
    # retried: the refused upload of that record was sent again and went through
    refused = {s.path for s in dropped}
    assert any(not s.dropped and s.method == "PUT" and s.path in refused for s in proxy.seen)
    assert report["audit_key"]
    # the record is in the store, whole and unredacted, encrypted at rest
    s3 = aws_client("s3", moto_endpoint)
    obj = s3.get_object(Bucket=bucket, Key=dep["audit_key"])
    assert obj["ServerSideEncryption"] == "AES256"
    record = json.loads(obj["Body"].read())
    assert record["status"] == "succeeded" and record["steps"]
    assert not list((repo.root / ".tfo" / "work").rglob("audit-pending/**/*.json"))


def test_audit_kept_locally_through_a_long_outage_then_uploaded(proxied: tuple[Repo, FaultProxy, str, str],
                                                                 moto_endpoint: str, tmp_path: Path) -> None:
    repo, proxy, bucket, table = proxied
    repo.write("Accounts/acct-a/data-lake.tfvars", """\
        region = "us-west-2"
        s3_buckets = { one = { versioning = true } }
        """)
    proxy.trigger = lambda method, path: method == "PUT" and "/audit/" in path  # down until restored
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars", "--json-out", str(out), timeout=400)
    proxy.restore()
    assert "Traceback" not in r.stderr
    dep = _report(out)[S3_DEP]
    # the apply itself went through (state is written by Terraform before the audit)
    assert dep["status"] == "succeeded", dep
    assert "kept locally at" in dep["error"], dep["error"]
    assert "kept locally at" in r.stdout + r.stderr
    pending = sorted((repo.root / ".tfo" / "work").rglob("audit-pending/**/*.json"))
    assert pending, "no local copy of the refused audit records"
    kept = {p.name: json.loads(p.read_text()) for p in pending}
    for p in pending:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert _locks(moto_endpoint, table) == []

    # The next run on this host uploads them: same content at the same key, local copies gone.
    nxt = repo.tfo("apply", timeout=400)
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert not list((repo.root / ".tfo" / "work").rglob("audit-pending/**/*.json"))
    s3 = aws_client("s3", moto_endpoint)
    for p in pending:
        key = p.as_posix().split("/audit-pending/", 1)[1]
        assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == kept[p.name]
