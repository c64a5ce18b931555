"""deploy(spec): one deployment from bundle to result. Never raises for a Terraform failure.

materialize directory -> lease (apply) -> the pipeline (a list of steps) -> audit -> result.
A failed apply keeps its lease for the rollback that finalize runs; every other path releases it.
To add a step (a policy gate, say), write a Step on DeployContext and put it in PIPELINES.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from orchestrator import audit, keys
from orchestrator.errors import StateBackupError, TfoError
from orchestrator.models import Action, DeploymentResult, DeploymentSpec, PlanSummary, RunSpec, Status, Violation
from orchestrator.policy import changed_resources, evaluate
from orchestrator.procs import host_name, processes_in, wait_until_idle
from orchestrator.record import UNRECORDED, Checkpoint, DeploymentRecord, Phase
from orchestrator.runtime import Runtime
from orchestrator.state import state_serial
from orchestrator.steps import (
    PLAN_FILE,
    ApplyStep,
    ForceUnlockStep,
    InitStep,
    PlanStep,
    ShowPlanStep,
    Step,
    StepContext,
    StepResult,
    StepStatus,
    parse_lock_error,
)
from orchestrator.terraform import CommandResult
from orchestrator.workspace import directory, drop_provider_binaries, prepare_workspace, redactor_for, step_context


@dataclass
class Outcome:
    status: Status = Status.FAILED
    plan: PlanSummary = field(default_factory=PlanSummary)
    plan_text: str = ""
    error: str = ""
    backup_key: str = ""
    backup_version: str = ""
    applied: bool = False
    state_serial: int | None = None
    previous_bundle_key: str = ""
    keep_lease: bool = False
    violations: tuple[Violation, ...] = ()


@dataclass(kw_only=True)
class DeployContext(StepContext):
    """A deployment's steps run on this: the Terraform context plus the deployment, its record and outcome."""

    spec: DeploymentSpec
    run: RunSpec
    rt: Runtime
    record: DeploymentRecord
    out: Outcome
    # The checkpoint of a lost attempt that got past its backup: this attempt resumes it.
    prior: Checkpoint | None = None

    @property
    def resuming(self) -> bool:
        return self.prior is not None


@dataclass(frozen=True)
class PlanChanges:
    """`terraform plan`; a resumed attempt first frees the state lock its dead predecessor left."""

    name: str = "plan"

    def run(self, ctx: DeployContext) -> StepResult:
        plan = PlanStep().run(ctx)
        if ctx.prior is not None and not plan.ok and plan.command and _release_dead_lock(ctx, plan.command):
            plan = PlanStep().run(ctx)
        ctx.out.plan_text = ctx.redactor.redact(ctx.plan.output if ctx.plan else "")
        return plan


@dataclass(frozen=True)
class AfterLostApply:
    """An earlier attempt started `apply` and was lost. Never apply again: resume or report."""

    name: str = "resume"

    def run(self, ctx: DeployContext) -> StepResult:
        prior, out = ctx.prior, ctx.out
        if prior is None or prior.phase != Phase.APPLYING:
            return StepResult(self.name, StepStatus.OK)
        out.applied = True
        out.state_serial = state_serial(ctx.rt.state_store(ctx.spec.account, ctx.run.run_id), ctx.spec.state_key)
        who = f"{prior.host or '?'} (pid {prior.pid or '?'})"
        if not ctx.has_changes:
            # The lost apply completed: infrastructure already matches this configuration.
            out.status = Status.SUCCEEDED
            out.error = f"resumed: the apply started by a lost attempt on {who} had completed"
            ctx.record.set_last_good(ctx.spec.bundle_key)
            return StepResult(self.name, StepStatus.DONE)
        out.keep_lease = True
        return StepResult(self.name, StepStatus.FAILED, (
            f"the attempt on {who} was lost during apply and left infrastructure partly changed; "
            "not applying twice, rolling back instead"))


@dataclass(frozen=True)
class PolicyGate:
    """The policy rules read the plan (`terraform show -json`) before anything is applied; a refusal ends the
    deployment `blocked`, with the rules and resources in its result. Plans are judged too, so reviewers
    see the verdict before an apply. No rules configured, or no changes: nothing to judge."""

    name: str = "policy"

    def run(self, ctx: DeployContext) -> StepResult:
        policy = ctx.run.policy
        if not policy.active or not ctx.has_changes:
            return StepResult(self.name, StepStatus.OK)
        ctx.rt.event(ctx.spec.id, self.name)
        show = ctx.execute(self.name, ["show", "-json", "-no-color", PLAN_FILE])
        if not show.ok:
            return ctx.result(show)
        try:
            plan = json.loads(show.output)
        except json.JSONDecodeError:
            return StepResult(self.name, StepStatus.FAILED, "terraform show -json printed no plan document", show)
        # The audit keeps what was judged, not the plan document: it holds every value in the clear
        # (prior state, before and after), which `tfo audit show` could not mask.
        judged = [{"address": a, "type": t, "actions": acts} for a, t, acts in changed_resources(plan)]
        ctx.log[-1] = replace(show, output=json.dumps({"resource_changes": judged}))
        violations = evaluate(plan, ctx.spec, policy, ctx.run.options)
        if not violations:
            return StepResult(self.name, StepStatus.OK, command=show)
        ctx.out.violations = violations
        ctx.out.status = Status.BLOCKED
        ctx.out.error = ctx.redactor.redact("refused by policy: " + "; ".join(map(str, violations)))
        return StepResult(self.name, StepStatus.DONE, ctx.out.error, show)


@dataclass(frozen=True)
class ChangesGate:
    """A plan-only run, or a plan without changes, ends here."""

    name: str = "changes"

    def run(self, ctx: DeployContext) -> StepResult:
        if ctx.run.options.action == Action.APPLY and ctx.has_changes:
            return StepResult(self.name, StepStatus.OK)
        ctx.out.status = Status.SUCCEEDED if ctx.has_changes else Status.NO_CHANGES
        if ctx.run.options.action == Action.APPLY:
            # Infrastructure already matches this configuration: it is the last good one.
            ctx.record.set_last_good(ctx.spec.bundle_key)
        return StepResult(self.name, StepStatus.DONE)


@dataclass(frozen=True)
class BackupStep:
    """The pre-apply backup (a resumed attempt reuses its lost predecessor's); no backup, no apply."""

    name: str = "backup"

    def run(self, ctx: DeployContext) -> StepResult:
        out, spec = ctx.out, ctx.spec
        if ctx.prior is not None:  # deploy() took the lost attempt's backup over
            return StepResult(self.name, StepStatus.OK)
        ctx.rt.event(spec.id, self.name)
        out.previous_bundle_key = ctx.record.last_good()
        try:
            backup = ctx.rt.state_store(spec.account, ctx.run.run_id).backup_state(
                spec.state_key, {"run-id": ctx.run.run_id, "deployment": spec.id})
        except StateBackupError as e:
            return StepResult(self.name, StepStatus.REFUSED, ctx.redactor.redact(f"{e}; the apply was not run"))
        out.backup_key, out.backup_version = backup.key, backup.source_version
        ctx.record.write(Phase.BACKED_UP, backup_key=out.backup_key, backup_version=out.backup_version,
                         previous_bundle_key=out.previous_bundle_key)
        return StepResult(self.name, StepStatus.OK)


@dataclass(frozen=True)
class ApplyChanges:
    """`terraform apply` of the reviewed plan file, checkpointed first so it is never run twice."""

    name: str = "apply"

    def run(self, ctx: DeployContext) -> StepResult:
        out, spec = ctx.out, ctx.spec
        if ctx.cancel.cancelled:
            return StepResult(self.name, StepStatus.CANCELLED, f"cancelled before apply: {ctx.cancel.reason}")
        ctx.rt.event(spec.id, self.name)
        out.applied = True
        ctx.record.write(Phase.APPLYING, backup_key=out.backup_key, backup_version=out.backup_version,
                         previous_bundle_key=out.previous_bundle_key)
        result = ApplyStep().run(ctx)
        out.state_serial = state_serial(ctx.rt.state_store(spec.account, ctx.run.run_id), spec.state_key)
        if result.ok:
            out.status = Status.SUCCEEDED
            ctx.record.set_last_good(spec.bundle_key)
            return StepResult(self.name, StepStatus.DONE, command=result.command)
        # A failed apply changed real infrastructure: keep the lease so nobody else touches this state
        # before finalize has rolled it back.
        out.keep_lease = result.status == StepStatus.FAILED
        return result


PIPELINES: dict[Action, tuple[Step[DeployContext], ...]] = {
    Action.PLAN: (InitStep(), PlanChanges(), ShowPlanStep(), PolicyGate(), ChangesGate()),
    Action.APPLY: (InitStep(), PlanChanges(), ShowPlanStep(), AfterLostApply(), PolicyGate(), ChangesGate(),
                   BackupStep(), ApplyChanges()),
}
# The steps whose start is shown as the deployment's phase (progress, Flower); policy, backup and apply
# announce themselves, once they know they will run.
ANNOUNCED = ("init", "plan")


def run_pipeline(steps: Sequence[Step[DeployContext]], ctx: DeployContext) -> None:
    """Each step in turn until one is not OK: DONE ends the deployment as that step set it; a failure,
    a refusal or a stop is recorded with the step's (redacted) message."""
    try:
        for step in steps:
            if step.name in ANNOUNCED:
                ctx.rt.event(ctx.spec.id, step.name)
            result = step.run(ctx)
            if result.status == StepStatus.OK:
                continue
            if result.status != StepStatus.DONE:
                ctx.out.status = Status.CANCELLED if result.status == StepStatus.CANCELLED else Status.FAILED
                ctx.out.error = result.message
            break
    finally:  # also when a step raised (a task time limit, the store): the plan's counts are known
        if ctx.plan_summary is not None:
            ctx.out.plan = ctx.plan_summary


def deploy(spec: DeploymentSpec, run: RunSpec, rt: Runtime) -> DeploymentResult:
    start = time.monotonic()
    redactor = redactor_for(spec)
    record = DeploymentRecord(rt.store, run.run_id, spec, rt.host)
    out = Outcome()
    log: list[CommandResult] = []
    held = False
    try:
        prior = record.checkpoint()
        if prior is not None and (finished := prior.finished()) is not None:
            # A redelivered task whose first attempt finished: report, never run again.
            rt.event(spec.id, "recorded", "an earlier attempt finished this deployment")
            return finished
        if rt.cancel.cancelled:
            out.status, out.error = Status.CANCELLED, f"not started: {rt.cancel.reason}"
            return _finish(spec, run, rt, record, out, log, start, held)
        rt.event(spec.id, "preparing")
        resume_from = prior if prior is not None and prior.phase.resumable else None
        if resume_from is not None:
            # The lost attempt's backup and the configuration before it are this attempt's too, whatever
            # it finds (its rollback target, and the report's backup).
            out.backup_key, out.backup_version = resume_from.backup_key, resume_from.backup_version
            out.previous_bundle_key = resume_from.previous_bundle_key
            # The lost attempt's terraform may still be running in its directory on this host:
            # let it finish (it writes state and releases its lock) before touching the state.
            wait_until_idle(directory(rt, run.run_id, spec), rt.cfg.lock_timeout_s)
        ws = prepare_workspace(rt, run.run_id, spec, spec.bundle_key,
                               suffix=".resume" if resume_from is not None else "")
        tf = step_context(rt, ws, spec, run.run_id, redactor)
        tf.log = log
        ctx = DeployContext(**{f.name: getattr(tf, f.name) for f in fields(StepContext)},
                            spec=spec, run=run, rt=rt, record=record, out=out, prior=resume_from)
        if run.options.action == Action.APPLY:
            rt.event(spec.id, "waiting_lock")
            lease = rt.leases.acquire(spec.state_key, run.run_id, rt.cfg.lock_timeout_s, lambda: rt.cancel.cancelled)
            if not lease.acquired:
                if rt.cancel.cancelled:
                    out.status = Status.CANCELLED
                    out.error = f"cancelled while waiting for the lease: {rt.cancel.reason}"
                else:
                    who = lease.holder.describe() if lease.holder else "another run"
                    out.error = (f"state {spec.state_key} is locked by {who}; gave up after "
                                 f"{lease.waited_s:.0f}s (lock_timeout_s = {rt.cfg.lock_timeout_s:g})")
                return _finish(spec, run, rt, record, out, log, start, held)
            held = True
            if resume_from is None:
                record.write(Phase.STARTED)
        run_pipeline(PIPELINES[run.options.action], ctx)
    except TfoError as e:
        out.status, out.error = Status.FAILED, redactor.redact(str(e))
    except rt.stop_exceptions as e:
        # terraform already got its SIGINT from the client on the way out
        out.status, out.error = Status.CANCELLED, f"stopped: {type(e).__name__} (task time limit)"
        out.keep_lease = False
    except OSError as e:  # disk full, permissions: the host's fault, said with the path it concerns
        where = f" ({e.filename})" if e.filename else ""
        out.status = Status.FAILED
        out.error = redactor.redact(f"workspace {directory(rt, run.run_id, spec)} on {rt.host}: "
                                    f"{e.strerror or e}{where}")
    except Exception as e:  # a bug must become a result, or the chord callback never runs
        out.status, out.error = Status.FAILED, redactor.redact(f"internal error: {type(e).__name__}: {e}")
    return _finish(spec, run, rt, record, out, log, start, held)


def _release_dead_lock(ctx: DeployContext, plan: CommandResult) -> bool:
    """Force-unlock Terraform's state lock only when its owner is proven dead.

    Proof: the lock was taken on this host by the lost attempt (its checkpoint says this host), and
    no process is left working in that attempt's directory. A lock held from another host is never
    broken: it waits for its owner, or for a person.
    """
    lock = parse_lock_error(plan.output)
    machine = host_name()
    # Worker names are "name@machine"; what matters is the machine the processes ran on.
    prior_host = ctx.prior.host if ctx.prior else ""
    if lock is None or lock.host != machine or prior_host.split("@")[-1] != machine:
        return False
    if processes_in(directory(ctx.rt, ctx.run.run_id, ctx.spec)):
        return False
    ctx.rt.event(ctx.spec.id, "force_unlock", f"lock {lock.lock_id} of a dead terraform ({lock.who})")
    return ForceUnlockStep(lock.lock_id).run(ctx).ok


def _finish(spec: DeploymentSpec, run: RunSpec, rt: Runtime, record: DeploymentRecord, out: Outcome,
            log: list[CommandResult], start: float, held: bool) -> DeploymentResult:
    duration = time.monotonic() - start
    audit_record = {
        **audit.base_metadata(run),
        "kind": "deploy",
        "deployment": spec.to_dict(),
        "host": rt.host,
        "terraform_bin": rt.cfg.terraform_bin,
        "terraform_version": rt.terraform_version,
        "status": out.status.value,
        "error": out.error,
        "plan": {"add": out.plan.add, "change": out.plan.change, "destroy": out.plan.destroy},
        "backup": {"key": out.backup_key, "source_version": out.backup_version},
        "applied": out.applied,
        "state_serial": out.state_serial,
        "previous_bundle_key": out.previous_bundle_key,
        "duration_s": round(duration, 3),
        "policy": [v.to_dict() for v in out.violations],
        "steps": [audit.command_record(r) for r in log],
    }
    audit_key, audit_error = audit.write(rt.store, keys.audit_deployment(run.run_id, run.started_at, spec.id),
                                         audit_record, rt.run_dir(run.run_id))
    error = out.error
    if audit_error:
        error = f"{error}; {audit_error}" if error else audit_error
    keep = held and out.keep_lease
    if keep:
        try:
            rt.leases.keep_for_rollback(spec.state_key, run.run_id)
        except TfoError as e:
            error = f"{error}; lease not handed over for rollback ({e})".lstrip("; ")
    if held and not keep:
        try:
            rt.leases.release(spec.state_key, run.run_id)
        except TfoError as e:  # the lease expires on its own; say so rather than lose the result
            error = f"{error}; lease not released ({e}); it expires after {rt.cfg.lease_ttl_s:g}s".lstrip("; ")
    drop_provider_binaries(rt, run.run_id, spec)
    result = DeploymentResult(
        spec=spec, action=run.options.action, status=out.status, plan=out.plan,
        backup_key=out.backup_key, audit_key=audit_key, plan_text=out.plan_text, error=error,
        duration_s=duration, host=rt.host, applied=out.applied, state_serial=out.state_serial,
        previous_bundle_key=out.previous_bundle_key, lease_held=keep, violations=out.violations,
    )
    try:
        record.finish(result)
    except TfoError as e:
        result = replace(result, error=f"{result.error}; {UNRECORDED}: {e}".lstrip("; "))
    rt.event(spec.id, out.status.value, error.splitlines()[0] if error else "")
    return result
