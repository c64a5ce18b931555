"""Reconciling a run whose chord broke (a header task lost or revoked): the store is the source of truth.

Every deployment leaves a checkpoint in the store; a finished one holds its full result. When the
chord callback cannot fire, a reconciler waits until every deployment is done (a redelivered task
finishes the job) or a deadline passes, then finalizes with what the checkpoints say.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator import dependencies
from orchestrator.finalize import conclude
from orchestrator.models import DeploymentResult, RunResult, RunSpec
from orchestrator.record import Checkpoint, DeploymentRecord, lost_result
from orchestrator.runtime import Runtime
from orchestrator.service import deploy_after_upstreams
from orchestrator.store.base import Store


def collect(store: Store, run: RunSpec) -> tuple[dict[str, DeploymentResult], dict[str, Checkpoint | None]]:
    """Finished results by deployment id, and the checkpoints (or None) of the deployments not finished."""
    done: dict[str, DeploymentResult] = {}
    pending: dict[str, Checkpoint | None] = {}
    for spec in run.deployments:
        cp = DeploymentRecord(store, run.run_id, spec).checkpoint()
        finished = cp.finished() if cp else None
        if finished is not None:
            done[spec.id] = finished
        else:
            pending[spec.id] = cp
    return done, pending


def results_in_order(run: RunSpec, done: dict[str, DeploymentResult],
                     pending: dict[str, Checkpoint | None]) -> list[DeploymentResult]:
    """Every deployment's result in the run's order, with the run's own spec (variables included, for rollback)."""
    return [_with_spec(done[s.id], run) if s.id in done else lost_result(s, run, pending.get(s.id))
            for s in run.deployments]


def _with_spec(result: DeploymentResult, run: RunSpec) -> DeploymentResult:
    spec = next((s for s in run.deployments if s.id == result.spec.id), result.spec)
    return replace(result, spec=spec)


def reconcile(rt: Runtime, run: RunSpec, wait_for_redelivery: bool,
              resume: bool = True) -> tuple[RunResult, list[str]] | None:
    """Finalize a run whose chord broke. The store's checkpoints are the truth.

    While `wait_for_redelivery`, a run with unfinished deployments is left to Celery's redelivery (None:
    ask again later); after that they are resumed here (deploy is idempotent: a lost apply is never run
    twice), then the run is finalized and notified. Returns the result and the deployments resumed here.
    """
    done, pending = collect(rt.store, run)
    if pending and wait_for_redelivery:
        return None
    if not resume:  # (a run whose deployments were settled one by one: a lost one stays lost)
        return conclude(run, results_in_order(run, done, pending), rt), []
    resumed = sorted(pending)
    # In dependency order, each after its upstreams (or skipped for them), as the run would have gone on.
    by_id = {s.id: s for s in run.deployments}
    for level in dependencies.graph_of(run.deployments).levels():
        for deployment in level:
            if deployment in pending:
                deploy_after_upstreams(by_id[deployment], run, rt)
    done, pending = collect(rt.store, run)
    return conclude(run, results_in_order(run, done, pending), rt), resumed
