from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from orchestrator.errors import StoreError
from orchestrator.locks import DynamoLeaseBackend, FileLeaseBackend, LeaseHolder, LeaseManager
from orchestrator.procs import host_name
from orchestrator.store.local import KEY_FILE, LocalStore

HOST = host_name()


def holder(owner: str, ttl: float = 60, pid: int | None = None, host: str = HOST) -> LeaseHolder:
    return LeaseHolder(owner, host, pid or os.getpid(), time.time() + ttl)


def test_file_lease_excludes_others_and_is_reentrant(tmp_path: Path) -> None:
    b = FileLeaseBackend(tmp_path)
    assert b.try_acquire("k", holder("run-1")) is None
    assert b.try_acquire("k", holder("run-1")) is None  # same owner refreshes
    refused = b.try_acquire("k", holder("run-2"))
    assert refused is not None and refused.owner == "run-1"
    b.release("k", "run-2")  # not the owner: nothing happens
    assert b.holder("k") is not None
    b.release("k", "run-1")
    assert b.holder("k") is None
    assert b.try_acquire("k", holder("run-2")) is None


def test_file_lease_of_dead_process_or_expired_is_taken_over(tmp_path: Path) -> None:
    b = FileLeaseBackend(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert b.try_acquire("k", holder("dead-run", pid=dead.pid)) is None
    assert b.try_acquire("k", holder("next-run")) is None
    assert b.try_acquire("j", holder("old", ttl=-1, host="elsewhere")) is None
    assert b.try_acquire("j", holder("new")) is None


def test_manager_waits_then_reports_the_holder(tmp_path: Path) -> None:
    m = LeaseManager(FileLeaseBackend(tmp_path), ttl_s=30)
    assert m.acquire("k", "run-1", wait_s=0).acquired
    start = time.monotonic()
    r = m.acquire("k", "run-2", wait_s=0.6, poll_s=0.1)
    assert not r.acquired and r.holder is not None and r.holder.owner == "run-1"
    assert time.monotonic() - start >= 0.5
    assert "run run-1" in r.holder.describe()
    m.release_all("run-1")
    assert m.acquire("k", "run-2", wait_s=0).acquired
    m.close()


def test_manager_heartbeat_renews_the_lease(tmp_path: Path) -> None:
    backend = FileLeaseBackend(tmp_path)
    m = LeaseManager(backend, ttl_s=1.5)
    m.acquire("k", "run-1", wait_s=0)
    first = backend.holder("k")
    time.sleep(1.2)
    later = backend.holder("k")
    assert first is not None and later is not None and later.expires > first.expires
    m.close()


@mock_aws
def test_dynamo_lease_conditional_writes() -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(TableName="locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    b = DynamoLeaseBackend(client, "locks", "bucket")
    assert b.try_acquire("s3/a/r/p/terraform.tfstate", holder("run-1")) is None
    refused = b.try_acquire("s3/a/r/p/terraform.tfstate", holder("run-2"))
    assert refused is not None and refused.owner == "run-1"
    assert b.renew("s3/a/r/p/terraform.tfstate", holder("run-1"))
    assert not b.renew("s3/a/r/p/terraform.tfstate", holder("run-2"))
    ids = [i["LockID"]["S"] for i in client.scan(TableName="locks")["Items"]]
    assert ids == ["tfo-lease:bucket/s3/a/r/p/terraform.tfstate"]  # never Terraform's "bucket/key" form
    b.release("s3/a/r/p/terraform.tfstate", "run-2")
    assert b.holder("s3/a/r/p/terraform.tfstate") is not None
    b.release("s3/a/r/p/terraform.tfstate", "run-1")
    assert b.holder("s3/a/r/p/terraform.tfstate") is None
    assert b.try_acquire("x", holder("old", ttl=-5)) is None  # an expired lease is taken over
    assert b.try_acquire("x", holder("new")) is None


def test_local_store_encrypts_by_namespace_and_keeps_its_key_private(tmp_path: Path) -> None:
    from orchestrator import keys

    store = LocalStore(tmp_path)
    secret = b'{"secret": "s3cr3t"}'
    private = [keys.audit_run("20260102T040000Z-bbbbbb"), keys.bundle("ab" * 32), keys.backup("s3/a/r/p/x.tfstate"),
               keys.run_spec("r1"), keys.run_head("r1"), keys.deployment_spec("r1", "s3/a/r/p"),
               keys.checkpoint("r1", "s3/a/r/p"), keys.checkpoint("r1", "s3/a/r/p", "rollback")]
    for key in private:
        store.put(key, secret)
        assert b"s3cr3t" not in (tmp_path / key).read_bytes(), key
        assert store.get(key) == secret
        assert store.head(key).encrypted == "fernet"  # type: ignore[union-attr]
    assert oct((tmp_path / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    # pointers and redacted summaries hold no values: plain, so a person can read them
    for key in (keys.last_good("s3/a/r/p"), keys.run_summary("r1"), keys.run_results("r1"), keys.cancel("r1")):
        store.put(key, b"x")
        assert (tmp_path / key).read_bytes() == b"x" and store.head(key).encrypted == ""  # type: ignore[union-attr]
    assert [o.key for o in store.list_objects("audit/")] == [private[0]]
    with pytest.raises(KeyError):
        store.get("nope")


def test_a_key_created_by_another_process_first_is_the_one_used(tmp_path: Path) -> None:
    # Two first runs at once on a new store: the one that lost the race must use the winner's key,
    # or it encrypts what the other (and every later run) cannot read.
    first = LocalStore(tmp_path)
    winner = (tmp_path / KEY_FILE).read_bytes()
    assert first._create_key(tmp_path / KEY_FILE) == winner.strip()
    assert (tmp_path / KEY_FILE).read_bytes() == winner
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-key-")] == []


def test_first_runs_racing_on_a_new_store_agree_on_one_key(tmp_path: Path) -> None:
    start = time.time() + 1.0  # every process waits for the same instant, then opens the store
    code = ("import sys, time, hashlib\n"
            "from pathlib import Path\n"
            "from orchestrator.store.local import LocalStore\n"
            f"time.sleep(max(0.0, {start} - time.time()))\n"
            "s = LocalStore(Path(sys.argv[1]))\n"
            "print(hashlib.sha256(s._fernet.decrypt(s._fernet.encrypt(b'x')) + s._load_key()).hexdigest())\n")
    env = {k: v for k, v in os.environ.items() if k != "TFO_STORE_ENCRYPTION_KEY"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "store")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(8)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({out for out, _ in outs}) == 1, outs


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../b", "a//b", ""])
def test_local_store_refuses_unsafe_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(StoreError):
        LocalStore(tmp_path).put(key, b"x")


def test_backup_of_missing_state_restores_to_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    info = store.backup_state("s3/a/r/p/terraform.tfstate", {"run-id": "r1"})
    assert info.empty and store.read_backup(info.key) is None
    (tmp_path / "s3/a/r/p").mkdir(parents=True)
    (tmp_path / "s3/a/r/p/terraform.tfstate").write_text(json.dumps({"serial": 3}))
    second = store.backup_state("s3/a/r/p/terraform.tfstate", {"run-id": "r2"})
    assert not second.empty and second.source_version.startswith("sha256:")
    assert json.loads(store.read_backup(second.key) or b"") == {"serial": 3}
    assert [b.key for b in store.list_backups("s3/a/r/p/terraform.tfstate")] == [info.key, second.key]
    store.restore_state("s3/a/r/p/terraform.tfstate", None)
    assert store.read_state("s3/a/r/p/terraform.tfstate") is None


def test_same_run_from_another_live_process_waits_unless_handed_over(tmp_path: Path) -> None:
    b = FileLeaseBackend(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        first = LeaseHolder("run-1", HOST, other.pid, time.time() + 60)
        assert b.try_acquire("k", first) is None
        # a second, live attempt of the same run must not run beside the first
        assert b.try_acquire("k", holder("run-1")) is not None
        # once the first hands the lease over for rollback, the run's finalize may take it
        kept = LeaseHolder("run-1", HOST, other.pid, time.time() + 60, kept=True)
        assert b.renew("k", kept)
        assert b.try_acquire("k", holder("run-1")) is None
        assert b.try_acquire("k", holder("run-2")) is not None
    finally:
        other.kill()
        other.wait()


@mock_aws
def test_account_role_is_assumed_once_and_unknown_accounts_use_ambient(tmp_path: Path) -> None:
    from orchestrator.config import load_config
    from orchestrator.credentials import AccountCredentials

    (tmp_path / "tfo.toml").write_text('[tfo.accounts.prod]\nrole_arn = "arn:aws:iam::123456789012:role/tfo"\n')
    cfg = load_config(repo_root=tmp_path, environ={})
    creds = AccountCredentials(cfg)
    first = creds.for_account("prod", "tfo-run-1")
    assert first is not None and first.access_key_id.startswith("ASIA")
    assert set(first.env()) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert creds.for_account("prod", "tfo-run-1") is first  # cached until close to expiry
    assert creds.for_account("dev", "tfo-run-1") is None
