from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from orchestrator.bundle import build_bundle, bundle_key, extract_bundle, fetch_bundle, upload_bundle
from orchestrator.config import load_config
from orchestrator.errors import StoreError
from orchestrator.models import (
    Action,
    DeploymentResult,
    DeploymentSpec,
    PlanSummary,
    RollbackRecord,
    RunOptions,
    RunResult,
    RunSpec,
    Status,
)
from orchestrator.report import to_json
from orchestrator.store.local import LocalStore


def spec(n: int = 0, **kw: object) -> DeploymentSpec:
    base = dict(id=f"s3/acct/us-east-1/p{n}", service="s3", account="acct", region="us-east-1", project=f"p{n}",
                state_key=f"s3/acct/us-east-1/p{n}/terraform.tfstate", tfvars_path=f"Accounts/acct/p{n}.tfvars",
                module_dir="terraform", variables={"s3_buckets": {"a": {}}})
    base.update(kw)
    return DeploymentSpec(**base)  # type: ignore[arg-type]


def run_result(results: list[DeploymentResult]) -> RunResult:
    run = RunSpec("20260101T000000Z-abcdef", RunOptions(Action.APPLY), tuple(r.spec for r in results),
                  "2026-01-01T00:00:00+00:00")
    return RunResult(run, tuple(results), "2026-01-01T00:01:00+00:00")


def test_json_report_follows_the_contract() -> None:
    r = DeploymentResult(spec(), "apply", Status.ROLLED_BACK, PlanSummary(1, 2, 3), backup_key="backups/x",
                         rollback=RollbackRecord("reapply", "succeeded", "bundles/x", True))
    data = json.loads(to_json(run_result([r])))
    assert {"run_id", "action", "status", "deployments"} <= set(data)
    d = data["deployments"][0]
    assert {"id", "service", "account", "region", "project", "state_key", "status", "backup_key", "audit_key",
            "plan", "rollback", "duration_s", "error"} <= set(d)
    assert d["plan"] == {"add": 1, "change": 2, "destroy": 3}
    assert d["status"] == "rolled_back" and d["rollback"]["matches_target"] is True
    assert data["status"] == "failed"


def test_result_round_trips_through_json() -> None:
    r = DeploymentResult(spec(referenced_files=("a.json",)), "apply", Status.FAILED, PlanSummary(1, 0, 0),
                         applied=True, state_serial=4, rollback=RollbackRecord("state", "failed", untracked=("x.y",)))
    assert DeploymentResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    run = run_result([r]).run
    assert RunSpec.from_dict(json.loads(json.dumps(run.to_dict()))) == run


def make_module(tmp_path: Path) -> None:
    (tmp_path / "terraform" / ".terraform").mkdir(parents=True)
    (tmp_path / "terraform" / "main.tf").write_text("# module\n")
    (tmp_path / "terraform" / ".terraform" / "junk").write_text("provider binary")
    (tmp_path / "terraform" / "terraform.tfstate").write_text("{}")
    (tmp_path / "Accounts/acct").mkdir(parents=True)
    (tmp_path / "Accounts/acct/r.json").write_text("{}")


def test_bundle_is_deterministic_and_complete(tmp_path: Path) -> None:
    make_module(tmp_path)
    cfg = load_config(repo_root=tmp_path, environ={})
    s = spec(referenced_files=("Accounts/acct/r.json",), var_files=((".tfo/vars/00-p0.tfvars", "s3_buckets = {}\n"),))
    a, b = build_bundle(cfg, s), build_bundle(cfg, s)
    assert a == b and bundle_key(a) == bundle_key(b)
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        names = tar.getnames()
    assert set(names) == {"terraform/main.tf", "Accounts/acct/r.json", ".tfo/vars/00-p0.tfvars", ".tfo/spec.json"}
    changed = build_bundle(cfg, spec(referenced_files=("Accounts/acct/r.json",),
                                     var_files=((".tfo/vars/00-p0.tfvars", "s3_buckets = { b = {} }\n"),)))
    assert bundle_key(changed) != bundle_key(a)
    ws = extract_bundle(a, tmp_path / "out")
    assert ws.cwd == tmp_path / "out" / "terraform"
    assert ws.var_files == ("../.tfo/vars/00-p0.tfvars",)
    assert (ws.cwd / ws.var_files[0]).read_text() == "s3_buckets = {}\n"


def test_a_bundle_made_before_shared_modules_still_extracts(tmp_path: Path) -> None:
    """A rollback may reapply a last-good bundle of layout 1: module at the top, one JSON var file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in (("main.tf", b"# m\n"), ("tfo.tfvars.json", b"{}"), ("tfo-spec.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ws = extract_bundle(raw.getvalue(), tmp_path / "old")
    assert ws.cwd == ws.root == tmp_path / "old" and ws.var_files == ("tfo.tfvars.json",)


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return raw.getvalue()


@pytest.mark.parametrize("member", [tarfile.TarInfo("../escape.tf"), tarfile.TarInfo("/abs.tf")])
def test_extract_refuses_members_outside_the_directory(tmp_path: Path, member: tarfile.TarInfo) -> None:
    with pytest.raises(StoreError):
        extract_bundle(_tar_with(member, b"x"), tmp_path / "d")


def test_extract_refuses_links(tmp_path: Path) -> None:
    link = tarfile.TarInfo("main.tf")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(StoreError):
        extract_bundle(_tar_with(link), tmp_path / "d")


def test_corrupt_bundle_is_detected(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key = upload_bundle(store, b"original")
    assert fetch_bundle(store, key) == b"original"
    assert b"original" not in (tmp_path / "store" / key).read_bytes()  # bundles hold tfvars: encrypted at rest
    (tmp_path / "store" / key).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="cannot decrypt"):  # the encryption authenticates
        fetch_bundle(store, key)
    store.put(key, b"other bytes")  # readable, but not what the key names
    with pytest.raises(StoreError, match="digest"):
        fetch_bundle(store, key)
    with pytest.raises(StoreError, match="missing"):
        fetch_bundle(store, "bundles/sha256/" + "0" * 64 + ".tar.gz")
