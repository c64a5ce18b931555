"""`tfo runs show`, `tfo backups list`, `tfo rollback`, `tfo audit show`: reading and acting on the record."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from cli.options import GlobalOptions
from orchestrator import keys, reservations
from orchestrator.errors import EXIT_DEPLOYMENT_FAILED, EXIT_OK, EXIT_POLICY, UnknownDeploymentError, UserError
from orchestrator.models import RunStatus
from orchestrator.names import unsafe_name_reason
from orchestrator.record import DeploymentRecord, Phase
from orchestrator.redaction import Redactor
from orchestrator.runtime import build_runtime
from orchestrator.service import load_run_spec
from orchestrator.sharding import state_key
from orchestrator.state import state_addresses
from orchestrator.store import open_store


def _check_run_id(run_id: str) -> None:
    if not keys.RUN_ID.fullmatch(run_id):
        raise UserError(f"run id {run_id!r} is not of the form YYYYMMDDTHHMMSSZ-xxxxxx")


def state_key_of(deployment: str, namespace: str = "") -> str:
    parts = deployment.split("/")
    if len(parts) != 4:
        raise UserError(f"deployment {deployment!r}: expected SERVICE/ACCOUNT/REGION/PROJECT")
    for p in parts:
        reason = unsafe_name_reason(p)
        if reason:
            raise UserError(f"deployment {deployment!r}: {reason}")
    service, account, region, project = parts
    return state_key(service, account, region, project, namespace)


def runs_show(g: GlobalOptions, run_id: str) -> int:
    """The finished run's summary; for a run still going, live per-deployment progress."""
    _check_run_id(run_id)
    cfg = g.load()
    store = open_store(cfg)
    try:
        summary = store.get_json(keys.run_summary(run_id))
    except KeyError:
        summary = None
    if summary is not None:
        click.echo(json.dumps(summary, indent=2))
        if summary.get("status") == RunStatus.BLOCKED:
            return EXIT_POLICY
        return EXIT_OK if summary.get("status") == RunStatus.SUCCEEDED else EXIT_DEPLOYMENT_FAILED
    try:
        run = load_run_spec(store, run_id)
    except KeyError:
        raise UnknownDeploymentError(f"run {run_id} is not recorded in {store.describe()}") from None
    live: dict[str, Any] = {"run_id": run_id, "status": RunStatus.RUNNING.value, "started_at": run.started_at}
    if cfg.celery.broker_url:
        from workers import producer
        from workers.app import make_app

        deployments = producer.progress(make_app(cfg), run)
        done = sum(1 for d in deployments.values() if d.get("state") in ("SUCCESS", "FAILURE"))
    else:  # a local run (perhaps on another host): where each deployment's record says it got to
        checkpoints = {s.id: DeploymentRecord(store, run_id, s).checkpoint() for s in run.deployments}
        deployments = {i: {"state": cp.phase.value if cp else "queued", "host": cp.host if cp else ""}
                       for i, cp in checkpoints.items()}
        done = sum(1 for cp in checkpoints.values() if cp and cp.phase == Phase.DONE)
    live["total"] = len(deployments)
    live["done"] = done
    live["deployments"] = deployments
    click.echo(json.dumps(live, indent=2))
    return EXIT_OK  # shown; the run is not over, so it has not failed (its "status" says "running")


def runs_cancel(g: GlobalOptions, run_id: str) -> int:
    """Ask every worker on the run to stop: terraform gets one SIGINT, deployments are recorded cancelled."""
    _check_run_id(run_id)
    store = open_store(g.load())
    try:
        load_run_spec(store, run_id)
    except KeyError:
        raise UnknownDeploymentError(f"run {run_id} is not recorded in {store.describe()}") from None
    store.put(keys.cancel(run_id), f"cancel requested by pid {os.getpid()}".encode())
    click.echo(f"cancel requested for run {run_id}; running deployments stop at their next check")
    return EXIT_OK


def backups_list(g: GlobalOptions, deployment: str, as_json: bool) -> int:
    cfg = g.load()
    key = state_key_of(deployment, cfg.namespace)
    store = open_store(cfg)
    backups = store.list_backups(key)
    if as_json:
        click.echo(json.dumps([{"key": b.key, "size": b.size, "last_modified": b.last_modified,
                                "encrypted": b.encrypted, "metadata": b.metadata} for b in backups], indent=2))
        return EXIT_OK
    if not backups:
        click.echo(f"no backups for {deployment}", err=True)
    for b in backups:
        empty = " (no state existed)" if b.metadata.get("tfo-empty") == "true" else ""
        click.echo(f"{b.key}\t{b.last_modified}\trun={b.metadata.get('run-id', '?')}\t{b.encrypted}{empty}")
    return EXIT_OK


def unlock(g: GlobalOptions, deployment: str) -> int:
    """Free a deployment a pull request reserved (the holder was abandoned, or must give way)."""
    cfg = g.load()
    state_key_of(deployment, cfg.namespace)  # a well-formed id, or a clear refusal
    holder = reservations.unlock(open_store(cfg), deployment, cfg.namespace)
    if holder is None:
        click.echo(f"{deployment} is not reserved by any pull request")
    else:
        click.echo(f"{deployment}: released (was reserved by {holder}, planned at {holder.sha[:12] or '?'})")
    return EXIT_OK


def rollback_to(g: GlobalOptions, deployment: str, to: str | None) -> int:
    """Point-in-time restore by hand: back up the current state first, then restore the chosen backup."""
    cfg = g.load()
    key = state_key_of(deployment, cfg.namespace)
    rt = build_runtime(cfg)
    backups = rt.store.list_backups(key)
    if not backups:
        raise UnknownDeploymentError(f"no backups exist for {deployment}")
    chosen = to or backups[-1].key
    if chosen not in {b.key for b in backups}:
        raise UnknownDeploymentError(f"{chosen} is not a backup of {deployment}; see `tfo backups list {deployment}`")
    owner = f"manual-rollback-{rt.host}-{os.getpid()}"
    lease = rt.leases.acquire(key, owner, cfg.lock_timeout_s)
    if not lease.acquired:
        who = lease.holder.describe() if lease.holder else "another run"
        click.echo(f"tfo: {key} is locked by {who}; try again later", err=True)
        return EXIT_DEPLOYMENT_FAILED
    try:
        store = rt.state_store(deployment.split("/")[1], owner)
        current = store.read_state(key)
        safety = store.backup_state(key, {"run-id": owner, "deployment": deployment, "reason": "manual rollback"})
        data = store.read_backup(chosen)
        untracked = sorted(state_addresses(current) - state_addresses(data))
        store.restore_state(key, data)
    finally:
        rt.leases.release(key, owner)
        rt.leases.close()
    click.echo(f"restored {key} from {chosen}; the state before this restore is saved as {safety.key}")
    if untracked:
        click.echo("warning: the restored state no longer tracks: " + ", ".join(untracked), err=True)
    return EXIT_OK


def audit_show(g: GlobalOptions, run_id: str, unredacted: bool) -> int:
    _check_run_id(run_id)
    store = open_store(g.load())
    objects = store.list_objects(keys.audit_run_prefix(run_id))
    if not objects:
        raise UnknownDeploymentError(f"no audit records for run {run_id} in {store.describe()}")
    records = []
    for obj in objects:
        record = store.get_json(obj.key)
        records.append({"key": obj.key, "encrypted": obj.encrypted, "record": record})
    text = json.dumps(records, indent=2)
    if not unredacted:
        redactor = Redactor()
        for r in records:
            dep = r["record"].get("deployment") or {}
            redactor.add_sensitive_variables(dep.get("variables", {}), dep.get("sensitive_variables", []))
        # Each string first (its newlines are still newlines), then the whole text for `"password": "..."`.
        text = redactor.redact(json.dumps(redactor.redact_tree(records), indent=2))
    click.echo(text)
    return EXIT_OK

