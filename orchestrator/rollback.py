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
from collections.abc import Mapping
from dataclasses import replace

from orchestrator import audit, keys
from orchestrator.errors import TfoError
from orchestrator.models import (
    DeploymentResult,
    RollbackRecord,
    RollbackStatus,
    RollbackStrategy,
    RunSpec,
    Status,
)
from orchestrator.procs import wait_until_idle
from orchestrator.record import DeploymentRecord, Phase
from orchestrator.runtime import Runtime
from orchestrator.state import state_addresses, state_serial
from orchestrator.steps import ApplyStep, InitStep, PlanStep, ShowPlanStep, StepContext, StepResult
from orchestrator.terraform import CommandResult
from orchestrator.workspace import directory, prepare_workspace, redactor_for, step_context


class _Failed(Exception):
    pass


def _check(r: StepResult) -> StepResult:
    if not r.ok:
        raise _Failed(r.message)
    return r


def _verify(ctx: StepContext, destroy: bool = False) -> bool:
    """True when a plan of the target changes no resource: infrastructure matches it.

    Resource changes only: output values alone (Terraform counts them in -detailed-exitcode) say
    nothing about infrastructure.
    """
    _check(PlanStep(destroy=destroy, name="verify").run(ctx))
    if not ctx.has_changes:
        return True
    _check(ShowPlanStep().run(ctx))
    return ctx.plan_summary is not None and not ctx.plan_summary.has_changes


class _Rollback:
    """One deployment's rollback: its record, the redactor and the command log its audit record keeps."""

    def __init__(self, rt: Runtime, run: RunSpec, result: DeploymentResult, returning: Mapping[str, str]) -> None:
        self.rt, self.run, self.result, self.spec = rt, run, result, result.spec
        self.returning = returning
        self.record = DeploymentRecord(rt.store, run.run_id, result.spec, rt.host)
        self.redactor = redactor_for(result.spec)
        self.log: list[CommandResult] = []

    def workspace(self, bundle: str) -> StepContext:
        ws = prepare_workspace(self.rt, self.run.run_id, self.spec, bundle, suffix=".rollback")
        ctx = step_context(self.rt, ws, self.spec, self.run.run_id, self.redactor, self.returning)
        ctx.log = self.log
        _check(InitStep().run(ctx))
        return ctx

    def target(self, strategy: RollbackStrategy) -> str:
        """The bundle the rollback converges to ("" = nothing: destroy what the failed apply created)."""
        if strategy == RollbackStrategy.REAPPLY:
            return self.result.previous_bundle_key
        return self.result.previous_bundle_key or self.record.last_good()

    def reapply(self) -> RollbackRecord:
        target = self.target(RollbackStrategy.REAPPLY)
        destroy = not target
        ctx = self.workspace(target or self.spec.bundle_key)
        _check(PlanStep(destroy=destroy, name="rollback-plan").run(ctx))
        if ctx.has_changes:
            _check(ApplyStep(name="rollback-apply").run(ctx))
        matches = _verify(ctx, destroy=destroy)
        self.record.set_last_good(target)
        return RollbackRecord(RollbackStrategy.REAPPLY, RollbackStatus.SUCCEEDED, target=target or "destroy",
                              matches_target=matches,
                              error="" if matches else "infrastructure still differs from the rollback target")

    def restore(self) -> RollbackRecord:
        spec, result = self.spec, self.result
        if not result.backup_key:
            raise _Failed("no pre-apply backup was recorded for this deployment")
        store = self.rt.state_store(spec.account, self.run.run_id)
        current = store.read_state(spec.state_key)
        backup = store.read_backup(result.backup_key)
        untracked = tuple(sorted(state_addresses(current) - state_addresses(backup)))
        store.restore_state(spec.state_key, backup)
        target = self.target(RollbackStrategy.STATE)
        ctx = self.workspace(target or spec.bundle_key)
        matches = _verify(ctx, destroy=not target)
        self.record.set_last_good(target)
        note = ""
        if untracked:
            note = ("restored state no longer tracks resources the failed apply created; they still exist: "
                    + ", ".join(untracked))
        return RollbackRecord(RollbackStrategy.STATE, RollbackStatus.SUCCEEDED, target=result.backup_key,
                              matches_target=matches, untracked=untracked, error=self.redactor.redact(note))

    def after_lost_attempt(self, strategy: RollbackStrategy, moved: str) -> RollbackRecord:
        """An interrupted attempt of this rollback moved the state on: verify, never apply again."""
        target = self.target(strategy)
        ctx = self.workspace(target or self.spec.bundle_key)
        if _verify(ctx, destroy=not target):
            self.record.set_last_good(target)
            return RollbackRecord(strategy, RollbackStatus.SUCCEEDED, target=target or "destroy", matches_target=True,
                                  error=f"completed by an interrupted attempt of this rollback ({moved})")
        return RollbackRecord(strategy, RollbackStatus.FAILED, matches_target=False, error=(
            f"an interrupted attempt of this rollback left {self.spec.state_key} moved on ({moved}) and "
            "infrastructure does not match the rollback target; refusing to roll back over what may be a later change"))


def rollback(result: DeploymentResult, run: RunSpec, rt: Runtime, strategy: RollbackStrategy,
             returning: Mapping[str, str] | None = None) -> DeploymentResult:
    """Take one deployment back to before this run's apply. `returning`: the upstreams this run rolls back
    too, with their pre-apply backups, so this deployment is given their outputs as they will be."""
    spec = result.spec
    start = time.monotonic()
    job = _Rollback(rt, run, result, returning or {})
    owner = run.run_id
    if strategy == RollbackStrategy.NONE:
        rt.leases.release(spec.state_key, owner)
        rec = RollbackRecord(strategy, RollbackStatus.SKIPPED, error="rollback = none: the failure is recorded only")
        return replace(result, rollback=rec, lease_held=False)

    rt.event(spec.id, "rollback", strategy.value)
    lease = rt.leases.acquire(spec.state_key, owner, rt.cfg.lock_timeout_s)
    try:
        if not lease.acquired:
            who = lease.holder.describe() if lease.holder else "another run"
            rec = RollbackRecord(strategy, RollbackStatus.FAILED,
                                 error=f"could not take the lease on {spec.state_key}: held by {who}")
        else:
            lost = job.record.checkpoint(stage="rollback")
            if lost is not None:
                # The lost attempt's terraform runs on in its own session: let it finish first.
                wait_until_idle(directory(rt, run.run_id, spec, ".rollback"), rt.cfg.lock_timeout_s)
            now = state_serial(rt.state_store(spec.account, run.run_id), spec.state_key)
            moved_on = result.state_serial is not None and now != result.state_serial
            moved = f"serial {result.state_serial} -> {now}"
            if moved_on and lost is None:
                rec = RollbackRecord(strategy, RollbackStatus.FAILED, error=(
                    f"state {spec.state_key} moved on since this run's apply ({moved}); "
                    "refusing to roll back over a later change"))
            else:
                try:
                    if moved_on:
                        rec = job.after_lost_attempt(strategy, moved)
                    else:
                        job.record.write(Phase.ROLLING_BACK, stage="rollback", from_serial=now)
                        rec = job.reapply() if strategy == RollbackStrategy.REAPPLY else job.restore()
                except _Failed as e:
                    rec = RollbackRecord(strategy, RollbackStatus.FAILED, error=str(e))
                except TfoError as e:
                    rec = RollbackRecord(strategy, RollbackStatus.FAILED, error=job.redactor.redact(str(e)))
                except Exception as e:  # recorded, never raised: the other rollbacks still run
                    error = job.redactor.redact(f"internal error: {type(e).__name__}: {e}")
                    rec = RollbackRecord(strategy, RollbackStatus.FAILED, error=error)
    finally:
        # Also frees the lease the failed apply kept for us; release never touches another owner's lease.
        rt.leases.release(spec.state_key, owner)
    rec = replace(rec, duration_s=round(time.monotonic() - start, 3))
    record = {**audit.base_metadata(run), "kind": "rollback", "deployment": spec.to_dict(), "host": rt.host,
              "rollback": rec.to_dict(), "steps": [audit.command_record(r) for r in job.log]}
    _, audit_error = audit.write(rt.store, keys.audit_deployment(run.run_id, run.started_at, spec.id, "rollback"),
                                 record, rt.run_dir(run.run_id))
    if audit_error:
        rec = replace(rec, error=f"{rec.error}; {audit_error}".lstrip("; "))
    status = Status.ROLLED_BACK if rec.status == RollbackStatus.SUCCEEDED else Status.ROLLBACK_FAILED
    rt.event(spec.id, status.value, rec.error.splitlines()[0] if rec.error else "")
    return replace(result, status=status, rollback=rec, lease_held=False)
