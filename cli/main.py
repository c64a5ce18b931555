"""The `tfo` command line. One module per subcommand group; one handler, `main`, maps errors to exit codes.

Exit codes:
  0    all succeeded (plan: also with changes)
  1    a deployment failed, was rolled back or was cancelled
  2    invalid input or usage
  3    tfo could not run: the store, lock backend, broker or binary failed (a TfoError says which),
       or an unexpected error (a bug); then stderr has one line naming the error and a file that holds
       its traceback: `tfo-error-<time>-<random>.log` (0600) in the workdir (`workdir`, default
       `.tfo/work`), else in `./.tfo` when the config cannot be loaded, else in the temp directory
  4    refused by policy: a [tfo.policy] rule blocked a deployment (nothing failed); it was not applied
  141  the reader of stdout went away (`| head`); nothing else is affected
  130  interrupted by Ctrl-C (SIGINT); a local run first stops cleanly and records its deployments
       as cancelled
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

# plan/apply up front; the other subcommands' modules are imported by the subcommand that runs
from cli.commands import run as run_cmd
from cli.options import GlobalOptions, read_selectors, selector_options
from orchestrator import __version__
from orchestrator.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_PLATFORM, TfoError
from orchestrator.models import Action
from orchestrator.procs import keep_private
from orchestrator.redaction import Redactor

F = TypeVar("F", bound=Callable[..., Any])

# The global options of the command being run, for the error handler: where a traceback goes.
_invoked: GlobalOptions | None = None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tfo")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="tfo.toml (default: ./tfo.toml when present).")
@click.option("-C", "--repo", type=click.Path(file_okay=False, path_type=Path),
              help="Repository root (default: the config file's directory, else the current directory).")
@click.option("--terraform-bin", help="terraform or tofu binary (overrides terraform_bin).")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, repo: Path | None, terraform_bin: str | None) -> None:
    """tfo: plan and apply Terraform across accounts, regions and services, with backups and rollback."""
    global _invoked
    ctx.obj = _invoked = GlobalOptions(config_file=config_file, repo=repo, terraform_bin=terraform_bin)


@cli.command()
@selector_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def discover(g: GlobalOptions, paths: tuple[str, ...], changed_files: str | None, git_diff: str | None,
             as_json: bool) -> int:
    """List the deployments the selected tfvars files shard into."""
    from cli.commands import discover as discover_cmd
    return discover_cmd.run_discover(g, read_selectors(paths, changed_files, git_diff), as_json)


@cli.command()
@selector_options
@click.pass_obj
def validate(g: GlobalOptions, paths: tuple[str, ...], changed_files: str | None, git_diff: str | None) -> int:
    """Check the selected tfvars files without running Terraform."""
    from cli.commands import discover as discover_cmd
    return discover_cmd.run_validate(g, read_selectors(paths, changed_files, git_diff))


def _run_options(f: F) -> F:
    f = click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report.")(f)
    f = click.option("--markdown-out", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the Markdown report (PR comment size).")(f)
    f = click.option("--executor", type=click.Choice(["local", "celery"]),
                     help="Default: celery when a broker is configured.")(f)
    f = click.option("--max-workers", type=click.IntRange(min=1), help="Parallel deployments (local executor).")(f)
    f = click.option("--allow-destroy", is_flag=True,
                     help="Waive [tfo.policy] protect_destroy for this run (recorded in the audit).")(f)
    f = click.option("--approved-by", "approved_by", multiple=True, metavar="WHO",
                     help="An approval for policy rules that need one (repeatable; recorded in the audit).")(f)
    return selector_options(f)


@cli.command()
@_run_options
@click.pass_obj
def plan(g: GlobalOptions, paths: tuple[str, ...], changed_files: str | None, git_diff: str | None,
         json_out: Path | None, markdown_out: Path | None, executor: str | None, max_workers: int | None,
         allow_destroy: bool, approved_by: tuple[str, ...]) -> int:
    """Plan the selected deployments (exit 0 even with changes; 4 when a policy rule refuses one)."""
    return run_cmd.run_terraform(g, read_selectors(paths, changed_files, git_diff), Action.PLAN,
                                 json_out=json_out, markdown_out=markdown_out, executor=executor,
                                 max_workers=max_workers, rollback=None, atomic=False, no_wait=False,
                                 allow_destroy=allow_destroy, approved_by=approved_by)


@cli.command()
@_run_options
@click.option("--rollback", type=click.Choice(["reapply", "state", "none"]), help="What to do when an apply fails.")
@click.option("--atomic", is_flag=True, help="Roll back every deployment of the run if any fails.")
@click.option("--no-wait", is_flag=True, help="Submit and return the run id (celery executor).")
@click.option("--from-plan", "from_plan", metavar="RUN_ID", default="",
              help="Apply exactly the plans that plan run saved (selectors narrow them down); a plan the state "
                   "moved away from, older than plan_max_age or applied already is stale (exit 1).")
@click.pass_obj
def apply(g: GlobalOptions, paths: tuple[str, ...], changed_files: str | None, git_diff: str | None,
          json_out: Path | None, markdown_out: Path | None, executor: str | None, max_workers: int | None,
          rollback: str | None, atomic: bool, no_wait: bool, allow_destroy: bool, approved_by: tuple[str, ...],
          from_plan: str) -> int:
    """Apply the selected deployments: lease, policy, backup, apply, automatic rollback on failure."""
    return run_cmd.run_terraform(g, read_selectors(paths, changed_files, git_diff), Action.APPLY,
                                 json_out=json_out, markdown_out=markdown_out, executor=executor,
                                 max_workers=max_workers, rollback=rollback, atomic=atomic, no_wait=no_wait,
                                 allow_destroy=allow_destroy, approved_by=approved_by, from_plan=from_plan)


@cli.command()
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report.")
@click.option("--markdown-out", type=click.Path(dir_okay=False, path_type=Path), help="Write the Markdown report.")
@click.option("--executor", type=click.Choice(["local", "celery"]), help="Default: celery when a broker is configured.")
@click.option("--max-workers", type=click.IntRange(min=1), help="Parallel deployments (local executor).")
@click.option("--remediate", is_flag=True, help="Re-apply every drifted deployment whose configuration is the one "
                                                "last applied ([tfo.drift] remediate for less).")
@click.option("--json", "as_json", is_flag=True, help="`tfo drift history`: machine-readable.")
@selector_options
@click.pass_obj
def drift(g: GlobalOptions, paths: tuple[str, ...], changed_files: str | None, git_diff: str | None,
          json_out: Path | None, markdown_out: Path | None, executor: str | None, max_workers: int | None,
          remediate: bool, as_json: bool) -> int:
    """Compare deployments with their last apply (exit 0 in sync, 5 drift found, 1 a remediation failed).

    `tfo drift history [DEPLOYMENT] [--json]`: when each deployment drifted and was fixed."""
    from cli.commands import drift as drift_cmd
    if paths[:1] == ("history",):
        if len(paths) > 2:
            raise click.UsageError("tfo drift history takes at most one DEPLOYMENT")
        return drift_cmd.show_history(g, paths[1] if len(paths) == 2 else "", as_json)
    return drift_cmd.run_drift(g, read_selectors(paths, changed_files, git_diff), json_out=json_out,
                               markdown_out=markdown_out, executor=executor, max_workers=max_workers,
                               remediate=remediate)


@cli.group()
def runs() -> None:
    """Recorded runs."""


@runs.command("show")
@click.argument("run_id")
@click.pass_obj
def runs_show(g: GlobalOptions, run_id: str) -> int:
    """Show a run's (redacted) summary."""
    from cli.commands import records
    return records.runs_show(g, run_id)


@runs.command("cancel")
@click.argument("run_id")
@click.pass_obj
def runs_cancel(g: GlobalOptions, run_id: str) -> int:
    """Cancel a run: its running deployments stop cleanly and are recorded cancelled."""
    from cli.commands import records
    return records.runs_cancel(g, run_id)


@cli.command()
@click.option("-Q", "--queues", default="", help="Extra queues to consume, comma separated (e.g. tfo.acct-a).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Worker processes (default: celery.worker_concurrency).")
@click.option("-n", "--hostname", default="tfo@%h", show_default=True, help="Worker node name.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker(g: GlobalOptions, queues: str, concurrency: int | None, hostname: str, loglevel: str) -> int:
    """Run a Celery worker for tfo on this host (same config on every host)."""
    from cli.commands import worker as worker_cmd
    return worker_cmd.run_worker(g, queues, concurrency, hostname, loglevel)


@cli.command()
@click.option("--schedule-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where beat keeps when each entry last ran (default: WORKDIR/beat-schedule).")
@click.option("-n", "--hostname", default="tfo-beat@%h", show_default=True, help="Node name of its drift consumer.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def beat(g: GlobalOptions, schedule_file: Path | None, hostname: str, loglevel: str) -> int:
    """Run drift detection on [tfo.drift] schedule (Celery beat); one drift run per firing across the cluster."""
    from cli.commands import worker as worker_cmd
    return worker_cmd.run_beat(g, schedule_file, hostname, loglevel)


@cli.command()
@click.option("--basic-auth", envvar="TFO_FLOWER_BASIC_AUTH", required=True, metavar="USER:PASSWORD",
              help="Required; also from TFO_FLOWER_BASIC_AUTH.")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True, type=int)
@click.pass_obj
def flower(g: GlobalOptions, basic_auth: str, address: str, port: int) -> int:
    """Run Flower for tfo's workers: basic auth on, /metrics behind it."""
    from cli.commands import worker as worker_cmd
    return worker_cmd.run_flower(g, basic_auth, address, port)


@cli.command()
@click.option("--listen", help="HOST:PORT (default: webhook.listen, 127.0.0.1:8080).")
@click.pass_obj
def webhook(g: GlobalOptions, listen: str | None) -> int:
    """Serve the GitHub webhook (push -> apply, pull_request -> plan) with waitress."""
    import os
    from dataclasses import replace

    from cli import webhook as webhook_app
    from orchestrator.errors import UserError

    cfg = g.load()
    if listen:
        cfg = replace(cfg, webhook=replace(cfg.webhook, listen=listen))
    secret = os.environ.get(cfg.webhook.secret_env, "")
    if not secret:
        raise UserError(f"tfo webhook needs the shared secret in ${cfg.webhook.secret_env}")
    if not cfg.webhook.served(cfg.namespace):
        raise UserError("tfo webhook needs [tfo.webhook] repository = \"OWNER/NAME\" (or TFO_WEBHOOK_REPOSITORY) "
                        "with its remote_url, or [tfo.webhook.repositories.\"OWNER/NAME\"] tables: the repositories "
                        "whose events it runs")
    if cfg.webhook.repository and not cfg.webhook.remote_url:
        raise UserError("tfo webhook needs [tfo.webhook] remote_url (or TFO_WEBHOOK_REMOTE_URL)")
    if not cfg.celery.broker_url:
        raise UserError("tfo webhook enqueues runs on Celery: set [tfo.celery] broker_url")
    webhook_app.serve(cfg, secret.encode())
    return 0


@cli.command()
@click.option("--listen", help="HOST:PORT (default: dashboard.listen, 127.0.0.1:8480).")
@click.option("--no-auth", is_flag=True, help="No authentication: only when listening on loopback.")
@click.pass_obj
def dashboard(g: GlobalOptions, listen: str | None, no_auth: bool) -> int:
    """Serve the dashboard: live and past runs from the store, /metrics for Prometheus (read-only)."""
    from cli import dashboard as dashboard_app

    cfg = g.load()
    dashboard_app.serve(cfg, listen or cfg.dashboard.listen, no_auth)
    return 0


@cli.group()
def backups() -> None:
    """Pre-apply state backups."""


@backups.command("list")
@click.argument("deployment")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def backups_list(g: GlobalOptions, deployment: str, as_json: bool) -> int:
    """List the backups of DEPLOYMENT (SERVICE/ACCOUNT/REGION/PROJECT)."""
    from cli.commands import records
    return records.backups_list(g, deployment, as_json)


@cli.command("unlock")
@click.argument("deployment")
@click.pass_obj
def unlock_cmd(g: GlobalOptions, deployment: str) -> int:
    """Release DEPLOYMENT from the pull request that reserved it by planning it (the webhook's reservations)."""
    from cli.commands import records
    return records.unlock(g, deployment)


@cli.command("rollback")
@click.argument("deployment")
@click.option("--to", "to", metavar="BACKUP_KEY", help="Backup to restore (default: the newest).")
@click.pass_obj
def rollback_cmd(g: GlobalOptions, deployment: str, to: str | None) -> int:
    """Restore DEPLOYMENT's state from a backup, by hand (the current state is backed up first)."""
    from cli.commands import records
    return records.rollback_to(g, deployment, to)


@cli.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("show")
@click.argument("run_id")
@click.option("--unredacted", is_flag=True, help="Print secrets too (the audit holds the full output).")
@click.pass_obj
def audit_show(g: GlobalOptions, run_id: str, unredacted: bool) -> int:
    """Print a run's audit records."""
    from cli.commands import records
    return records.audit_show(g, run_id, unredacted)


def _error_log_dirs(g: GlobalOptions | None, redactor: Redactor) -> Iterator[Path]:
    """Where a traceback may go, best first; adds tfo's own secrets to `redactor` when the config loads."""
    if g is not None:
        try:
            cfg = g.load()
        except Exception:  # noqa: S110 - the config may be what is broken: the fallbacks below serve
            pass
        else:
            redactor.add(os.environ.get(name, "") for name in cfg.secret_env_names)
            yield cfg.workdir_path
    yield Path.cwd() / ".tfo"
    yield Path(tempfile.gettempdir())


def _save_traceback(e: Exception, argv: list[str], redactor: Redactor) -> tuple[Path | None, str]:
    """Write the traceback of `e` to a new owner-only file: (its path, "") or (None, why not)."""
    text = (f"tfo {__version__} internal error at {datetime.now(UTC).isoformat()}\n"
            f"command: {redactor.redact(' '.join(['tfo', *argv]))}\n"
            f"cwd: {Path.cwd()}\npython: {sys.version.split()[0]} on {platform.platform()}\n\n"
            + "".join(traceback.format_exception(e)))
    why = "no directory to write it to"
    for directory in _error_log_dirs(_invoked, redactor):
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp: a new file (never one that is there), 0600: a traceback may show values
            fd, name = tempfile.mkstemp(dir=directory, prefix=f"tfo-error-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-",
                                        suffix=".log")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return Path(name), ""
        except OSError as err:
            why = f"{directory}: {err.strerror or err}"
    return None, why


def _internal_error(e: Exception, argv: list[str]) -> int:
    """A bug or an unexpected failure of the platform: one redacted line, the traceback in a file, exit 3."""
    redactor = Redactor()
    where, why = _save_traceback(e, argv, redactor)
    message = " ".join(redactor.redact(str(e)).split())
    head = f"{type(e).__name__}: {message}" if message else type(e).__name__
    tail = f"traceback in {where}" if where else f"traceback not saved ({why})"
    click.echo(f"tfo: internal error: {head}; {tail}", err=True)
    return EXIT_PLATFORM


def main(argv: list[str] | None = None) -> int:
    global _invoked
    _invoked = None
    args = sys.argv[1:] if argv is None else list(argv)
    keep_private()  # before any secret is read: terraform and what it starts must not read ours
    try:
        rv = cli.main(args=args, prog_name="tfo", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return EXIT_INVALID_INPUT
    except click.exceptions.Abort as e:
        # click turns a KeyboardInterrupt inside a command into Abort (and has printed a newline)
        if isinstance(e.__cause__, KeyboardInterrupt):
            click.echo("tfo: interrupted", err=True)
            return EXIT_INTERRUPTED
        click.echo("tfo: aborted", err=True)
        return EXIT_INVALID_INPUT
    except TfoError as e:
        kind = "invalid input" if e.exit_code == EXIT_INVALID_INPUT else "cannot run"
        click.echo(f"tfo: {kind}: {Redactor().redact(str(e))}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("tfo: interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit:
        # click answers a reader that went away (`tfo discover --json | head`) with exit 1, which here
        # means "a deployment failed"; say what a shell says of a process stopped by SIGPIPE instead.
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):  # click's wrapper once the pipe broke
            return EXIT_BROKEN_PIPE
        raise
    except BrokenPipeError:  # a write outside click's own handling: the same, and later writes go nowhere
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:
        return _internal_error(e, args)
    return int(rv or 0)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
