"""One way to start a run, for every producer (the CLI, the webhook, scheduled jobs): prepare, then execute.

prepare: the selected deployments' bundles are uploaded and the run is recorded (spec, ids, who, what);
execute: an Executor hands it over (local: a thread pool in this process; celery: a chord on the broker)
and follows it until it is finalized. Every executor finalizes and notifies the same way
(`finalize.conclude`), so a run reports back to GitHub whoever started it.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator import dependencies, git, keys, live, notify
from orchestrator.bundle import build_bundle, upload_bundle
from orchestrator.config import TfoConfig
from orchestrator.deploy import deploy
from orchestrator.errors import TfoError, UserError
from orchestrator.finalize import conclude
from orchestrator.models import (
    Action,
    DeploymentResult,
    DeploymentSpec,
    RollbackStrategy,
    RunOptions,
    RunResult,
    RunSpec,
    Status,
)
from orchestrator.modules import ModuleGraph
from orchestrator.procs import host_name
from orchestrator.record import DeploymentRecord, finished_status
from orchestrator.runtime import Runtime
from orchestrator.store.base import Store

StopAsked = Callable[[], bool]
log = logging.getLogger("tfo")


@dataclass(frozen=True)
class RunRequest:
    """What a producer asks for; everything else about the run is worked out by `prepare`."""

    action: Action
    rollback: RollbackStrategy = RollbackStrategy.REAPPLY
    atomic: bool = False
    allow_destroy: bool = False  # policy waivers (recorded in the audit)
    approved_by: tuple[str, ...] = ()
    actor: str = ""  # default: who runs this process (CI's actor variables first)
    git_sha: str = ""  # default: the repository's HEAD
    # Where to report back, e.g. {"github": {"repo": "o/r", "sha": "...", "pr": 12}}.
    notify: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""  # default: a new one
    # Apply the plans this plan run saved: the specs are its own (their bundles already in the store).
    from_plan: str = ""


class Executor(Protocol):
    name: str
    # Whether workers elsewhere read the run: then each deployment's spec is stored on its own.
    distributed: bool

    def submit(self, run: RunSpec) -> None:
        """Hand the run over. Returns once it is queued (celery) or at once (local: `follow` runs it)."""

    def follow(self, run: RunSpec, stop: StopAsked) -> RunResult | None:
        """The finalized run, or None when `stop()` said to stop following (the run goes on elsewhere)."""


def new_run_id(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def actor(cfg: TfoConfig) -> str:
    for var in ("TFO_ACTOR", "GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR"):
        if os.environ.get(var):
            return os.environ[var]
    email = git.user_email(cfg.repo_root)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user} <{email}>" if email else user


def prepare(cfg: TfoConfig, store: Store, specs: Sequence[DeploymentSpec], request: RunRequest, *,
            distributed: bool) -> RunSpec:
    """Upload one content-addressed bundle per deployment and record everything the run needs."""
    if request.action == Action.DRIFT:
        # Drift is judged against what was applied last, not the working tree: the last-good bundle
        # (none: never applied, the deployment is `unmanaged`).
        bundled = tuple(replace(s, bundle_key=DeploymentRecord(store, "", s).last_good()) for s in specs)
    elif request.from_plan:
        missing = [s.id for s in specs if not s.bundle_key or store.head(s.bundle_key) is None]
        if missing:
            raise UserError(f"run {request.from_plan}'s bundles are gone from the store for: {', '.join(missing)}; "
                            "plan again")
        bundled = tuple(specs)
    else:
        graph = ModuleGraph.for_config(cfg)  # each root module worked out once for the run
        bundled = tuple(replace(s, bundle_key=upload_bundle(store, build_bundle(cfg, s, graph))) for s in specs)
    now = datetime.now(UTC)
    run = RunSpec(
        run_id=request.run_id or new_run_id(now),
        options=RunOptions(request.action, request.rollback, request.atomic, request.allow_destroy,
                           request.approved_by, request.from_plan),
        deployments=bundled,
        started_at=now.isoformat(),
        actor=request.actor or actor(cfg),
        git_sha=request.git_sha or git.head_sha(cfg.repo_root),
        notify=dict(request.notify),
        policy=cfg.policy,
        drift=cfg.drift,
    )
    save_run_spec(store, run, per_deployment=distributed)
    return run


def start(cfg: TfoConfig, store: Store, specs: Sequence[DeploymentSpec], request: RunRequest,
          executor: Executor) -> RunSpec:
    """Prepare the run, say on its commit that it is pending, and hand it to the executor."""
    run = prepare(cfg, store, specs, request, distributed=executor.distributed)
    try:
        live.write_card(store, run, executor.name, host_name())  # watchers see the run from now on
    except TfoError as e:  # watching must never stop a run (its summary still comes at its end)
        log.warning("run %s: its card for the dashboard not written: %s", run.run_id, e)
    notify.post_pending(cfg, run)
    executor.submit(run)
    return run


# --- the run as recorded -------------------------------------------------------------------------
def save_run_spec(store: Store, run: RunSpec, per_deployment: bool = True, parallel: int = 8) -> None:
    """Workers read the run from here: task arguments carry ids only, never variables.

    The whole run (finalize, reconcile, `tfo runs show`), and for the deploy tasks the run without its
    deployments plus one object per deployment: each task reads what it runs, not every deployment's
    spec (N tasks reading the whole spec is quadratic in the run's size).
    """
    store.put_json(keys.run_spec(run.run_id), run.to_dict())
    if not per_deployment:  # a local run: one process reads the whole run once
        return
    store.put_json(keys.run_head(run.run_id), replace(run, deployments=()).to_dict())
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tfo-spec-upload") as pool:
        list(pool.map(lambda s: store.put_json(keys.deployment_spec(run.run_id, s.id), s.to_dict()),
                      run.deployments))


def load_run_spec(store: Store, run_id: str) -> RunSpec:
    return RunSpec.from_dict(store.get_json(keys.run_spec(run_id)))


def planned_deployments(store: Store, plan_run_id: str, ids: set[str] | None = None) -> RunSpec:
    """The plan run whose saved plans `tfo apply --from-plan` applies, with only the deployments in `ids`
    (None: all of them). The user's mistakes (no such run, not a plan run, a deployment it did not plan)
    are UserErrors."""
    if not keys.RUN_ID.fullmatch(plan_run_id):
        raise UserError(f"--from-plan {plan_run_id!r}: not a run id (YYYYMMDDTHHMMSSZ-xxxxxx)")
    try:
        planned = load_run_spec(store, plan_run_id)
    except KeyError:
        raise UserError(f"--from-plan {plan_run_id}: no such run in {store.describe()}") from None
    if planned.options.action != Action.PLAN:
        raise UserError(f"--from-plan {plan_run_id}: that run was an {planned.options.action.value}, not a plan")
    try:
        results = {str(r["spec"]["id"]): str(r["status"]) for r in store.get_json(keys.run_results(plan_run_id))}
    except KeyError:
        raise UserError(f"--from-plan {plan_run_id}: that run has not finished (see `tfo runs show "
                        f"{plan_run_id}`): its verdicts are not known yet") from None
    if ids is not None:
        unplanned = sorted(ids - {s.id for s in planned.deployments})
        if unplanned:
            raise UserError(f"--from-plan {plan_run_id}: not planned by that run: {', '.join(unplanned)}")
        planned = replace(planned, deployments=tuple(s for s in planned.deployments if s.id in ids))
    unusable = sorted(f"{s.id} ({results.get(s.id, 'no result')})" for s in planned.deployments
                      if results.get(s.id) not in ("succeeded", "no_changes", "blocked"))
    if unusable:
        raise UserError(f"--from-plan {plan_run_id}: these were not planned successfully: {', '.join(unusable)}; "
                        "fix them and plan again, or leave them out with selectors")
    return planned


def load_deployment(store: Store, run_id: str, deployment_id: str) -> tuple[RunSpec, DeploymentSpec]:
    """The run (without its deployments) and one deployment's spec: what a deploy task needs."""
    try:
        head = RunSpec.from_dict(store.get_json(keys.run_head(run_id)))
        spec = DeploymentSpec.from_dict(store.get_json(keys.deployment_spec(run_id, deployment_id)))
    except KeyError:  # a run prepared before these objects existed
        run = load_run_spec(store, run_id)
        return run, next(s for s in run.deployments if s.id == deployment_id)
    return head, spec


# --- the embedded executor -----------------------------------------------------------------------
class LocalExecutor:
    """Deployments in a thread pool of this process, then finalize (and notify) in-process."""

    name = "local"
    distributed = False

    def __init__(self, rt: Runtime, max_workers: int) -> None:
        self.rt = rt
        self.max_workers = max(1, max_workers)

    def submit(self, run: RunSpec) -> None:
        return None  # nothing to hand over: the run lives in this process

    def follow(self, run: RunSpec, stop: StopAsked) -> RunResult:
        # `stop` is the runtime's cancel token here: a stopped local run still finishes (cancelled).
        recorder = live.ProgressRecorder(self.rt.store, run.run_id, self.rt.host)
        rt = replace(self.rt, on_event=live.tee(self.rt.on_event, recorder))  # the terminal and the store
        try:
            for spec in run.deployments:
                rt.event(spec.id, "queued")
            if ordered(run):
                results = dependencies.run_in_order(run.deployments, lambda s: deploy(s, run, rt),
                                                    lambda s, why: skipped(s, run, rt, why), self.max_workers)
            else:
                with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="tfo-deploy") as pool:
                    results = list(pool.map(lambda s: deploy(s, run, rt), run.deployments))
            return conclude(run, results, rt)
        finally:
            recorder.close()


ORDERED_ACTIONS = (Action.PLAN, Action.APPLY)


def ordered(run: RunSpec) -> bool:
    """Whether the run follows its deployments' dependencies: plans and applies do (an upstream's outputs are a
    downstream's input); drift detection reads only and runs everything at once."""
    if run.options.action not in ORDERED_ACTIONS:
        return False
    ids = {s.id for s in run.deployments}
    return any(d in ids for s in run.deployments for d in s.depends_on)


def deploy_after_upstreams(spec: DeploymentSpec, run: RunSpec, rt: Runtime) -> DeploymentResult:
    """`deploy`, unless an upstream in this run did not go through: its done checkpoint decides (a distributed
    run sends a deployment once its upstreams settled, lost ones included; a reconciled one resumes in
    order). A deploy task knows its run by its head only: an upstream is in the run when the run stored a
    spec for it."""
    if spec.depends_on and run.options.action in ORDERED_ACTIONS:
        ids = {s.id for s in run.deployments} or {
            d for d in spec.depends_on if rt.store.head(keys.deployment_spec(run.run_id, d)) is not None}
        why = dependencies.blocked_by(spec, ids, lambda d: finished_status(rt.store, run.run_id, d))
        if why:
            # A redelivered task whose deployment already ended reports that, not a second verdict.
            return DeploymentRecord(rt.store, run.run_id, spec).finished() or skipped(spec, run, rt, why)
    return deploy(spec, run, rt)


def skipped(spec: DeploymentSpec, run: RunSpec, rt: Runtime, why: str) -> DeploymentResult:
    """A deployment not run because of one it depends on: a result like any other (recorded, reported)."""
    result = DeploymentResult(spec, run.options.action, Status.SKIPPED, error=why, host=rt.host)
    DeploymentRecord(rt.store, run.run_id, spec, rt.host).finish(result)
    rt.event(spec.id, "skipped", why)
    return result
