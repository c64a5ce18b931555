"""One record per deployment: where it got to in a run (checkpoints), how it ended (the `done` checkpoint
holds its result), and the last configuration applied to it (last-good). Deploy, rollback, recovery and
the workers read and write a deployment only through here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from orchestrator import keys
from orchestrator.models import DeploymentResult, DeploymentSpec, Record, RunSpec, Status
from orchestrator.store.base import Store


class Phase(StrEnum):
    STARTED = "started"  # the lease is held; nothing changed yet
    BACKED_UP = "backed_up"  # the pre-apply backup is written
    APPLYING = "applying"  # `terraform apply` started: infrastructure may have changed
    DONE = "done"  # finished; the checkpoint holds the result
    ROLLING_BACK = "rolling_back"  # (the rollback's own checkpoint) about to change the state

    @property
    def holds_lease(self) -> bool:
        return self in (Phase.STARTED, Phase.BACKED_UP, Phase.APPLYING)

    @property
    def resumable(self) -> bool:
        """A lost attempt got this far: the next one reuses its backup and never applies twice."""
        return self in (Phase.BACKED_UP, Phase.APPLYING)


@dataclass(frozen=True)
class Checkpoint(Record):
    phase: Phase
    host: str = ""
    pid: int = 0
    at: float = 0.0
    backup_key: str = ""
    backup_version: str = ""
    previous_bundle_key: str = ""
    from_serial: int | None = None
    result: dict[str, Any] | None = None

    def finished(self) -> DeploymentResult | None:
        if self.phase == Phase.DONE and isinstance(self.result, dict):
            return DeploymentResult.from_dict(self.result)
        return None


class DeploymentRecord:
    """A deployment's record in one run (and its last-good pointer, which outlives runs)."""

    def __init__(self, store: Store, run_id: str, spec: DeploymentSpec, host: str = "") -> None:
        self.store = store
        self.run_id = run_id
        self.spec = spec
        self.host = host

    def checkpoint(self, stage: str = "") -> Checkpoint | None:
        """Where an earlier attempt got to (a redelivered task reads it); `stage="rollback"`: the rollback's."""
        try:
            data = self.store.get_json(keys.checkpoint(self.run_id, self.spec.id, stage))
        except KeyError:
            return None
        try:
            return Checkpoint.from_dict(data) if isinstance(data, dict) else None
        except (ValueError, TypeError):  # written by a tfo that knew other phases: as good as none
            return None

    def write(self, phase: Phase, stage: str = "", **data: Any) -> None:
        cp = Checkpoint(phase=phase, host=self.host, pid=os.getpid(), at=time.time(), **data)
        self.store.put_json(keys.checkpoint(self.run_id, self.spec.id, stage), cp.to_dict())

    def finish(self, result: DeploymentResult) -> None:
        self.write(Phase.DONE, result=result.to_dict())

    def finished(self) -> DeploymentResult | None:
        cp = self.checkpoint()
        return cp.finished() if cp else None

    def last_good(self) -> str:
        try:
            return str(self.store.get_json(keys.last_good(self.spec.id, self.spec.namespace)).get("bundle_key", ""))
        except KeyError:
            return ""

    def set_last_good(self, bundle_key: str) -> None:
        """`bundle_key` is what infrastructure now matches; "" = nothing (it was destroyed)."""
        if bundle_key:
            self.store.put_json(keys.last_good(self.spec.id, self.spec.namespace), {
                "bundle_key": bundle_key, "run_id": self.run_id, "deployment": self.spec.id, "at": time.time()})
        else:
            self.store.delete(keys.last_good(self.spec.id, self.spec.namespace))


def finished_status(store: Store, run_id: str, deployment_id: str) -> Status | None:
    """How a deployment of a run ended (its done checkpoint), or None while it has not."""
    try:
        cp = Checkpoint.from_dict(store.get_json(keys.checkpoint(run_id, deployment_id)))
    except (KeyError, ValueError, TypeError):
        return None
    if cp.phase != Phase.DONE or not isinstance(cp.result, dict):
        return None
    try:
        return Status(str(cp.result.get("status")))
    except ValueError:
        return None


def lost_result(spec: DeploymentSpec, run: RunSpec, checkpoint: Checkpoint | None) -> DeploymentResult:
    """A deployment no attempt finished: failed; rolled back by finalize if its apply had started."""
    phase = checkpoint.phase.value if checkpoint else "never started"
    where = f" on {checkpoint.host}" if checkpoint else ""
    return DeploymentResult(
        spec=spec, action=run.options.action, status=Status.FAILED,
        error=f"deployment lost: its last attempt{where} stopped at {phase!r} and none finished it",
        applied=checkpoint is not None and checkpoint.phase == Phase.APPLYING,
        backup_key=checkpoint.backup_key if checkpoint else "",
        previous_bundle_key=checkpoint.previous_bundle_key if checkpoint else "",
        lease_held=checkpoint is not None and checkpoint.phase.holds_lease,
    )


# In a result's error when its "done" checkpoint could not be written: the store does not have it.
UNRECORDED = "checkpoint not recorded"


def reference(result: DeploymentResult) -> dict[str, Any]:
    """What a deploy task returns to the result backend (so to Flower, and to finalize's arguments, which
    Redis keeps again): which deployment, how it ended, where. The whole result is the deployment's
    "done" checkpoint in the store; only when that could not be written does the (public) result itself
    travel. Search Flower's tasks for `result:failed` to find the failed deployments."""
    if UNRECORDED in result.error:
        return result.public_dict()
    first_line = result.error.splitlines()[0][:200] if result.error else ""
    return {"ref": True, "deployment": result.spec.id, "status": result.status.value, "host": result.host,
            "duration_s": result.duration_s, "error": first_line}


def resolve_references(store: Store, run: RunSpec, returned: list[dict[str, Any]]) -> list[DeploymentResult]:
    """The deployments' results in the order returned, from the store where a task returned a reference,
    with the run's full specs (variables included) for rollback."""
    specs = {s.id: s for s in run.deployments}
    out = []
    for r in returned:
        if r.get("ref"):
            spec = specs[str(r["deployment"])]
            cp = DeploymentRecord(store, run.run_id, spec).checkpoint()
            # Written, then lost from the store: what the checkpoint says, as for a lost deployment.
            parsed = (cp.finished() if cp else None) or lost_result(spec, run, cp)
        else:
            parsed = DeploymentResult.from_dict(r)
        out.append(replace(parsed, spec=specs.get(parsed.spec.id, parsed.spec)))
    return out
