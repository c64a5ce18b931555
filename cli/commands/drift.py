"""`tfo drift`: compare every selected deployment with what was applied last, and optionally re-apply it.

Detection is a run like any other (both executors): each deployment's last applied bundle planned with
`-refresh-only` (changes made outside Terraform) and normally (what the last apply did not converge);
nothing is applied and no state is written. Remediation is then an ordinary apply (lease, backup,
policy, rollback, audit) of the drifted deployments whose configuration in the working tree is still
the one last applied: a pending change is not drift, and is refused.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cli.commands.records import state_key_of
from cli.commands.run import _launch, print_summary, write_reports
from cli.options import GlobalOptions, Selectors, select
from orchestrator import drift, notify, service
from orchestrator.bundle import build_bundle, bundle_key
from orchestrator.cancel import CancelToken
from orchestrator.errors import EXIT_DEPLOYMENT_FAILED, EXIT_DRIFT, EXIT_INTERRUPTED, EXIT_OK, UserError
from orchestrator.models import Action, DeploymentSpec, RollbackStrategy, RunResult, RunStatus, Status
from orchestrator.modules import ModuleGraph
from orchestrator.progress import Progress
from orchestrator.report import to_markdown
from orchestrator.runtime import build_runtime
from orchestrator.store import open_store


def remediable(result: RunResult, mode: str) -> list[DeploymentSpec]:
    """The drifted deployments `mode` ("high", "all") asks to re-apply."""
    return [r.spec for r in result.results
            if r.status == Status.DRIFTED and (mode == "all" or (mode == "high" and r.severity == "high"))]


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
    remediation: RunResult | None = None
    pending: dict[str, str] = {}
    try:
        detected = _launch(cfg, rt, specs, service.RunRequest(Action.DRIFT), runner, token, progress, no_wait=False)
        if not isinstance(detected, RunResult):
            return detected
        wanted = remediable(detected, mode) if mode != "none" else []
        if wanted and not token.cancelled:
            # A pending change is not drift: only a deployment whose working tree is what was applied last.
            last = {r.spec.id: r.spec.bundle_key for r in detected.results}
            graph = ModuleGraph.for_config(cfg)
            current = {s.id: s for s in specs}
            again = []
            for spec in wanted:
                now = bundle_key(build_bundle(cfg, current[spec.id], graph))
                if now == last[spec.id]:
                    again.append(current[spec.id])
                else:
                    pending[spec.id] = ("its configuration in the working tree is not the one last applied: a "
                                        "pending change, not drift; apply (or revert) it, then run drift again")
            if again:
                result = _launch(cfg, rt, again, service.RunRequest(Action.APPLY, RollbackStrategy(cfg.rollback)),
                                 runner, token, progress, no_wait=False)
                if not isinstance(result, RunResult):
                    return result
                remediation = result
    finally:
        progress.close()
        rt.leases.close()
    # History and alerts: what changed since the last drift run (transitions only).
    changes = drift.record_run(rt.store, detected, remediation)
    drift.send_alerts(cfg, rt.store, changes, notify.github_client(cfg))
    _reports(detected, remediation, pending, json_out, markdown_out)
    print_summary(detected)
    for deployment, why in sorted(pending.items()):
        click.echo(f"  not remediated: {deployment}: {why}")
    if remediation is not None:
        click.echo("remediation:")
        print_summary(remediation)
    sys.stdout.flush()
    return exit_code(detected, remediation, token)


def exit_code(detected: RunResult, remediation: RunResult | None, token: CancelToken) -> int:
    """0 in sync (or every drift remediated), 5 drift left, 1 a remediation or a detection failed."""
    if token.reason.startswith("SIGINT"):
        return EXIT_INTERRUPTED
    if remediation is not None and remediation.status != RunStatus.SUCCEEDED:
        return EXIT_DEPLOYMENT_FAILED
    fixed = {r.spec.id for r in remediation.results} if remediation is not None else set()
    left = [r for r in detected.results if r.status == Status.DRIFTED and r.spec.id not in fixed]
    if left:
        return EXIT_DRIFT
    if any(not r.status.ok and r.status != Status.DRIFTED for r in detected.results):
        return EXIT_DEPLOYMENT_FAILED
    return EXIT_OK


def _reports(detected: RunResult, remediation: RunResult | None, pending: dict[str, str], json_out: Path | None,
             markdown_out: Path | None) -> None:
    write_reports(detected, None, markdown_out)
    if markdown_out and remediation is not None:
        with open(markdown_out, "a", encoding="utf-8") as f:
            f.write("\n\n" + to_markdown(remediation))
    if json_out:
        report: dict[str, Any] = detected.report_dict()
        report["remediation"] = remediation.report_dict() if remediation is not None else None
        report["not_remediated"] = [{"id": d, "reason": why} for d, why in sorted(pending.items())]
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
