"""The client that starts terraform, driven with small stand-in executables (real processes)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from orchestrator.cancel import CancelToken
from orchestrator.errors import TerraformNotFoundError
from orchestrator.models import PlanSummary
from orchestrator.steps import InitStep, PlanStep, StepContext, summarize_plan, summary_from_plan_output
from orchestrator.terraform import CommandResult, CommandStatus, TerraformClient, TerraformCommand


def fake_binary(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-terraform"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_success_failure_and_accepted_exit_codes(tmp_path: Path) -> None:
    client = TerraformClient(fake_binary(tmp_path, 'echo "args: $*"; echo "to stderr" >&2; exit "$EXIT"\n'))
    ok = client.run(TerraformCommand("plan", ("plan", "-x"), tmp_path, {"EXIT": "2"}, ok_exit_codes=(0, 2)))
    assert ok.status == CommandStatus.SUCCEEDED and ok.exit_code == 2
    assert "args: plan -x" in ok.output and "to stderr" in ok.output
    bad = client.run(TerraformCommand("apply", ("apply",), tmp_path, {"EXIT": "1"}))
    assert bad.status == CommandStatus.FAILED and bad.exit_code == 1


def test_automation_environment_is_set(tmp_path: Path) -> None:
    client = TerraformClient(fake_binary(tmp_path, 'echo "$TF_IN_AUTOMATION $TF_INPUT $MINE"\n'), base_env={})
    r = client.run(TerraformCommand("x", (), tmp_path, {"MINE": "yes"}))
    assert r.output.strip() == "1 0 yes"


def test_cancel_sends_one_sigint_and_records_cancelled(tmp_path: Path) -> None:
    marker = tmp_path / "got-int"
    body = f'trap "echo interrupted > {marker}; exit 130" INT\nwhile true; do sleep 0.1; done\n'
    client = TerraformClient(fake_binary(tmp_path, body), grace_s=10)
    token = CancelToken()
    start = time.monotonic()
    import threading

    threading.Timer(0.5, token.cancel, args=("test",)).start()
    r = client.run(TerraformCommand("apply", (), tmp_path), token)
    assert r.status == CommandStatus.CANCELLED
    assert marker.read_text().strip() == "interrupted"  # terraform got the chance to stop cleanly
    assert time.monotonic() - start < 8


def test_a_command_that_completes_after_the_sigint_is_recorded_by_its_outcome(tmp_path: Path) -> None:
    """Terraform finishes in-flight work after one SIGINT; an apply that completes and exits 0 succeeded."""
    body = 'trap \'sleep 0.3; echo "Apply complete! Resources: 1 added"; exit 0\' INT\nwhile true; do sleep 0.1; done\n'
    client = TerraformClient(fake_binary(tmp_path, body), grace_s=10)
    token = CancelToken()
    import threading

    threading.Timer(0.5, token.cancel, args=("test",)).start()
    r = client.run(TerraformCommand("apply", ("apply", "tfplan"), tmp_path), token)
    assert r.status == CommandStatus.SUCCEEDED and "Apply complete!" in r.output


def test_any_other_step_stopped_is_cancelled_even_when_it_exits_0(tmp_path: Path) -> None:
    """A plan or init that exits 0 after the SIGINT did not finish its work: nothing after it may run."""
    client = TerraformClient(fake_binary(tmp_path, 'trap "exit 0" INT\nwhile true; do sleep 0.1; done\n'), grace_s=10)
    token = CancelToken()
    import threading

    threading.Timer(0.5, token.cancel, args=("test",)).start()
    r = client.run(TerraformCommand("plan", ("plan", "-out=tfplan"), tmp_path), token)
    assert r.status == CommandStatus.CANCELLED


def test_timeout_then_kill_when_sigint_is_ignored(tmp_path: Path) -> None:
    client = TerraformClient(fake_binary(tmp_path, 'trap "" INT\nsleep 30\n'), grace_s=0.5)
    start = time.monotonic()
    r = client.run(TerraformCommand("apply", (), tmp_path, timeout_s=0.5))
    assert r.status == CommandStatus.TIMEOUT
    assert time.monotonic() - start < 10


def test_missing_binary_is_a_platform_error(tmp_path: Path) -> None:
    with pytest.raises(TerraformNotFoundError) as e:
        TerraformClient(str(tmp_path / "nope")).run(TerraformCommand("init", (), tmp_path))
    assert e.value.exit_code == 3


def test_init_and_plan_command_lines(tmp_path: Path) -> None:
    client = TerraformClient(fake_binary(tmp_path, 'echo "$*"\n'))
    ctx = StepContext(tmp_path, client, CancelToken(), 60, 30, {"key": "s3/a/r/p/terraform.tfstate", "region": "x"},
                      var_files=("../.tfo/vars/00-common.tfvars", "../.tfo/vars/01-p.tfvars"))
    init = InitStep().run(ctx).command
    assert init is not None and init.ok
    assert "-backend-config=key=s3/a/r/p/terraform.tfstate" in init.output
    assert "-backend-config=region=x" in init.output and "-input=false" in init.output
    plan = PlanStep(destroy=True).run(ctx).command
    assert plan is not None and ctx.plan is plan
    assert "-var-file=../.tfo/vars/00-common.tfvars -var-file=../.tfo/vars/01-p.tfvars" in plan.output  # in order
    for flag in ("-detailed-exitcode", "-out=tfplan", "-destroy", "-lock-timeout=30s"):
        assert flag in plan.output
    assert [r.step for r in ctx.log] == ["init", "plan"]


def test_plan_summary_counts_replacements_as_add_and_destroy() -> None:
    plan = {"resource_changes": [
        {"change": {"actions": ["create"]}},
        {"change": {"actions": ["update"]}},
        {"change": {"actions": ["delete"]}},
        {"change": {"actions": ["delete", "create"]}},
        {"change": {"actions": ["no-op"]}},
        {"change": {"actions": ["read"]}},
    ]}
    s = summarize_plan(json.dumps(plan))
    assert (s.add, s.change, s.destroy) == (2, 1, 2)


LOCK_ERROR = """
Error: Error acquiring the state lock

Error message: ConditionalCheckFailedException: The conditional request failed
Lock Info:
  ID:        5c1f9c2e-1b7a-7c55-3a8e-0d6f2a7d9e11
  Path:      tfo-state/s3/acct-a/us-west-2/data-lake/terraform.tfstate
  Operation: OperationTypeApply
  Who:       runner@build-host-7
  Version:   1.0.3
  Created:   2026-11-25 19:00:00.000000000 +0000 UTC
  Info:

Terraform acquires a state lock to protect the state from being written
"""


def test_state_lock_error_is_parsed() -> None:
    from orchestrator.steps import parse_lock_error

    lock = parse_lock_error(LOCK_ERROR)
    assert lock is not None
    assert lock.lock_id == "5c1f9c2e-1b7a-7c55-3a8e-0d6f2a7d9e11"
    assert lock.who == "runner@build-host-7" and lock.host == "build-host-7"
    assert lock.operation == "OperationTypeApply"
    assert parse_lock_error("Error: something else entirely") is None


def test_force_unlock_command_line(tmp_path: Path) -> None:
    from orchestrator.steps import ForceUnlockStep

    client = TerraformClient(fake_binary(tmp_path, 'echo "$*"\n'))
    ctx = StepContext(tmp_path, client, CancelToken(), 60, 30, {})
    result = ForceUnlockStep("abc-123").run(ctx)
    assert result.ok and result.command is not None
    assert result.command.output.strip() == "force-unlock -force abc-123"


def test_a_failed_or_stopped_command_is_a_step_result_with_redacted_text(tmp_path: Path) -> None:
    from orchestrator.redaction import Redactor
    from orchestrator.steps import StepStatus

    client = TerraformClient(fake_binary(tmp_path, 'echo "Error: bad password hunter22-secret"; exit 1\n'))
    redactor = Redactor()
    redactor.add(["hunter22-secret"])
    ctx = StepContext(tmp_path, client, CancelToken(), 60, 30, {}, redactor=redactor)
    result = InitStep().run(ctx)
    assert result.status == StepStatus.FAILED and not result.ok
    assert "terraform init failed (exit 1)" in result.message and "hunter22-secret" not in result.message


def _plan(output: str, code: int) -> CommandResult:
    status = CommandStatus.SUCCEEDED if code in (0, 2) else CommandStatus.FAILED
    return CommandResult("plan", ("terraform", "plan"), status, code, output, 1.0)


@pytest.mark.parametrize("output, code, expected", [
    ("No changes. Your infrastructure matches the configuration.", 0, PlanSummary()),
    ("  # tfotest_thing.bucket[\"a\"] will be created\n\nPlan: 1 to add, 2 to change, 3 to destroy.\n", 2,
     PlanSummary(add=1, change=2, destroy=3)),
    ("Plan: 2 to import, 1 to add, 0 to change, 0 to destroy.\n", 2, PlanSummary(add=1)),
    # output values only: no Plan line, so `show -json` must decide
    ("Changes to Outputs:\n  + names = [\"a\"]\n", 2, None),
    # a failed plan has no summary
    ("Error: something\n", 1, None),
    # an attribute that happens to look like the line never stands at a line start, but two lines are ambiguous
    ("Plan: 1 to add, 0 to change, 0 to destroy.\nPlan: 9 to add, 0 to change, 0 to destroy.\n", 2, None),
])
def test_summary_read_from_the_plan_output(output: str, code: int, expected: PlanSummary | None) -> None:
    assert summary_from_plan_output(_plan(output, code)) == expected
