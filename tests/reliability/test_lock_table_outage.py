"""DynamoDB (the lock table) going away just as a run releases its lease, through the fault proxy.

The apply is done and its state written; only the lease cannot be deleted. The run must say so and
finish, and the lease must not block the deployment for ever: it is not renewed once its process is
gone, so it expires after lease_ttl_s and the next run takes it over and applies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy
from tests.helpers import Repo, aws_client, configure_s3

pytestmark = pytest.mark.integration
TTL_S = 8
DEP = "s3/acct-a/us-west-2/data-lake"


def _write(repo: Repo, versioning: bool) -> None:
    repo.write("Accounts/acct-a/data-lake.tfvars",
               f'region = "us-west-2"\ns3_buckets = {{ one = {{ versioning = {str(versioning).lower()} }} }}\n')


def _items(endpoint: str, table: str) -> list[dict[str, dict[str, str]]]:
    items = aws_client("dynamodb", endpoint).scan(TableName=table)["Items"]
    return [i for i in items if not i["LockID"]["S"].endswith("-md5")]  # Terraform's digest item is no lock


def test_a_lease_stuck_by_a_lock_table_outage_expires_and_the_next_run_applies(
        repo: Repo, moto_endpoint: str, tmp_path: Path) -> None:
    proxy = FaultProxy(moto_endpoint, service="dynamodb")
    try:
        _, table = configure_s3(repo, proxy.url)
        repo.env["TFO_LEASE_TTL_S"] = str(TTL_S)
        _write(repo, True)
        proxy.down_for_s = 6
        proxy.target_trigger = lambda target, body: target.endswith(".DeleteItem") and b"tfo-lease:" in body
        out = tmp_path / "first.json"
        first = repo.tfo("apply", "--json-out", str(out), timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert proxy.dropped(), "the outage never happened"
        assert "Traceback" not in first.stderr
        (dep,) = json.loads(out.read_text())["deployments"]
        assert dep["id"] == DEP and dep["status"] == "succeeded", dep
        assert "lease not released" in dep["error"] and f"expires after {TTL_S}s" in dep["error"], dep["error"]
        # the lease is still there, held by a process that has exited, and it runs out on its own
        (lease,) = [i for i in _items(moto_endpoint, table) if i["LockID"]["S"].startswith("tfo-lease:")]
        expires = float(lease["expires"]["N"])
        assert expires <= time.time() + TTL_S
        since = len(repo.journal())

        while proxy.down:  # the lock table comes back; the next run comes at once
            time.sleep(0.1)
        _write(repo, False)
        out = tmp_path / "second.json"
        second = repo.tfo("apply", "--json-out", str(out), timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        (dep,) = json.loads(out.read_text())["deployments"]
        assert dep["status"] == "succeeded" and not dep["error"], dep
        # it respected the stale lease: its apply touched the world only once the lease had expired
        ops = [e for e in repo.journal()[since:] if e["event"] == "start"]
        assert ops and min(e["t"] for e in ops) >= expires, (ops, expires)
        assert _items(moto_endpoint, table) == []  # nothing left behind this time
    finally:
        proxy.close()
