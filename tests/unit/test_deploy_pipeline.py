"""The deployment pipeline's own logic, with a scripted terraform: resume after a lost attempt, what a
result keeps when a step fails part-way, and which phases are shown."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
from pathlib import Path

import pytest

from orchestrator import keys
from orchestrator.bundle import upload_bundle
from orchestrator.config import load_config, with_overrides
from orchestrator.deploy import deploy
from orchestrator.errors import StoreError
from orchestrator.models import Action, DeploymentSpec, RollbackStrategy, RunOptions, RunSpec, Status
from orchestrator.record import DeploymentRecord, Phase
from orchestrator.runtime import Runtime, build_runtime

# Plans show one resource to add unless NO_CHANGES is set; an apply leaves a mark so a test can tell
# whether it ran.
TERRAFORM = """#!/bin/sh
case "$1" in
  version) echo '{"terraform_version": "1.0.3"}' ;;
  init) echo "Terraform has been successfully initialized!" ;;
  plan) if [ -n "$NO_CHANGES" ]; then echo "No changes."; exit 0; fi
        echo "Plan: 1 to add, 0 to change, 0 to destroy."; exit 2 ;;
  apply) echo "$PWD" >> "$APPLIED"; echo "Apply complete!" ;;
  *) echo "unexpected: $*"; exit 1 ;;
esac
"""


def _bundle() -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        body = b'variable "x" {\n  default = 1\n}\n'
        info = tarfile.TarInfo("main.tf")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return raw.getvalue()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Runtime, RunSpec, Path]:
    exe = tmp_path / "terraform"
    exe.write_text(TERRAFORM)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    applied = tmp_path / "applied.log"
    cfg = with_overrides(load_config(repo_root=tmp_path, environ={}), terraform_bin=str(exe))
    rt = build_runtime(cfg)
    rt.client.base_env["APPLIED"] = str(applied)
    key = upload_bundle(rt.store, _bundle())
    spec = DeploymentSpec(id="s3/acct/us-east-1/p", service="s3", account="acct", region="us-east-1", project="p",
                          state_key="s3/acct/us-east-1/p/terraform.tfstate", tfvars_path="a.tfvars",
                          module_dir=".", variables={}, bundle_key=key)
    run = RunSpec("20260101T000000Z-abcdef", RunOptions(Action.APPLY, RollbackStrategy.REAPPLY), (spec,),
                  "2026-01-01T00:00:00+00:00")
    return rt, run, applied


def _lost_attempt(rt: Runtime, run: RunSpec, phase: Phase) -> None:
    record = DeploymentRecord(rt.store, run.run_id, run.deployments[0], "w1@elsewhere")
    record.write(phase, backup_key="backups/s3/acct/us-east-1/p/terraform.tfstate.1", backup_version="v1",
                 previous_bundle_key=keys.bundle("0" * 64))


def test_a_lost_apply_that_left_changes_is_failed_for_rollback_with_its_backup_and_target(
        world: tuple[Runtime, RunSpec, Path]) -> None:
    rt, run, applied = world
    _lost_attempt(rt, run, Phase.APPLYING)
    result = deploy(run.deployments[0], run, rt)
    assert result.status == Status.FAILED and "not applying twice" in result.error
    assert not applied.exists(), "a lost apply was applied again"
    # what the rollback needs: the backup taken before the lost apply, and the configuration before it
    assert result.backup_key == "backups/s3/acct/us-east-1/p/terraform.tfstate.1"
    assert result.previous_bundle_key == keys.bundle("0" * 64)
    assert result.applied and result.lease_held and result.plan.add == 1


def test_a_lost_apply_that_completed_is_succeeded_and_keeps_its_backup(
        world: tuple[Runtime, RunSpec, Path]) -> None:
    rt, run, applied = world
    rt.client.base_env["NO_CHANGES"] = "1"
    _lost_attempt(rt, run, Phase.APPLYING)
    result = deploy(run.deployments[0], run, rt)
    assert result.status == Status.SUCCEEDED and "had completed" in result.error
    assert result.backup_key == "backups/s3/acct/us-east-1/p/terraform.tfstate.1" and not result.lease_held
    assert DeploymentRecord(rt.store, run.run_id, run.deployments[0]).last_good() == run.deployments[0].bundle_key
    assert not applied.exists()


def test_a_backed_up_attempt_resumes_with_its_backup_and_applies_once(world: tuple[Runtime, RunSpec, Path]) -> None:
    rt, run, applied = world
    _lost_attempt(rt, run, Phase.BACKED_UP)
    events: list[tuple[str, str]] = []
    rt.on_event = lambda dep, phase, detail: events.append((dep, phase))
    result = deploy(run.deployments[0], run, rt)
    assert result.status == Status.SUCCEEDED and len(applied.read_text().splitlines()) == 1
    assert result.backup_key == "backups/s3/acct/us-east-1/p/terraform.tfstate.1"
    phases = [p for _, p in events]
    assert "backup" not in phases  # the lost attempt's backup is reused, not taken again
    assert phases.index("init") < phases.index("plan") < phases.index("apply") < phases.index("succeeded")


def test_a_store_failure_after_the_plan_keeps_the_plan_counts_and_never_applies(
        world: tuple[Runtime, RunSpec, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    rt, run, applied = world
    original = DeploymentRecord.write

    def refuse_applying(self: DeploymentRecord, phase: Phase, stage: str = "", **data: object) -> None:
        if phase == Phase.APPLYING:
            raise StoreError("store unreachable")
        original(self, phase, stage, **data)

    monkeypatch.setattr(DeploymentRecord, "write", refuse_applying)
    result = deploy(run.deployments[0], run, rt)
    assert result.status == Status.FAILED and "store unreachable" in result.error
    assert result.plan.add == 1 and result.backup_key  # known before the failure, so reported
    assert not applied.exists()


def test_a_cancelled_run_is_not_shown_as_applying(world: tuple[Runtime, RunSpec, Path]) -> None:
    rt, run, applied = world
    events: list[str] = []

    def on_event(dep: str, phase: str, detail: str) -> None:
        events.append(phase)
        if phase == "backup":
            rt.cancel.cancel("test")  # after the backup, before the apply

    rt.on_event = on_event
    result = deploy(run.deployments[0], run, rt)
    assert result.status == Status.CANCELLED and "before apply" in result.error
    assert "apply" not in events and not applied.exists()
