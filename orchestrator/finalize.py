"""finalize(results): the end of every run, whatever executed it. Rollbacks, lease backstop, run audit,
run summary; `conclude` then reports back where the run came from (GitHub)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from orchestrator import alerts, audit, dependencies, keys, notify
from orchestrator.errors import TfoError
from orchestrator.models import Action, DeploymentResult, RunResult, RunSpec, Status
from orchestrator.rollback import rollback
from orchestrator.runtime import Runtime
from orchestrator.store.base import Store


def needs_rollback(run: RunSpec, results: Sequence[DeploymentResult], cancelled: bool) -> set[str]:
    """Ids of the deployments to roll back: failed applies; with --atomic, every applied one."""
    if run.options.action != Action.APPLY or cancelled:
        return set()
    failed = {r.spec.id for r in results if r.applied and r.status == Status.FAILED}
    if run.options.atomic and any(not r.status.ok for r in results):
        failed |= {r.spec.id for r in results if r.applied and r.status == Status.SUCCEEDED}
    return failed


def load_run_result(store: Store, run: RunSpec) -> RunResult | None:
    """The finished run as finalize recorded it, or None while it is still going."""
    try:
        summary = store.get_json(keys.run_summary(run.run_id))
        results = store.get_json(keys.run_results(run.run_id))
    except KeyError:
        return None
    return RunResult(run=run, results=tuple(DeploymentResult.from_dict(r) for r in results),
                     finished_at=summary.get("finished_at", ""), audit_key=summary.get("audit_key") or "")


def finalize(run: RunSpec, results: Sequence[DeploymentResult], rt: Runtime) -> RunResult:
    results = list(results)
    cancelled = rt.cancel.cancelled or any(r.status == Status.CANCELLED for r in results)
    targets = needs_rollback(run, results, cancelled)
    strategy = run.options.rollback
    if targets:
        # Dependents before what they depend on (a downstream built on an upstream's outputs is taken back
        # first); the deployments of one level in parallel.
        by_id = {r.spec.id: r for r in results}
        # A dependent rolled back first is given the outputs its upstreams return to, not their new ones.
        returning = {d: by_id[d].backup_key for d in targets if d in by_id and by_id[d].backup_key}
        done: dict[str, DeploymentResult] = {}
        for level in reversed(dependencies.graph_of(run.deployments or [r.spec for r in results]).levels()):
            todo = [by_id[d] for d in level if d in targets and d in by_id]
            if not todo:
                continue
            with ThreadPoolExecutor(max_workers=max(1, min(len(todo), rt.cfg.max_workers))) as pool:
                done |= {r.spec.id: r for r in pool.map(lambda r: rollback(r, run, rt, strategy, returning), todo)}
        results = [done.get(r.spec.id, r) for r in results]
    # Backstop: whatever this run still holds (a failed apply in a cancelled run, a lost rollback) is freed.
    lease_errors = []
    for r in results:
        try:
            if r.lease_held:
                rt.leases.release(r.spec.state_key, run.run_id)
        except TfoError as e:
            lease_errors.append(f"{r.spec.state_key}: {e}")
    try:
        rt.leases.release_all(run.run_id)
    except TfoError as e:
        lease_errors.append(str(e))

    finished = datetime.now(UTC).isoformat()
    partial = RunResult(run=run, results=tuple(results), finished_at=finished)
    record = {**audit.base_metadata(run), "kind": "run", "status": partial.status.value, "finished_at": finished,
              "terraform_version": rt.terraform_version, "host": rt.host,
              "cancelled": cancelled, "cancel_reason": rt.cancel.reason, "lease_errors": lease_errors,
              "deployments": [r.to_dict() for r in results]}
    audit_key, audit_error = audit.write(rt.store, keys.audit_run(run.run_id, run.started_at), record,
                                         rt.run_dir(run.run_id))
    result = RunResult(run=run, results=tuple(results), finished_at=finished, audit_key=audit_key)
    summary = result.report_dict()
    if audit_error:
        summary["audit_error"] = audit_error
    try:
        # Results first, then the summary: a client that sees the summary can read the results.
        rt.store.put_json(keys.run_results(run.run_id), [r.public_dict() for r in results])
        rt.store.put_json(keys.run_summary(run.run_id), summary)
    except TfoError as e:  # the audit already holds the run; these are for people and clients
        summary["summary_error"] = str(e)
    return result


log = logging.getLogger("tfo")


def conclude(run: RunSpec, results: Sequence[DeploymentResult], rt: Runtime) -> RunResult:
    """Finalize, then notify (a commit status; for a pull request, the sticky comment; an alert when it
    failed or rolled back). Every executor ends a run with this. A notification that fails is logged: the
    run is recorded either way."""
    result = finalize(run, results, rt)
    error = notify.post_result(rt.cfg, result)
    if error:
        log.error("run %s: the result could not be posted to GitHub: %s", run.run_id, error)
    alerts.alert_run(rt.cfg, result)  # a failed or rolled back run: to Slack too
    return result
