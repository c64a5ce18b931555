"""Reconciling a run whose chord broke (a header task lost or revoked): the store is the source of truth.

Every deployment leaves a checkpoint in the store; a finished one holds its full result. When the
chord callback cannot fire, a reconciler waits until every deployment is done (a redelivered task
finishes the job) or a deadline passes, then finalizes with what the checkpoints say.
"""

from __future__ import annotations

from typing import Any

from orchestrator.deploy import read_checkpoint
from orchestrator.models import DeploymentResult, DeploymentSpec, RunSpec, Status
from orchestrator.runtime import Runtime


def collect(rt: Runtime, run: RunSpec) -> tuple[dict[str, DeploymentResult], dict[str, dict[str, Any] | None]]:
    """Finished results by deployment id, and the checkpoints (or None) of the deployments not finished."""
    done: dict[str, DeploymentResult] = {}
    pending: dict[str, dict[str, Any] | None] = {}
    for spec in run.deployments:
        cp = read_checkpoint(rt, run, spec)
        if cp and cp.get("phase") == "done" and isinstance(cp.get("result"), dict):
            done[spec.id] = DeploymentResult.from_dict(cp["result"])
        else:
            pending[spec.id] = cp
    return done, pending


def lost_result(spec: DeploymentSpec, run: RunSpec, checkpoint: dict[str, Any] | None) -> DeploymentResult:
    """A deployment no attempt finished by the deadline: failed; rolled back if its apply had started."""
    phase = (checkpoint or {}).get("phase", "never started")
    where = f" on {checkpoint.get('host')}" if checkpoint else ""
    return DeploymentResult(
        spec=spec, action=run.options.action.value, status=Status.FAILED,
        error=f"deployment lost: its last attempt{where} stopped at {phase!r} and none finished it",
        applied=phase == "applying", backup_key=str((checkpoint or {}).get("backup_key", "")),
        previous_bundle_key=str((checkpoint or {}).get("previous_bundle_key", "")),
        lease_held=phase in ("started", "backed_up", "applying"),
    )


def results_in_order(run: RunSpec, done: dict[str, DeploymentResult],
                     pending: dict[str, dict[str, Any] | None]) -> list[DeploymentResult]:
    return [done[s.id] if s.id in done else lost_result(s, run, pending.get(s.id)) for s in run.deployments]
