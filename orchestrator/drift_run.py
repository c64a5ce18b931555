"""One drift run, whoever starts it (`tfo drift`, or `tfo beat` on its schedule): detection, remediation of
what may be remediated, then history and alerts, under one lease so that only one drift run works on a
namespace at a time across the cluster.

Detection is a run like any other (either executor, started by the caller's `launch`); remediation is an
ordinary apply of the drifted deployments whose working-tree configuration is still the one last applied
(a pending change is not drift, and is refused with its reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from orchestrator import drift, keys, notify
from orchestrator.bundle import build_bundle, bundle_key
from orchestrator.config import TfoConfig
from orchestrator.errors import EXIT_DEPLOYMENT_FAILED, EXIT_DRIFT, EXIT_OK
from orchestrator.locks import LeaseManager, LeaseResult
from orchestrator.models import Action, DeploymentSpec, Record, RollbackStrategy, RunResult, RunStatus, Status
from orchestrator.modules import ModuleGraph
from orchestrator.record import DeploymentRecord
from orchestrator.service import RunRequest
from orchestrator.store.base import Store

log = logging.getLogger("tfo.drift")
PENDING = ("its configuration in the working tree is not the one last applied: a pending change, not drift; "
           "apply (or revert) it, then run drift again")
APPLIED_SINCE = ("it was applied again since drift was detected (its last applied configuration changed): not "
                 "re-applied over that; the next drift run judges it again")

# Starts a run of these deployments and follows it: its result, or an exit code when there is none.
Launch = Callable[[list[DeploymentSpec], RunRequest], RunResult | int]


@dataclass(frozen=True)
class DriftOutcome:
    detected: RunResult
    remediation: RunResult | None = None
    not_remediated: Mapping[str, str] = field(default_factory=dict)  # deployment id -> why

    def exit_code(self) -> int:
        """0 in sync (or every drift remediated), 5 drift left, 1 a remediation or a detection failed."""
        if self.remediation is not None and self.remediation.status != RunStatus.SUCCEEDED:
            return EXIT_DEPLOYMENT_FAILED
        fixed = {r.spec.id for r in self.remediation.results} if self.remediation is not None else set()
        if any(r.status == Status.DRIFTED and r.spec.id not in fixed for r in self.detected.results):
            return EXIT_DRIFT
        if any(not r.status.ok and r.status != Status.DRIFTED for r in self.detected.results):
            return EXIT_DEPLOYMENT_FAILED
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        by: dict[str, int] = {}
        for r in self.detected.results:
            by[r.status.value] = by.get(r.status.value, 0) + 1
        if self.remediation is not None:
            by["remediated"] = sum(r.status == Status.SUCCEEDED for r in self.remediation.results)
        return by


def remediable(result: RunResult, mode: str) -> list[DeploymentSpec]:
    """The drifted deployments `mode` ("high", "all") asks to re-apply."""
    return [r.spec for r in result.results
            if r.status == Status.DRIFTED and (mode == "all" or (mode == "high" and r.severity == "high"))]


def detect_and_remediate(cfg: TfoConfig, store: Store, specs: Sequence[DeploymentSpec], mode: str, launch: Launch,
                         cancelled: Callable[[], bool], actor: str = "") -> DriftOutcome | int:
    """Detect, remediate what `mode` asks for, record the history and send the alerts of its transitions."""
    detected = launch(list(specs), RunRequest(Action.DRIFT, actor=actor))
    if not isinstance(detected, RunResult):
        return detected
    wanted = remediable(detected, mode) if mode != "none" else []
    remediation: RunResult | None = None
    pending: dict[str, str] = {}
    if wanted and not cancelled():
        last = {r.spec.id: r.spec.bundle_key for r in detected.results}
        graph = ModuleGraph.for_config(cfg)
        current = {s.id: s for s in specs}
        again = []
        for spec in wanted:
            if bundle_key(build_bundle(cfg, current[spec.id], graph)) != last[spec.id]:
                pending[spec.id] = PENDING
            elif DeploymentRecord(store, detected.run.run_id, spec).last_good() != last[spec.id]:
                # Another apply (a merge the webhook applied) landed while drift ran: re-applying what was
                # detected would undo it. (What lands between this check and the apply's lease is not seen.)
                pending[spec.id] = APPLIED_SINCE
            else:
                again.append(current[spec.id])
        if again:
            applied = launch(again, RunRequest(Action.APPLY, RollbackStrategy(cfg.rollback), actor=actor))
            if not isinstance(applied, RunResult):
                return applied
            remediation = applied
    # History and alerts: what changed since the last drift run (transitions only).
    changes = drift.record_run(store, detected, remediation)
    drift.send_alerts(cfg, store, changes, notify.github_client(cfg))
    return DriftOutcome(detected, remediation, pending)


@contextmanager
def exclusive(leases: LeaseManager, namespace: str, owner: str, wait_s: float,
              cancelled: Callable[[], bool] = lambda: False) -> Iterator[LeaseResult]:
    """The namespace's drift lease for the whole drift run (detection, remediation, history), or who holds it."""
    key = keys.drift_lock(namespace)
    got = leases.acquire(key, owner, wait_s, cancelled)
    try:
        yield got
    finally:
        if got.acquired:
            leases.release(key, owner)


@dataclass(frozen=True)
class ScheduledRun(Record):
    """The last scheduled drift run of a namespace: a slot (firing time) runs once however many beats send it."""

    slot: str  # ISO time of the schedule's firing
    run_owner: str
    host: str
    started: float
    finished: float = 0.0
    exit_code: int = -1
    counts: Mapping[str, int] = field(default_factory=dict)


def slot_taken(store: Store, namespace: str, slot: datetime) -> ScheduledRun | None:
    """The run that already took this slot (or a later one), if any. Read under the drift lease."""
    try:
        last = ScheduledRun.from_dict(store.get_json(keys.drift_schedule(namespace)))
    except KeyError:
        return None
    return last if datetime.fromisoformat(last.slot) >= slot else None


def take_slot(store: Store, namespace: str, slot: datetime, owner: str, host: str) -> ScheduledRun:
    run = ScheduledRun(slot.astimezone(UTC).isoformat(), owner, host, time.time())
    store.put_json(keys.drift_schedule(namespace), run.to_dict())
    return run


def finish_slot(store: Store, namespace: str, run: ScheduledRun, exit_code: int, counts: Mapping[str, int]) -> None:
    store.put_json(keys.drift_schedule(namespace),
                   replace(run, finished=time.time(), exit_code=exit_code, counts=dict(counts)).to_dict())
