"""deploy(spec): one deployment from bundle to result. Never raises for a Terraform failure.

materialize directory -> lease (apply) -> init -> plan -> show -> backup -> apply -> audit.
A failed apply keeps its lease for the rollback that finalize runs; every other path releases it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator import audit
from orchestrator.bundle import Workspace, extract_bundle, fetch_bundle
from orchestrator.errors import StateBackupError, TfoError
from orchestrator.models import Action, DeploymentResult, DeploymentSpec, PlanSummary, RunSpec, Status
from orchestrator.procs import processes_in, wait_until_idle
from orchestrator.redaction import Redactor
from orchestrator.runtime import Runtime
from orchestrator.steps import (
    ApplyStep,
    ForceUnlockStep,
    InitStep,
    PlanStep,
    ShowPlanStep,
    StepContext,
    parse_lock_error,
)
from orchestrator.store.base import Store
from orchestrator.terraform import CommandResult, CommandStatus

ERROR_TAIL_LINES = 40


def redactor_for(spec: DeploymentSpec) -> Redactor:
    r = Redactor()
    r.add_sensitive_variables(spec.variables, spec.sensitive_variables)
    return r


def parse_state(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        state = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def state_serial(store: Store, state_key: str) -> int | None:
    state = parse_state(store.read_state(state_key))
    serial = state.get("serial") if state else None
    return serial if isinstance(serial, int) else None


def state_addresses(data: bytes | None) -> set[str]:
    state = parse_state(data)
    out: set[str] = set()
    for res in (state or {}).get("resources", []):
        prefix = f"{res['module']}." if res.get("module") else ""
        kind = "data." if res.get("mode") == "data" else ""
        for inst in res.get("instances", []):
            key = inst.get("index_key")
            index = "" if key is None else (f"[{key}]" if isinstance(key, int) else f'["{key}"]')
            out.add(f"{prefix}{kind}{res['type']}.{res['name']}{index}")
    return out


def last_good_key(spec: DeploymentSpec) -> str:
    return f"last-good/{spec.id}.json"


def read_last_good(store: Store, spec: DeploymentSpec) -> str:
    try:
        return str(store.get_json(last_good_key(spec)).get("bundle_key", ""))
    except KeyError:
        return ""


def write_last_good(store: Store, spec: DeploymentSpec, bundle_key: str, run_id: str) -> None:
    if bundle_key:
        store.put_json(last_good_key(spec), {"bundle_key": bundle_key, "run_id": run_id,
                                             "deployment": spec.id, "at": time.time()})
    else:
        store.delete(last_good_key(spec))


def checkpoint_key(run_id: str, spec: DeploymentSpec, stage: str = "") -> str:
    """The deployment's checkpoint in a run; `stage` names another one (the rollback's)."""
    return f"runs/{run_id}/deployments/{spec.slug}{'.' + stage if stage else ''}.json"


def read_checkpoint(rt: Runtime, run: RunSpec, spec: DeploymentSpec, stage: str = "") -> dict[str, Any] | None:
    """Where an earlier attempt of this deployment in this run got to (a redelivered task reads it)."""
    try:
        data = rt.store.get_json(checkpoint_key(run.run_id, spec, stage))
    except KeyError:
        return None
    return data if isinstance(data, dict) else None


def write_checkpoint(rt: Runtime, run: RunSpec, spec: DeploymentSpec, phase: str, stage: str = "",
                     **data: Any) -> None:
    # Encrypted: a finished result carries the deployment's variables.
    rt.store.put_json(checkpoint_key(run.run_id, spec, stage),
                      {"phase": phase, "host": rt.host, "pid": os.getpid(), "at": time.time(), **data}, encrypt=True)


def prepare_workspace(rt: Runtime, run: RunSpec, spec: DeploymentSpec, bundle_key: str,
                      suffix: str = "") -> Workspace:
    """A fresh per-deployment directory from the bundle (modules, var files, referenced files) with the
    store's backend settings beside the root module."""
    # Owner-only: a workspace holds tfvars and a plan file, both with secrets in them.
    rt.cfg.workdir_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    rt.run_dir(run.run_id).mkdir(mode=0o700, exist_ok=True)
    dest = rt.run_dir(run.run_id) / f"{spec.slug}{suffix}"
    if dest.exists():
        shutil.rmtree(dest)  # a retried deployment starts from its bundle, never from leftovers
    ws = extract_bundle(fetch_bundle(rt.store, bundle_key), dest)
    for name, content in rt.store.backend_files(spec.state_key).items():
        (ws.cwd / name).write_text(content)
    return ws


def step_context(rt: Runtime, ws: Workspace, spec: DeploymentSpec, run_id: str) -> StepContext:
    backend = {**rt.store.backend_config(spec.state_key, spec.region), **rt.cfg.backend_config}
    env = deployment_env(spec, ws.root, rt.cfg.resolve(rt.cfg.plugin_cache_dir) if rt.cfg.plugin_cache_dir else None)
    creds = rt.account_credentials(spec.account, run_id)
    if creds is not None:
        # The account's role serves terraform's backend and providers alike.
        env.update(creds.env())
    return StepContext(workdir=ws.cwd, client=rt.client, cancel=rt.cancel, timeout_s=rt.cfg.terraform_timeout_s,
                       lock_timeout_s=min(rt.cfg.lock_timeout_s, 600), backend_config=backend, env=env,
                       var_files=ws.var_files)


def deployment_env(spec: DeploymentSpec, workdir: Path, plugin_cache: Path | None = None) -> dict[str, str]:
    # TF_VAR_* for variables a module does not declare are ignored, so every module may opt in.
    cache = {"TF_PLUGIN_CACHE_DIR": str(plugin_cache)} if plugin_cache else {}
    return {
        **cache,
        "TF_DATA_DIR": str(workdir / ".terraform"),
        "TF_VAR_tfo_deployment_id": spec.id,
        "TF_VAR_tfo_service": spec.service,
        "TF_VAR_tfo_account": spec.account,
        "TF_VAR_tfo_region": spec.region,
        "TF_VAR_tfo_project": spec.project,
    }


def failure_text(result: CommandResult, redactor: Redactor) -> str:
    """A short, redacted explanation of a failed step: its Error blocks, else the tail of its output."""
    lines = result.output.strip().splitlines()
    errors = [i for i, ln in enumerate(lines) if re.match(r"^\s*(│\s*)?Error: ", ln)]
    picked = lines[errors[0]:] if errors else lines
    tail = "\n".join(picked[-ERROR_TAIL_LINES:])
    what = {CommandStatus.TIMEOUT: "timed out", CommandStatus.CANCELLED: "was cancelled"}.get(
        result.status, f"failed (exit {result.exit_code})")
    return redactor.redact(f"terraform {result.step} {what}: {tail}".strip())


# In a result's error when its "done" checkpoint could not be written: the store does not have it.
UNRECORDED = "checkpoint not recorded"


@dataclass
class _Outcome:
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


def deploy(spec: DeploymentSpec, run: RunSpec, rt: Runtime) -> DeploymentResult:
    start = time.monotonic()
    redactor = redactor_for(spec)
    out = _Outcome()
    log: list[CommandResult] = []
    held = False
    try:
        prior = read_checkpoint(rt, run, spec)
        if prior and prior.get("phase") == "done" and isinstance(prior.get("result"), dict):
            # A redelivered task whose first attempt finished: report, never run again.
            rt.event(spec.id, "recorded", "an earlier attempt finished this deployment")
            return DeploymentResult.from_dict(prior["result"])
        if rt.cancel.cancelled:
            out.status, out.error = Status.CANCELLED, f"not started: {rt.cancel.reason}"
            return _finish(spec, run, rt, out, log, start, held)
        rt.event(spec.id, "preparing")
        resume_from = prior if prior is not None and prior.get("phase") in ("backed_up", "applying") else None
        resuming = resume_from is not None
        if resuming:
            # The lost attempt's terraform may still be running in its directory on this host:
            # let it finish (it writes state and releases its lock) before touching the state.
            wait_until_idle(rt.run_dir(run.run_id) / spec.slug, rt.cfg.lock_timeout_s)
        ws = prepare_workspace(rt, run, spec, spec.bundle_key, suffix=".resume" if resuming else "")
        ctx = step_context(rt, ws, spec, run.run_id)
        creds = rt.account_credentials(spec.account, run.run_id)
        if creds is not None:
            redactor.add(creds.secrets())
        ctx.log = log
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
                return _finish(spec, run, rt, out, log, start, held)
            held = True
            if not resuming:
                write_checkpoint(rt, run, spec, "started")
        _run_steps(spec, run, rt, ctx, redactor, out, resume_from)
    except TfoError as e:
        out.status, out.error = Status.FAILED, redactor.redact(str(e))
    except rt.stop_exceptions as e:
        # terraform already got its SIGINT from the client on the way out
        out.status, out.error = Status.CANCELLED, f"stopped: {type(e).__name__} (task time limit)"
        out.keep_lease = False
    except OSError as e:  # disk full, permissions: the host's fault, said with the path it concerns
        where = f" ({e.filename})" if e.filename else ""
        out.status = Status.FAILED
        out.error = redactor.redact(f"workspace {rt.run_dir(run.run_id) / spec.slug} on {rt.host}: "
                                    f"{e.strerror or e}{where}")
    except Exception as e:  # a bug must become a result, or the chord callback never runs
        out.status, out.error = Status.FAILED, redactor.redact(f"internal error: {type(e).__name__}: {e}")
    return _finish(spec, run, rt, out, log, start, held)


def _run_steps(spec: DeploymentSpec, run: RunSpec, rt: Runtime, ctx: StepContext, redactor: Redactor,
               out: _Outcome, prior: dict[str, Any] | None = None) -> None:
    def stopped(r: CommandResult) -> bool:
        if r.ok:
            return False
        out.status = Status.CANCELLED if r.status in (CommandStatus.CANCELLED, CommandStatus.TIMEOUT) else Status.FAILED
        out.error = failure_text(r, redactor)
        return True

    rt.event(spec.id, "init")
    if stopped(InitStep().run(ctx)):
        return
    rt.event(spec.id, "plan")
    plan = PlanStep().run(ctx)
    if prior is not None and not plan.ok and _release_dead_lock(spec, run, rt, ctx, plan, prior):
        plan = PlanStep().run(ctx)
    out.plan_text = redactor.redact(plan.output)
    if stopped(plan):
        return
    show, summary = ShowPlanStep().run(ctx, plan)
    if stopped(show) or summary is None:
        return
    out.plan = summary
    has_changes = plan.exit_code == 2
    if prior is not None:
        out.backup_key = str(prior.get("backup_key", ""))
        out.backup_version = str(prior.get("backup_version", ""))
        out.previous_bundle_key = str(prior.get("previous_bundle_key", ""))
        if prior.get("phase") == "applying":
            _after_lost_apply(spec, run, rt, out, has_changes, prior)
            return
    if run.options.action == Action.PLAN or not has_changes:
        out.status = Status.SUCCEEDED if has_changes else Status.NO_CHANGES
        if run.options.action == Action.APPLY:
            # Infrastructure already matches this configuration: it is the last good one.
            write_last_good(rt.store, spec, spec.bundle_key, run.run_id)
        return

    if prior is None:  # a resumed attempt reuses the backup its lost predecessor took
        out.previous_bundle_key = read_last_good(rt.store, spec)
        rt.event(spec.id, "backup")
        try:
            backup = rt.state_store(spec.account, run.run_id).backup_state(
                spec.state_key, {"run-id": run.run_id, "deployment": spec.id})
        except StateBackupError as e:
            out.status, out.error = Status.FAILED, redactor.redact(f"{e}; the apply was not run")
            return
        out.backup_key, out.backup_version = backup.key, backup.source_version
        write_checkpoint(rt, run, spec, "backed_up", backup_key=out.backup_key, backup_version=out.backup_version,
                         previous_bundle_key=out.previous_bundle_key)
    if rt.cancel.cancelled:
        out.status, out.error = Status.CANCELLED, f"cancelled before apply: {rt.cancel.reason}"
        return
    rt.event(spec.id, "apply")
    out.applied = True
    write_checkpoint(rt, run, spec, "applying", backup_key=out.backup_key, backup_version=out.backup_version,
                     previous_bundle_key=out.previous_bundle_key)
    apply = ApplyStep().run(ctx)
    out.state_serial = state_serial(rt.state_store(spec.account, run.run_id), spec.state_key)
    if apply.ok:
        out.status = Status.SUCCEEDED
        write_last_good(rt.store, spec, spec.bundle_key, run.run_id)
        return
    stopped(apply)
    # A failed apply changed real infrastructure: keep the lease so nobody else touches this state
    # before finalize has rolled it back.
    out.keep_lease = out.status == Status.FAILED


def _release_dead_lock(spec: DeploymentSpec, run: RunSpec, rt: Runtime, ctx: StepContext, plan: CommandResult,
                       prior: dict[str, Any]) -> bool:
    """Force-unlock Terraform's state lock only when its owner is proven dead.

    Proof: the lock was taken on this host by the lost attempt (its checkpoint says this host), and
    no process is left working in that attempt's directory. A lock held from another host is never
    broken: it waits for its owner, or for a person.
    """
    lock = parse_lock_error(plan.output)
    machine = socket.gethostname()
    # Worker names are "name@machine"; what matters is the machine the processes ran on.
    if lock is None or lock.host != machine or str(prior.get("host", "")).split("@")[-1] != machine:
        return False
    if processes_in(rt.run_dir(run.run_id) / spec.slug):
        return False
    rt.event(spec.id, "force_unlock", f"lock {lock.lock_id} of a dead terraform ({lock.who})")
    return ForceUnlockStep(lock.lock_id).run(ctx).ok


def _after_lost_apply(spec: DeploymentSpec, run: RunSpec, rt: Runtime, out: _Outcome, has_changes: bool,
                      prior: dict[str, Any]) -> None:
    """An earlier attempt started `apply` and was lost. Never apply again: resume or report."""
    out.applied = True
    out.state_serial = state_serial(rt.state_store(spec.account, run.run_id), spec.state_key)
    who = f"{prior.get('host', '?')} (pid {prior.get('pid', '?')})"
    if not has_changes:
        # The lost apply completed: infrastructure already matches this configuration.
        out.status = Status.SUCCEEDED
        out.error = f"resumed: the apply started by a lost attempt on {who} had completed"
        write_last_good(rt.store, spec, spec.bundle_key, run.run_id)
        return
    out.status = Status.FAILED
    out.error = (f"the attempt on {who} was lost during apply and left infrastructure partly changed; "
                 "not applying twice, rolling back instead")
    out.keep_lease = True


def _finish(spec: DeploymentSpec, run: RunSpec, rt: Runtime, out: _Outcome, log: list[CommandResult],
            start: float, held: bool) -> DeploymentResult:
    duration = time.monotonic() - start
    record = {
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
        "steps": [audit.command_record(r) for r in log],
    }
    audit_key, audit_error = audit.write(rt.store, audit.deployment_key(run, spec.slug), record,
                                         rt.run_dir(run.run_id))
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
    for suffix in ("", ".resume"):
        # Provider binaries are large and re-fetched on demand; plan, tfvars, module and logs stay as the record.
        shutil.rmtree(rt.run_dir(run.run_id) / f"{spec.slug}{suffix}" / ".terraform", ignore_errors=True)
    result = DeploymentResult(
        spec=spec, action=run.options.action.value, status=out.status, plan=out.plan,
        backup_key=out.backup_key, audit_key=audit_key, plan_text=out.plan_text, error=error,
        duration_s=duration, host=rt.host, applied=out.applied, state_serial=out.state_serial,
        previous_bundle_key=out.previous_bundle_key, lease_held=keep,
    )
    try:
        write_checkpoint(rt, run, spec, "done", result=result.to_dict())
    except TfoError as e:
        result = replace(result, error=f"{result.error}; {UNRECORDED}: {e}".lstrip("; "))
    rt.event(spec.id, out.status.value, error.splitlines()[0] if error else "")
    return result
