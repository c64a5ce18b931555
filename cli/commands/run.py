"""`tfo plan` and `tfo apply`: select and validate, then the run service prepares and an executor runs it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

import click

from cli.options import GlobalOptions, Selectors, select
from orchestrator import service
from orchestrator.cancel import CancelToken
from orchestrator.config import TfoConfig
from orchestrator.errors import EXIT_DEPLOYMENT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_POLICY, UserError
from orchestrator.models import Action, DeploymentSpec, RollbackStrategy, RunResult, RunStatus
from orchestrator.progress import Progress
from orchestrator.report import to_json, to_markdown
from orchestrator.runtime import Runtime, build_runtime

SIGINT_REASON = "SIGINT received"


@contextmanager
def cancel_on_signals(token: CancelToken) -> Iterator[None]:
    """SIGINT/SIGTERM stop the run cleanly: terraform gets one SIGINT, leases are released, results recorded."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not token.cancelled:
            click.echo(f"tfo: {name} received: stopping", err=True)
        token.cancel(SIGINT_REASON if signum == signal.SIGINT else f"{name} received")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def write_reports(result: RunResult, json_out: Path | None, markdown_out: Path | None) -> None:
    if json_out:
        json_out.write_text(to_json(result) + "\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not (markdown_out or summary):
        return
    markdown = to_markdown(result)
    if markdown_out:
        markdown_out.write_text(markdown)
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")


def print_summary(result: RunResult) -> None:
    click.echo(f"run {result.run.run_id}: {result.run.options.action.value} {result.status.value}")
    for r in result.results:
        line = f"  {r.status.value:<16} {r.spec.id}  +{r.plan.add} ~{r.plan.change} -{r.plan.destroy}"
        if r.backup_key:
            line += f"  backup={r.backup_key}"
        if r.spec.selected_because:
            line += f"  (selected because {r.spec.selected_because})"
        click.echo(line)
        for v in r.violations:
            click.echo(f"      policy: {str(v)[:500]}")
        if r.error and not r.error.startswith("refused by policy"):
            click.echo(f"      error: {r.error.splitlines()[0][:300]}")
        if r.rollback:
            rb = r.rollback
            click.echo(f"      rollback: {rb.strategy} {rb.status} target={rb.target or '-'} "
                       f"matches={rb.matches_target}" + (f" note: {rb.error[:200]}" if rb.error else ""))
    if result.audit_key:
        click.echo(f"audit: {result.audit_key}")


def run_terraform(g: GlobalOptions, sel: Selectors, action: Action, *, json_out: Path | None,
                  markdown_out: Path | None, executor: str | None, max_workers: int | None,
                  rollback: str | None, atomic: bool, no_wait: bool, allow_destroy: bool = False,
                  approved_by: tuple[str, ...] = (), from_plan: str = "") -> int:
    cfg = g.load(max_workers=max_workers, rollback=rollback)
    chosen = executor or ("celery" if cfg.celery.broker_url else "local")
    if chosen == "celery" and not cfg.celery.broker_url:
        raise UserError("--executor celery needs [tfo.celery] broker_url (or TFO_CELERY_BROKER_URL)")
    if no_wait and chosen != "celery":
        raise UserError("--no-wait needs the celery executor: a local run lives in this process")
    token = CancelToken()
    progress = Progress()
    rt = build_runtime(cfg, token, progress)
    git_sha = os.environ.get("GITHUB_SHA", "")
    if from_plan:
        # The plan run's deployments as it recorded them (its bundles): what was reviewed, whatever the
        # working tree holds now. Selectors only narrow them down.
        ids = None
        if sel.paths or sel.changed_files is not None or sel.git_diff:
            ids = {s.id for s in select(cfg, sel)[1].specs}
        planned = service.planned_deployments(rt.store, from_plan, ids)
        specs, git_sha = list(planned.deployments), planned.git_sha
    else:
        _, selected = select(cfg, sel)
        for w in selected.warnings:
            click.echo(f"warning: {w}", err=True)
        specs = list(selected.specs)
    if chosen == "local":
        _ = rt.terraform_version  # fails with exit 3 before anything runs when the binary is missing
        runner: service.Executor = service.LocalExecutor(rt, cfg.max_workers)
    else:
        from workers.producer import CeleryExecutor

        runner = CeleryExecutor(cfg, rt.store, progress)
    for s in specs:
        progress.redactor.add_sensitive_variables(s.variables, s.sensitive_variables)
    request = service.RunRequest(action, RollbackStrategy(cfg.rollback), atomic, allow_destroy=allow_destroy,
                                 approved_by=approved_by, git_sha=git_sha, from_plan=from_plan)
    try:
        if atomic and action == Action.APPLY and not from_plan:
            # All or nothing: every deployment is planned and judged by the policy before any is applied,
            # then exactly those plans are applied (a failed apply still rolls every applied one back).
            gate = _launch(cfg, rt, specs, replace(request, action=Action.PLAN, atomic=False), runner, token,
                           progress, no_wait=False)
            if not isinstance(gate, RunResult):
                return gate
            if gate.status != RunStatus.SUCCEEDED:
                progress.close()
                write_reports(gate, json_out, markdown_out)
                print_summary(gate)
                click.echo(f"tfo apply --atomic: nothing applied: the plans of run {gate.run.run_id} did not all "
                           f"pass ({gate.status.value})", err=True)
                return _exit_code(gate, token)
            ids = {s.id for s in specs}
            if not any(d in ids for s in specs for d in s.depends_on):
                request = replace(request, from_plan=gate.run.run_id)
                specs = list(gate.run.deployments)
            # else a downstream's saved plan holds its upstream's outputs from before that upstream's apply:
            # each is planned again in order (the policy judges it again), and any failure rolls all back,
            # dependents first.
        result = _launch(cfg, rt, specs, request, runner, token, progress, no_wait=no_wait)
        if not isinstance(result, RunResult):
            return result
    finally:
        progress.close()
        rt.leases.close()
    write_reports(result, json_out, markdown_out)
    print_summary(result)
    sys.stdout.flush()
    return _exit_code(result, token)


def _launch(cfg: TfoConfig, rt: Runtime, specs: list[DeploymentSpec], request: service.RunRequest,
            runner: service.Executor, token: CancelToken, progress: Progress, *, no_wait: bool) -> RunResult | int:
    """Start a run and follow it to its result; an exit code when there is none to report (--no-wait, or the
    client stopped waiting)."""
    run = service.start(cfg, rt.store, specs, request, runner)
    click.echo(f"tfo {request.action.value}: run {run.run_id}, {len(specs)} deployment(s), {runner.name} executor, "
               f"store {rt.store.describe()}" + (f", plans of run {request.from_plan}" if request.from_plan else ""),
               err=True)
    if no_wait:
        click.echo(run.run_id)
        return EXIT_OK
    with cancel_on_signals(token):
        result = runner.follow(run, lambda: token.cancelled)
    if result is None:
        progress.close()  # the live view ends before the message, not over it
        click.echo(f"tfo: stopped waiting; run {run.run_id} goes on. Follow it with "
                   f"`tfo runs show {run.run_id}`, stop it with `tfo runs cancel {run.run_id}`", err=True)
        return EXIT_DEPLOYMENT_FAILED
    return result


def _exit_code(result: RunResult, token: CancelToken) -> int:
    if token.reason == SIGINT_REASON:  # Ctrl-C: stopped cleanly, and said the way a shell expects
        return EXIT_INTERRUPTED
    if result.status == RunStatus.BLOCKED:
        return EXIT_POLICY
    return EXIT_OK if result.status == RunStatus.SUCCEEDED else EXIT_DEPLOYMENT_FAILED
