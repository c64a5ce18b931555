from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.finalize import needs_rollback
from orchestrator.models import Action, DeploymentResult, DeploymentSpec, RunOptions, RunSpec, Status


def _r(n: int, status: Status, applied: bool) -> DeploymentResult:
    spec = DeploymentSpec(f"s3/a/r/p{n}", "s3", "a", "r", f"p{n}", f"s3/a/r/p{n}/terraform.tfstate", "x.tfvars",
                          "terraform", {})
    return DeploymentResult(spec, "apply", status, applied=applied)


def _run(atomic: bool, action: Action = Action.APPLY) -> RunSpec:
    return RunSpec("20260101T000000Z-abcdef", RunOptions(action, "reapply", atomic), (), "2026-01-01T00:00:00+00:00")


def test_only_applied_failures_are_rolled_back() -> None:
    results = [_r(0, Status.FAILED, True), _r(1, Status.FAILED, False), _r(2, Status.SUCCEEDED, True)]
    assert needs_rollback(_run(False), results, cancelled=False) == {"s3/a/r/p0"}


def test_atomic_rolls_back_applied_successes_too() -> None:
    results = [_r(0, Status.FAILED, True), _r(1, Status.NO_CHANGES, False), _r(2, Status.SUCCEEDED, True)]
    assert needs_rollback(_run(True), results, cancelled=False) == {"s3/a/r/p0", "s3/a/r/p2"}
    # a failure before any apply (lock refused, plan error) still makes the atomic run roll back
    assert needs_rollback(_run(True), [_r(0, Status.FAILED, False), _r(1, Status.SUCCEEDED, True)],
                          cancelled=False) == {"s3/a/r/p1"}
    assert needs_rollback(_run(True), [_r(0, Status.SUCCEEDED, True)], cancelled=False) == set()


def test_nothing_is_rolled_back_for_plans_or_cancelled_runs() -> None:
    assert needs_rollback(_run(False, Action.PLAN), [_r(0, Status.FAILED, False)], cancelled=False) == set()
    assert needs_rollback(_run(True), [_r(0, Status.FAILED, True)], cancelled=True) == set()


def tfo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root), **(env or {})}, timeout=120)


def _repo(tmp_path: Path, toml: str = "") -> None:
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform/main.tf").write_text("# module\n")
    (tmp_path / "Accounts/a").mkdir(parents=True)
    (tmp_path / "Accounts/a/p.tfvars").write_text("s3_buckets = {}\n")
    if toml:
        (tmp_path / "tfo.toml").write_text(toml)


def test_exit_code_2_for_bad_config(tmp_path: Path) -> None:
    _repo(tmp_path, "[tfo]\nrollback = 'maybe'\n")
    r = tfo(tmp_path, "plan")
    assert r.returncode == 2 and "tfo.toml" in r.stderr and "rollback" in r.stderr and "Traceback" not in r.stderr


def test_exit_code_2_for_usage(tmp_path: Path) -> None:
    r = tfo(tmp_path, "apply", "--rollback", "sometimes")
    assert r.returncode == 2 and "sometimes" in r.stderr


def test_exit_code_3_for_missing_terraform(tmp_path: Path) -> None:
    _repo(tmp_path)
    r = tfo(tmp_path, "--terraform-bin", str(tmp_path / "no-terraform"), "plan")
    assert r.returncode == 3 and "no-terraform" in r.stderr and "Traceback" not in r.stderr


def test_exit_code_3_for_unreachable_store_naming_it(tmp_path: Path) -> None:
    from tests.helpers import free_port

    port = free_port()  # nothing listens here
    _repo(tmp_path, f'[tfo.store]\nkind = "s3"\nbucket = "b"\nendpoint_url = "http://127.0.0.1:{port}"\n')
    r = tfo(tmp_path, "plan", env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                                   "AWS_MAX_ATTEMPTS": "1", "TFO_TERRAFORM_BIN": sys.executable})
    assert r.returncode == 3, r.stderr
    assert "s3://b" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / ".tfo" / "work").exists()


@pytest.mark.parametrize("args", [["runs", "show", "not-a-run"], ["backups", "list", "../etc/passwd"],
                                  ["rollback", "s3/a b/r/p"]])
def test_hostile_identifiers_are_refused(tmp_path: Path, args: list[str]) -> None:
    _repo(tmp_path)
    r = tfo(tmp_path, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_exit_code_3_for_unreachable_broker_naming_it(tmp_path: Path) -> None:
    from tests.helpers import free_port

    port = free_port()  # nothing listens here
    _repo(tmp_path, f'[tfo.celery]\nbroker_url = "redis://:brokerpass@127.0.0.1:{port}/0"\n')
    r = tfo(tmp_path, "plan")
    assert r.returncode == 3, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "broker" in r.stderr
    assert "brokerpass" not in r.stderr and "Traceback" not in r.stderr
