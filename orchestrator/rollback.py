"""Rollback of one deployment whose apply failed (or, with --atomic, succeeded in a failed run).

reapply: apply the last successfully applied bundle against the current state, so infrastructure
         converges back to it; with no last-good bundle, destroy what the failed apply created.
state:   restore the pre-apply backup; warn about what the restored state no longer tracks.
none:    record the failure only.
After reapply or state, a plan of the target configuration records whether infrastructure matches.

A rollback writes a checkpoint before it changes anything. A redelivered finalize (its worker died
mid-rollback) finds it, waits for the lost attempt's terraform to finish, and, when that attempt moved
the state on, only verifies: it never applies over a state it cannot tell from a later change.
"""

from __future__ import annotations

import time
from dataclasses import replace

from orchestrator import audit
from orchestrator.deploy import (
    failure_text,
    prepare_workspace,
    read_checkpoint,
    read_last_good,
    redactor_for,
    state_addresses,
    state_serial,
    step_context,
    write_checkpoint,
    write_last_good,
)
from orchestrator.errors import TfoError
from orchestrator.models import DeploymentResult, DeploymentSpec, RollbackRecord, RunSpec, Status
from orchestrator.procs import wait_until_idle
from orchestrator.redaction import Redactor
from orchestrator.runtime import Runtime
from orchestrator.steps import ApplyStep, InitStep, PlanStep, ShowPlanStep, StepContext
from orchestrator.terraform import CommandResult


class _Failed(Exception):
    pass


def _check(r: CommandResult, redactor: Redactor) -> CommandResult:
    if not r.ok:
        raise _Failed(failure_text(r, redactor))
    return r


def _verify(ctx: StepContext, redactor: Redactor, destroy: bool = False) -> bool:
    """True when a plan of the target changes no resource: infrastructure matches it.

    Resource changes only: output values alone (Terraform counts them in -detailed-exitcode) say
    nothing about infrastructure.
    """
    r = _check(PlanStep(destroy=destroy, name="verify").run(ctx), redactor)
    if r.exit_code == 0:
        return True
    show, summary = ShowPlanStep().run(ctx, r)
    _check(show, redactor)
    return summary is not None and not summary.has_changes


def _workspace(rt: Runtime, run: RunSpec, spec: DeploymentSpec, bundle: str,
               redactor: Redactor, log: list[CommandResult]) -> StepContext:
    ctx = step_context(rt, prepare_workspace(rt, run, spec, bundle, suffix=".rollback"), spec, run.run_id)
    ctx.log = log
    _check(InitStep().run(ctx), redactor)
    return ctx


def _target(rt: Runtime, result: DeploymentResult, strategy: str) -> str:
    """The bundle the rollback converges to ("" = nothing: destroy what the failed apply created)."""
    if strategy == "reapply":
        return result.previous_bundle_key
    return result.previous_bundle_key or read_last_good(rt.store, result.spec)


def _reapply(rt: Runtime, run: RunSpec, result: DeploymentResult, redactor: Redactor,
             log: list[CommandResult]) -> RollbackRecord:
    spec = result.spec
    target = _target(rt, result, "reapply")
    destroy = not target
    ctx = _workspace(rt, run, spec, target or spec.bundle_key, redactor, log)
    plan = _check(PlanStep(destroy=destroy, name="rollback-plan").run(ctx), redactor)
    if plan.exit_code == 2:
        _check(ApplyStep(name="rollback-apply").run(ctx), redactor)
    matches = _verify(ctx, redactor, destroy=destroy)
    write_last_good(rt.store, spec, target, run.run_id)
    return RollbackRecord("reapply", "succeeded", target=target or "destroy", matches_target=matches,
                          error="" if matches else "infrastructure still differs from the rollback target")


def _restore(rt: Runtime, run: RunSpec, result: DeploymentResult, redactor: Redactor,
             log: list[CommandResult]) -> RollbackRecord:
    spec = result.spec
    if not result.backup_key:
        raise _Failed("no pre-apply backup was recorded for this deployment")
    store = rt.state_store(spec.account, run.run_id)
    current = store.read_state(spec.state_key)
    backup = store.read_backup(result.backup_key)
    untracked = tuple(sorted(state_addresses(current) - state_addresses(backup)))
    store.restore_state(spec.state_key, backup)
    target = _target(rt, result, "state")
    ctx = _workspace(rt, run, spec, target or spec.bundle_key, redactor, log)
    matches = _verify(ctx, redactor, destroy=not target)
    write_last_good(rt.store, spec, target, run.run_id)
    note = ""
    if untracked:
        note = ("restored state no longer tracks resources the failed apply created; they still exist: "
                + ", ".join(untracked))
    return RollbackRecord("state", "succeeded", target=result.backup_key, matches_target=matches,
                          untracked=untracked, error=redactor.redact(note))


def _after_lost_attempt(rt: Runtime, run: RunSpec, result: DeploymentResult, strategy: str, moved: str,
                        redactor: Redactor, log: list[CommandResult]) -> RollbackRecord:
    """An interrupted attempt of this rollback moved the state on: verify, never apply again."""
    spec = result.spec
    target = _target(rt, result, strategy)
    ctx = _workspace(rt, run, spec, target or spec.bundle_key, redactor, log)
    if _verify(ctx, redactor, destroy=not target):
        write_last_good(rt.store, spec, target, run.run_id)
        return RollbackRecord(strategy, "succeeded", target=target or "destroy", matches_target=True,
                              error=f"completed by an interrupted attempt of this rollback ({moved})")
    return RollbackRecord(strategy, "failed", matches_target=False, error=(
        f"an interrupted attempt of this rollback left {spec.state_key} moved on ({moved}) and infrastructure "
        "does not match the rollback target; refusing to roll back over what may be a later change"))


def rollback(result: DeploymentResult, run: RunSpec, rt: Runtime, strategy: str) -> DeploymentResult:
    spec = result.spec
    start = time.monotonic()
    redactor = redactor_for(spec)
    log: list[CommandResult] = []
    owner = run.run_id
    if strategy == "none":
        rt.leases.release(spec.state_key, owner)
        rec = RollbackRecord("none", "skipped", error="rollback = none: the failure is recorded only")
        return replace(result, rollback=rec, lease_held=False)

    rt.event(spec.id, "rollback", strategy)
    lease = rt.leases.acquire(spec.state_key, owner, rt.cfg.lock_timeout_s)
    try:
        if not lease.acquired:
            who = lease.holder.describe() if lease.holder else "another run"
            rec = RollbackRecord(strategy, "failed",
                                 error=f"could not take the lease on {spec.state_key}: held by {who}")
        else:
            lost = read_checkpoint(rt, run, spec, stage="rollback")
            if lost is not None:
                # The lost attempt's terraform runs on in its own session: let it finish first.
                wait_until_idle(rt.run_dir(run.run_id) / f"{spec.slug}.rollback", rt.cfg.lock_timeout_s)
            now = state_serial(rt.state_store(spec.account, run.run_id), spec.state_key)
            moved_on = result.state_serial is not None and now != result.state_serial
            moved = f"serial {result.state_serial} -> {now}"
            if moved_on and lost is None:
                rec = RollbackRecord(strategy, "failed", error=(
                    f"state {spec.state_key} moved on since this run's apply ({moved}); "
                    "refusing to roll back over a later change"))
            else:
                try:
                    if moved_on:
                        rec = _after_lost_attempt(rt, run, result, strategy, moved, redactor, log)
                    else:
                        write_checkpoint(rt, run, spec, "rolling_back", stage="rollback", from_serial=now)
                        rec = (_reapply if strategy == "reapply" else _restore)(rt, run, result, redactor, log)
                except _Failed as e:
                    rec = RollbackRecord(strategy, "failed", error=str(e))
                except TfoError as e:
                    rec = RollbackRecord(strategy, "failed", error=redactor.redact(str(e)))
                except Exception as e:  # recorded, never raised: the other rollbacks still run
                    error = redactor.redact(f"internal error: {type(e).__name__}: {e}")
                    rec = RollbackRecord(strategy, "failed", error=error)
    finally:
        # Also frees the lease the failed apply kept for us; release never touches another owner's lease.
        rt.leases.release(spec.state_key, owner)
    rec = replace(rec, duration_s=round(time.monotonic() - start, 3))
    record = {**audit.base_metadata(run), "kind": "rollback", "deployment": spec.to_dict(), "host": rt.host,
              "rollback": rec.to_dict(), "steps": [audit.command_record(r) for r in log]}
    _, audit_error = audit.write(rt.store, audit.deployment_key(run, spec.slug, "rollback"), record,
                                 rt.run_dir(run.run_id))
    if audit_error:
        rec = replace(rec, error=f"{rec.error}; {audit_error}".lstrip("; "))
    status = Status.ROLLED_BACK if rec.status == "succeeded" else Status.ROLLBACK_FAILED
    rt.event(spec.id, status.value, rec.error.splitlines()[0] if rec.error else "")
    return replace(result, status=status, rollback=rec, lease_held=False)
