"""`tfo drift`: compare every selected deployment with what was applied last, and optionally re-apply it.

Detection is a run like any other (both executors): each deployment's last applied bundle planned with
`-refresh-only` (changes made outside Terraform) and normally (what the last apply did not converge);
nothing is applied and no state is written. Remediation is then an ordinary apply (lease, backup,
policy, rollback, audit) of the drifted deployments whose configuration in the working tree is still
the one last applied: a pending change is not drift, and is refused.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cli.commands.records import state_key_of
from cli.commands.run import SIGINT_REASON, _launch, cancel_on_signals, print_summary, write_reports
from cli.options import GlobalOptions, Selectors, select
from orchestrator import drift, drift_run, service
from orchestrator.cancel import CancelToken
from orchestrator.errors import EXIT_DEPLOYMENT_FAILED, EXIT_INTERRUPTED, EXIT_OK, LockError, UserError
from orchestrator.models import DeploymentSpec, RunResult
from orchestrator.procs import host_name
from orchestrator.progress import Progress
from orchestrator.report import to_markdown
from orchestrator.runtime import build_runtime
from orchestrator.store import open_store


def run_drift(g: GlobalOptions, sel: Selectors, *, json_out: Path | None, markdown_out: Path | None,
              executor: str | None, max_workers: int | None, remediate: bool) -> int:
    cfg = g.load(max_workers=max_workers)
    chosen = executor or ("celery" if cfg.celery.broker_url else "local")
    if chosen == "celery" and not cfg.celery.broker_url:
        raise UserError("--executor celery needs [tfo.celery] broker_url (or TFO_CELERY_BROKER_URL)")
    _, selected = select(cfg, sel)
    for w in selected.warnings:
        click.echo(f"warning: {w}", err=True)
    specs = list(selected.specs)
    token, progress = CancelToken(), Progress()
    rt = build_runtime(cfg, token, progress)
    if chosen == "local":
        _ = rt.terraform_version
        runner: service.Executor = service.LocalExecutor(rt, cfg.max_workers)
    else:
        from workers.producer import CeleryExecutor

        runner = CeleryExecutor(cfg, rt.store, progress)
    for s in specs:
        progress.redactor.add_sensitive_variables(s.variables, s.sensitive_variables)
    mode = "all" if remediate else cfg.drift.remediate

    def launch(chosen_specs: list[DeploymentSpec], request: service.RunRequest) -> RunResult | int:
        return _launch(cfg, rt, chosen_specs, request, runner, token, progress, no_wait=False)

    owner = f"drift-{host_name()}-{os.getpid()}"
    try:
        with cancel_on_signals(token), drift_run.exclusive(rt.leases, cfg.namespace, owner, cfg.lock_timeout_s,
                                                           lambda: token.cancelled) as got:
            if not got.acquired and token.cancelled:  # Ctrl-C (or SIGTERM) while waiting for the lease
                return EXIT_INTERRUPTED if token.reason == SIGINT_REASON else EXIT_DEPLOYMENT_FAILED
            if not got.acquired:
                raise LockError(f"another drift run holds namespace {cfg.namespace or '(default)'}: "
                                f"{got.holder.describe() if got.holder else 'unknown'}; try again when it ends")
            outcome = drift_run.detect_and_remediate(cfg, rt.store, specs, mode, launch, lambda: token.cancelled)
    finally:
        progress.close()
        rt.leases.close()
    if not isinstance(outcome, drift_run.DriftOutcome):
        return outcome
    _reports(outcome, json_out, markdown_out)
    print_summary(outcome.detected)
    for deployment, why in sorted(outcome.not_remediated.items()):
        click.echo(f"  not remediated: {deployment}: {why}")
    if outcome.remediation is not None:
        click.echo("remediation:")
        print_summary(outcome.remediation)
    sys.stdout.flush()
    return EXIT_INTERRUPTED if token.reason == SIGINT_REASON else outcome.exit_code()


def _reports(outcome: drift_run.DriftOutcome, json_out: Path | None, markdown_out: Path | None) -> None:
    detected, remediation = outcome.detected, outcome.remediation
    write_reports(detected, None, markdown_out)
    if markdown_out and remediation is not None:
        with open(markdown_out, "a", encoding="utf-8") as f:
            f.write("\n\n" + to_markdown(remediation))
    if json_out:
        report: dict[str, Any] = detected.report_dict()
        report["remediation"] = remediation.report_dict() if remediation is not None else None
        report["not_remediated"] = [{"id": d, "reason": why} for d, why in sorted(outcome.not_remediated.items())]
        json_out.write_text(json.dumps(report, indent=2) + "\n")


def show_history(g: GlobalOptions, deployment: str, as_json: bool) -> int:
    """`tfo drift history [DEPLOYMENT]`: when each deployment drifted, what, and when it was fixed."""
    cfg = g.load()
    if deployment:
        state_key_of(deployment)  # a well-formed id, or a clear refusal (exit 2)
    records = drift.history(open_store(cfg), deployment, cfg.namespace)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return EXIT_OK
    if not records:
        click.echo(f"no drift recorded{' for ' + deployment if deployment else ''}", err=True)
    for r in records:
        now = f"drifting since {_when(r.since)} ({r.severity})" if r.drifted else "in sync"
        click.echo(f"{r.deployment}: {now}" + (f", issue #{r.issue}" if r.issue else ""))
        for e in r.events[-20:]:
            click.echo(f"  {_when(e.at)}  {e.event:<10} run {e.run_id}" + (f"  {len(e.resources)} resource(s)"
                                                                           if e.resources else ""))
    return EXIT_OK


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "?"
