"""deploy(spec): one deployment from bundle to result. Never raises for a Terraform failure.

materialize directory -> lease (apply) -> the pipeline (a list of steps) -> audit -> result.
A failed apply keeps its lease for the rollback that finalize runs; every other path releases it.
To add a step (a policy gate, say), write a Step on DeployContext and put it in PIPELINES.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from fnmatch import fnmatchcase
from typing import Any

from orchestrator import audit, dependencies, keys
from orchestrator.errors import StateBackupError, TfoError
from orchestrator.models import (
    Action,
    DeploymentResult,
    DeploymentSpec,
    DriftedResource,
    PlanSummary,
    RunOptions,
    RunSpec,
    Status,
    Violation,
)
from orchestrator.policy import changed_resources, custom_rules, evaluate, sensitive_values
from orchestrator.procs import host_name, processes_in, wait_until_idle
from orchestrator.record import UNRECORDED, Checkpoint, DeploymentRecord, Phase
from orchestrator.runtime import Runtime
from orchestrator.state import parse_state, state_serial
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
    drift: tuple[DriftedResource, ...] = ()
    severity: str = ""
    lease_wait_s: float = 0.0


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
        plan, shown = plan_document(ctx, self.name)
        if plan is None or shown.command is None:
            return shown
        show = shown.command
        # The audit keeps what was judged, not the plan document: it holds every value in the clear
        # (prior state, before and after), which `tfo audit show` could not mask.
        judged = [{"address": a, "type": t, "actions": acts} for a, t, acts in changed_resources(plan)]
        ctx.log[-1] = replace(show, output=json.dumps({"resource_changes": judged}))
        violations = evaluate(plan, ctx.spec, policy, ctx.run.options)
        violations += custom_rules(show.output, plan, ctx.spec, policy, ctx.workdir)
        # A rule's words may quote the plan's values, the sensitive ones included (a generated password in
        # the state): shown only redacted, like everything else.
        ctx.redactor.add(sorted(sensitive_values(plan)))
        violations = tuple(replace(v, message=ctx.redactor.redact(v.message)) for v in violations)
        if not violations:
            return StepResult(self.name, StepStatus.OK, command=show)
        ctx.out.violations = violations
        ctx.out.status = Status.BLOCKED
        ctx.out.error = ctx.redactor.redact("refused by policy: " + "; ".join(map(str, violations)))
        return StepResult(self.name, StepStatus.DONE, ctx.out.error, show)


def plan_document(ctx: StepContext, step: str, plan_file: str = PLAN_FILE) -> tuple[dict[str, Any] | None,
                                                                                    StepResult]:
    """`terraform show -json` of a plan file: the document and an OK result, or None and the failure."""
    show = ctx.execute(step, ["show", "-json", "-no-color", plan_file])
    if not show.ok:
        return None, ctx.result(show)
    try:
        document = json.loads(show.output)
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return None, StepResult(step, StepStatus.FAILED, "terraform show -json printed no plan document", show)
    return document, StepResult(step, StepStatus.OK, command=show)


def planned_against(plan_file: bytes) -> tuple[int, str] | None:
    """(serial, lineage) of the state a plan was made against, from the plan file's own copy of it
    (`tfstate` in terraform's zip; serial 0 and no lineage before the first apply). None: unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(plan_file)) as z:
            state = json.loads(z.read("tfstate"))
        serial, lineage = state.get("serial"), state.get("lineage", "")
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError, OSError):
        return None
    return (serial, lineage) if isinstance(serial, int) and isinstance(lineage, str) else None


def current_state_version(ctx: DeployContext) -> tuple[int, str]:
    state = parse_state(ctx.rt.state_store(ctx.spec.account, ctx.run.run_id).read_state(ctx.spec.state_key))
    if state is None:
        return (0, "")
    serial, lineage = state.get("serial"), state.get("lineage")
    return (serial if isinstance(serial, int) else -1, lineage if isinstance(lineage, str) else "")


@dataclass(frozen=True)
class SavePlan:
    """A plan run keeps each deployment's plan file in the store (encrypted), with what it was made
    against (the bundle, the state's serial and lineage, when), for `tfo apply --from-plan`."""

    name: str = "save-plan"

    def run(self, ctx: DeployContext) -> StepResult:
        if ctx.run.options.action != Action.PLAN:
            return StepResult(self.name, StepStatus.OK)
        spec, store = ctx.spec, ctx.rt.store
        try:
            data = (ctx.workdir / PLAN_FILE).read_bytes()
        except OSError as e:
            return StepResult(self.name, StepStatus.FAILED, f"the plan file cannot be read to be saved: {e.strerror}")
        against = planned_against(data)
        summary = ctx.plan_summary or PlanSummary()
        try:
            store.put(keys.saved_plan(ctx.run.run_id, spec.id), data)
            store.put_json(keys.saved_plan(ctx.run.run_id, spec.id, "json"), {
                "run_id": ctx.run.run_id, "deployment": spec.id, "bundle_key": spec.bundle_key,
                "state_key": spec.state_key, "serial": against[0] if against else None,
                "lineage": against[1] if against else None, "created_at": time.time(),
                "has_changes": ctx.has_changes, "plan": asdict(summary), "terraform_version": ctx.rt.terraform_version,
                # what the upstreams' outputs were: the plan holds them as this deployment's input
                "dependency_outputs": ctx.upstream_outputs,
            })
        except TfoError as e:
            return StepResult(self.name, StepStatus.FAILED, ctx.redactor.redact(f"the plan could not be saved: {e}"))
        return StepResult(self.name, StepStatus.OK)


@dataclass(frozen=True)
class LoadSavedPlan:
    """`--from-plan`: the saved plan, if it still applies, in place of a new plan. Stale (the state moved,
    older than plan_max_age, applied already, made from another bundle, an upstream's outputs moved) ends
    the deployment `stale`."""

    name: str = "saved-plan"

    def run(self, ctx: DeployContext) -> StepResult:
        if ctx.prior is not None and ctx.prior.phase == Phase.APPLYING:
            # A lost attempt started applying this plan: a fresh plan of the same bundle shows whether
            # it completed (AfterLostApply decides); the saved one no longer matches the state.
            return PlanChanges().run(ctx)
        source, spec, store = ctx.run.options.from_plan, ctx.spec, ctx.rt.store
        try:
            meta = store.get_json(keys.saved_plan(source, spec.id, "json"))
        except KeyError:
            return StepResult(self.name, StepStatus.FAILED, f"run {source} saved no plan for {spec.id}")
        why = self.stale(ctx, meta)
        if why:
            ctx.out.status = Status.STALE
            ctx.out.error = f"stale: {why}; plan again (`tfo plan`) and apply that plan"
            return StepResult(self.name, StepStatus.DONE, ctx.out.error)
        try:
            data = store.get(keys.saved_plan(source, spec.id))
        except KeyError:
            return StepResult(self.name, StepStatus.FAILED, f"run {source}'s plan file for {spec.id} is gone")
        plan_file = ctx.workdir / PLAN_FILE
        with open(os.open(plan_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
        show = ctx.execute(self.name, ["show", "-no-color", PLAN_FILE])
        if not show.ok:
            return ctx.result(show)
        ctx.out.plan_text = ctx.redactor.redact(show.output)
        ctx.plan_summary = PlanSummary(**meta.get("plan", {}))
        ctx.saved_changes = bool(meta.get("has_changes"))
        return StepResult(self.name, StepStatus.OK, command=show)

    @staticmethod
    def stale(ctx: DeployContext, meta: dict[str, Any]) -> str:
        source = ctx.run.options.from_plan
        if meta.get("bundle_key") != ctx.spec.bundle_key:
            return f"run {source}'s plan was made from another bundle than this deployment's"
        age = time.time() - float(meta.get("created_at", 0))
        limit = ctx.run.policy.plan_max_age_s
        if age > limit:
            return (f"the plan is {age / 3600:.1f} h old; [tfo.policy] plan_max_age is "
                    f"{ctx.run.policy.plan_max_age}")
        applied = _applied_by(ctx)
        if applied and applied.get("run_id") != ctx.run.run_id:
            return f"the plan was applied already, by run {applied.get('run_id')} ({applied.get('actor', '?')})"
        if meta.get("serial") is None:
            return "the plan file does not say which state it was made against"
        planned = (meta["serial"], meta.get("lineage") or "")
        now = current_state_version(ctx)
        if now[1] != planned[1]:
            return "the state was replaced since the plan (another lineage)"
        if now[0] != planned[0]:
            return f"the state moved since the plan (serial {planned[0]} then, {now[0]} now)"
        if ctx.spec.depends_on and "dependency_outputs" not in meta:
            return "the plan was saved by a tfo that did not record its upstreams' outputs: plan again"
        moved = dependencies.moved_outputs(meta.get("dependency_outputs") or {}, ctx.upstream_outputs)
        if moved:
            # terraform would apply the plan with the outputs it was made with, not the upstreams' present ones
            return (f"the outputs of {', '.join(moved)}, which it depends on, changed since the plan"
                    " (the plan holds the old values)")
        return ""


def _applied_by(ctx: DeployContext) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = ctx.rt.store.get_json(keys.saved_plan(ctx.run.options.from_plan, ctx.spec.id,
                                                                    "applied.json"))
    except KeyError:
        return None
    return found


@dataclass(frozen=True)
class ClaimSavedPlan:
    """A saved plan is applied once: checked again under the lease, just before the backup. The apply
    that uses it records itself when it starts applying (ApplyChanges), so a refused backup or a stop
    before the apply leaves the plan usable."""

    name: str = "claim-plan"

    def run(self, ctx: DeployContext) -> StepResult:
        applied = _applied_by(ctx)
        if applied and applied.get("run_id") != ctx.run.run_id:
            ctx.out.status = Status.STALE
            ctx.out.error = (f"stale: the plan was applied already, by run {applied.get('run_id')}; "
                             "plan again (`tfo plan`) and apply that plan")
            return StepResult(self.name, StepStatus.DONE, ctx.out.error)
        return StepResult(self.name, StepStatus.OK)


def _mark_applied(ctx: DeployContext) -> None:
    if ctx.run.options.from_plan:
        ctx.rt.store.put_json(keys.saved_plan(ctx.run.options.from_plan, ctx.spec.id, "applied.json"),
                              {"run_id": ctx.run.run_id, "actor": ctx.run.actor, "at": time.time()})


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
        _mark_applied(ctx)
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


DRIFT_PLAN = "drift.tfplan"


def _changed_attributes(before: Any, after: Any) -> tuple[str, ...]:
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ()
    return tuple(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))


def outside_changes(plan: dict[str, Any]) -> list[DriftedResource]:
    """What a refresh-only plan found changed outside Terraform (`resource_drift`): deleted or updated,
    with the names of the attributes that differ."""
    found = []
    for rc in plan.get("resource_drift") or []:
        if rc.get("mode", "managed") != "managed":
            continue
        change = rc.get("change") or {}
        actions = list(change.get("actions") or [])
        if "delete" in actions:
            found.append(DriftedResource(str(rc.get("address", "?")), str(rc.get("type", "?")), "deleted"))
        elif "update" in actions:
            found.append(DriftedResource(str(rc.get("address", "?")), str(rc.get("type", "?")), "updated",
                                         _changed_attributes(change.get("before"), change.get("after"))))
    return found


@dataclass(frozen=True)
class OutsideChanges:
    """`plan -refresh-only` of the last applied bundle: what changed outside Terraform. Never applied, so
    the state is not written."""

    name: str = "drift"

    def run(self, ctx: DeployContext) -> StepResult:
        args = ["plan", "-refresh-only", "-input=false", "-no-color", ctx.lock_timeout, "-detailed-exitcode",
                f"-out={DRIFT_PLAN}", *(f"-var-file={v}" for v in ctx.var_files)]
        plan = ctx.execute(self.name, args, ok=(0, 2))
        if not plan.ok:
            return ctx.result(plan)
        ctx.out.plan_text = ctx.redactor.redact(plan.output)
        if plan.exit_code != 2:
            return StepResult(self.name, StepStatus.OK, command=plan)
        document, shown = plan_document(ctx, self.name, DRIFT_PLAN)
        if document is None or shown.command is None:
            return shown
        show = shown.command
        found = outside_changes(document)
        # The audit keeps what was found (names), not the plan document, which holds values in the clear.
        ctx.log[-1] = replace(show, output=json.dumps({"resource_drift": [d.to_dict() for d in found]}))
        ctx.out.drift = tuple(found)
        return StepResult(self.name, StepStatus.OK, command=show)


@dataclass(frozen=True)
class NotConverged:
    """A normal plan of the same bundle: what an apply would still do, beyond what drifted outside."""

    name: str = "plan"

    def run(self, ctx: DeployContext) -> StepResult:
        plan = PlanStep().run(ctx)
        if not plan.ok or not ctx.has_changes:
            return plan
        document, shown = plan_document(ctx, "show")
        if document is None or shown.command is None:
            return shown
        show = shown.command
        known = {d.address for d in ctx.out.drift}
        pending = [DriftedResource(address, kind, "pending", actions=tuple(actions))
                   for address, kind, actions in changed_resources(document) if address not in known]
        ctx.log[-1] = replace(show, output=json.dumps({"pending": [d.to_dict() for d in pending]}))
        ctx.out.drift += tuple(pending)
        if ctx.plan is not None and ctx.plan.output:
            ctx.out.plan_text = f"{ctx.out.plan_text}\n{ctx.redactor.redact(ctx.plan.output)}".strip()
        return StepResult(self.name, StepStatus.OK, command=show)


@dataclass(frozen=True)
class DriftVerdict:
    """in_sync or drifted, and how bad: high when something was deleted outside Terraform or its type is
    one of [tfo.drift] critical_types."""

    name: str = "verdict"

    def run(self, ctx: DeployContext) -> StepResult:
        drift = ctx.out.drift
        ctx.out.status = Status.DRIFTED if drift else Status.IN_SYNC
        critical = ctx.run.drift.critical_types
        high = any(d.change == "deleted" or any(fnmatchcase(d.type, p) for p in critical) for d in drift)
        ctx.out.severity = ("high" if high else "low") if drift else ""
        if drift:
            ctx.out.error = f"drifted ({ctx.out.severity}): " + "; ".join(map(str, drift[:20])) + (
                f"; and {len(drift) - 20} more" if len(drift) > 20 else "")
        return StepResult(self.name, StepStatus.DONE)


PIPELINES: dict[Action, tuple[Step[DeployContext], ...]] = {
    Action.PLAN: (InitStep(), PlanChanges(), ShowPlanStep(), SavePlan(), PolicyGate(), ChangesGate()),
    Action.APPLY: (InitStep(), PlanChanges(), ShowPlanStep(), AfterLostApply(), PolicyGate(), ChangesGate(),
                   BackupStep(), ApplyChanges()),
    # The last applied bundle (the run prepared it), planned twice; nothing is applied or locked by tfo.
    Action.DRIFT: (InitStep(), OutsideChanges(), NotConverged(), DriftVerdict()),
}
# `tfo apply --from-plan`: the reviewed plan, not a new one; judged by the policy again.
FROM_PLAN: tuple[Step[DeployContext], ...] = (InitStep(), LoadSavedPlan(), ShowPlanStep(), AfterLostApply(),
                                              PolicyGate(), ChangesGate(), ClaimSavedPlan(), BackupStep(),
                                              ApplyChanges())


def pipeline(options: RunOptions) -> tuple[Step[DeployContext], ...]:
    return FROM_PLAN if options.from_plan else PIPELINES[options.action]
# The steps whose start is shown as the deployment's phase (progress, Flower); policy, backup and apply
# announce themselves, once they know they will run.
ANNOUNCED = ("init", "plan", "drift")


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
        if run.options.action == Action.DRIFT and not spec.bundle_key:
            out.status, out.error = Status.UNMANAGED, "never applied by tfo: no configuration to compare with"
            return _finish(spec, run, rt, record, out, log, start, held)
        rt.event(spec.id, "preparing")
        if run.options.action == Action.APPLY:
            # The lease before anything touches the deployment's directory: a second copy of this deployment
            # (sent twice) waits here for the first one, then reports its result instead of running again.
            rt.event(spec.id, "waiting_lock")
            lease = rt.leases.acquire(spec.state_key, run.run_id, rt.cfg.lock_timeout_s, lambda: rt.cancel.cancelled)
            waited = lease.waited_s
            while not lease.acquired and not rt.cancel.cancelled and lease.holder and lease.holder.owner == run.run_id:
                # This run holds it, live: only another copy of this deployment can (a task sent twice). Its
                # apply may outlast lock_timeout_s; giving up would record a failure over its result.
                rt.event(spec.id, "waiting_lock", "another copy of this deployment is at work")
                lease = rt.leases.acquire(spec.state_key, run.run_id, rt.cfg.lock_timeout_s,
                                          lambda: rt.cancel.cancelled)
                waited += lease.waited_s
            out.lease_wait_s = waited
            if not lease.acquired:
                if rt.cancel.cancelled:
                    out.status = Status.CANCELLED
                    out.error = f"cancelled while waiting for the lease: {rt.cancel.reason}"
                else:
                    who = lease.holder.describe() if lease.holder else "another run"
                    out.error = (f"state {spec.state_key} is locked by {who}; gave up after "
                                 f"{waited:.0f}s (lock_timeout_s = {rt.cfg.lock_timeout_s:g})")
                return _finish(spec, run, rt, record, out, log, start, held)
            held = True
            prior = record.checkpoint()  # again, under the lease
            if prior is not None and (finished := prior.finished()) is not None:
                # ... and leaves the lease as the first one left it (kept for its rollback, or released).
                if finished.lease_held:
                    rt.leases.leave_to_rollback(spec.state_key, run.run_id)
                else:
                    rt.leases.release(spec.state_key, run.run_id)
                rt.event(spec.id, "recorded", "another copy of this deployment finished it")
                return finished
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
        if run.options.action == Action.APPLY and resume_from is None:
            record.write(Phase.STARTED)
        run_pipeline(pipeline(run.options), ctx)
        if run.options.action == Action.DRIFT and out.status == Status.FAILED:
            out.status = Status.ERROR  # detection could not run: said as drift reports say it
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
        "drift": [d.to_dict() for d in out.drift],
        "severity": out.severity,
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
        drift=out.drift, severity=out.severity, lease_wait_s=out.lease_wait_s,
    )
    try:
        record.finish(result)
    except TfoError as e:
        result = replace(result, error=f"{result.error}; {UNRECORDED}: {e}".lstrip("; "))
    rt.event(spec.id, out.status.value, error.splitlines()[0] if error else "")
    return result
