"""Producing a run (bundles, ids, who and what) and executing it with the local thread pool."""

from __future__ import annotations

import getpass
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from orchestrator import git
from orchestrator.bundle import build_bundle, upload_bundle
from orchestrator.config import TfoConfig
from orchestrator.deploy import deploy
from orchestrator.finalize import finalize
from orchestrator.models import DeploymentSpec, RunOptions, RunResult, RunSpec
from orchestrator.modules import ModuleGraph
from orchestrator.runtime import Runtime
from orchestrator.store.base import Store


def run_spec_key(run_id: str) -> str:
    return f"runs/{run_id}/spec.json"


def cancel_key(run_id: str) -> str:
    return f"runs/{run_id}/cancel"


def run_head_key(run_id: str) -> str:
    return f"runs/{run_id}/head.json"


def deployment_spec_key(run_id: str, deployment_id: str) -> str:
    # Not runs/{id}/deployments/: the deployments' checkpoints live there (deploy.checkpoint_key).
    return f"runs/{run_id}/specs/{deployment_id.replace('/', '__')}.json"


def save_run_spec(store: Store, run: RunSpec, per_deployment: bool = True, parallel: int = 8) -> None:
    """Workers read the run from here: task arguments carry ids only, never variables.

    The whole run (finalize, reconcile, `tfo runs show`), and for the deploy tasks the run without its
    deployments plus one object per deployment: each task reads what it runs, not every deployment's
    spec (N tasks reading the whole spec is quadratic in the run's size).
    """
    store.put_json(run_spec_key(run.run_id), run.to_dict(), encrypt=True)
    if not per_deployment:  # a local run: one process reads the whole run once
        return
    store.put_json(run_head_key(run.run_id), replace(run, deployments=()).to_dict(), encrypt=True)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tfo-spec-upload") as pool:
        list(pool.map(lambda s: store.put_json(deployment_spec_key(run.run_id, s.id), s.to_dict(), encrypt=True),
                      run.deployments))


def load_run_spec(store: Store, run_id: str) -> RunSpec:
    return RunSpec.from_dict(store.get_json(run_spec_key(run_id)))


def load_deployment(store: Store, run_id: str, deployment_id: str) -> tuple[RunSpec, DeploymentSpec]:
    """The run (without its deployments) and one deployment's spec: what a deploy task needs."""
    try:
        head = RunSpec.from_dict(store.get_json(run_head_key(run_id)))
        spec = DeploymentSpec.from_dict(store.get_json(deployment_spec_key(run_id, deployment_id)))
    except KeyError:  # a run prepared before these objects existed
        run = load_run_spec(store, run_id)
        return run, next(s for s in run.deployments if s.id == deployment_id)
    return head, spec


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


def prepare_run(cfg: TfoConfig, store: Store, specs: Sequence[DeploymentSpec], options: RunOptions, *,
                run_id: str = "", who: str = "", notify: dict[str, Any] | None = None,
                distributed: bool = True) -> RunSpec:
    """Upload one content-addressed bundle per deployment and fix everything the run needs."""
    graph = ModuleGraph.for_config(cfg)  # each root module worked out once for the run
    bundled = tuple(replace(s, bundle_key=upload_bundle(store, build_bundle(cfg, s, graph))) for s in specs)
    now = datetime.now(UTC)
    run = RunSpec(
        run_id=run_id or new_run_id(now),
        options=options,
        deployments=bundled,
        started_at=now.isoformat(),
        actor=who or actor(cfg),
        # A webhook run checked out the event's commit; a CI run may name it in GITHUB_SHA.
        git_sha=(git.head_sha(cfg.repo_root) if notify
                 else os.environ.get("GITHUB_SHA") or git.head_sha(cfg.repo_root)),
        notify=dict(notify or {}),
    )
    save_run_spec(store, run, per_deployment=distributed)
    return run


def execute_local(run: RunSpec, rt: Runtime, max_workers: int) -> RunResult:
    """The embedded executor: deployments in a thread pool, then finalize in-process."""
    for spec in run.deployments:
        rt.event(spec.id, "queued")
    with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="tfo-deploy") as pool:
        results = list(pool.map(lambda s: deploy(s, run, rt), run.deployments))
    return finalize(run, results, rt)
