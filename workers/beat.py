"""`tfo beat`: Celery beat firing `[tfo.drift] schedule`, and the scheduled drift run it starts.

Beat only sends a message; the drift run is a producer's work (it reads the repository, starts the
detection run, which fans out to the workers like any run, then remediation, history and alerts), so
`tfo beat` consumes its own queue, `tfo.beat`, in the same process as the beat: the repository and the
config are on the beat's host, and no deployment worker is kept busy waiting for a run.

What is drifted: with `[tfo.webhook]` repositories, each one's apply branch head (from a mirror of the
beat's own), each under its namespace; without, the working tree the beat was started in.

Several beats started by mistake each send every firing; one drift run per firing happens all the same:
the run takes the namespace's drift lease (one drift run at a time, scheduled or by hand) without waiting,
then records the firing ("slot") it runs for in the store, and a message for a slot already run (or one
arriving while another drift run holds the lease) is answered "skipped", with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery.schedules import crontab

from orchestrator import drift_run, git, notify, schedule, service
from orchestrator.cancel import CancelToken
from orchestrator.config import ServedRepository, TfoConfig, checkout_config
from orchestrator.discovery import discover
from orchestrator.errors import EXIT_PLATFORM, ConfigError, SelectorError, TfoError
from orchestrator.models import DeploymentSpec, RunResult
from orchestrator.procs import host_name
from orchestrator.progress import Progress
from orchestrator.redaction import Redactor
from orchestrator.runtime import Runtime, build_runtime
from orchestrator.sharding import build_deployments

BEAT_QUEUE = "tfo.beat"
DRIFT_ENTRY = "tfo.drift"
FIRING_EXPIRES_S = 1800
log = logging.getLogger("tfo.beat")


def celery_schedule(parsed: schedule.CronSchedule) -> crontab:
    """Celery's crontab for a parsed schedule: the expanded sets, so Celery cannot read the text otherwise
    ('*' stays '*' where Celery takes a shorter path for it)."""
    fields = parsed.text.split()

    def pick(text: str, values: frozenset[int]) -> str | set[int]:
        return "*" if text == "*" else set(values)

    return crontab(minute=pick(fields[0], parsed.minutes), hour=pick(fields[1], parsed.hours),
                   day_of_month=pick(fields[2], parsed.days_of_month), month_of_year=pick(fields[3], parsed.months),
                   day_of_week=pick(fields[4], parsed.days_of_week))


def beat_schedule(cfg: TfoConfig) -> dict[str, dict[str, Any]]:
    parsed = schedule.parse(cfg.drift.schedule)
    # A firing nobody took within FIRING_EXPIRES_S (every beat consumer down, or its message redelivered
    # hours later after a lost consumer) is dropped: the next firing runs on time instead of this one late.
    return {DRIFT_ENTRY: {"task": "tfo.drift_scheduled", "schedule": celery_schedule(parsed),
                          "options": {"queue": BEAT_QUEUE, "expires": FIRING_EXPIRES_S}}}


# The cancel tokens of the drift runs this process is running: a stopping `tfo beat` stops following them
# (their runs go on in the workers) and records the firing as interrupted, instead of being killed mid-run.
_running: set[CancelToken] = set()
_running_lock = threading.Lock()


def stop_following(reason: str) -> None:
    with _running_lock:
        for token in _running:
            token.cancel(reason)


def run_scheduled_drift(cfg: TfoConfig, now: datetime | None = None) -> dict[str, Any]:
    """The drift runs of the schedule's latest firing: of each repository the webhook serves, at its apply
    branch's head (the GitOps loop: what was merged is what should be deployed), or of the working tree.
    One repository's failure is its answer; the others are drifted all the same."""
    slot = schedule.parse(cfg.drift.schedule).previous(now or datetime.now(UTC))
    served = cfg.webhook.served(cfg.namespace)
    if not served:
        return _drift_of_slot(cfg, cfg.namespace, slot, lambda _: nullcontext(cfg))
    return {"slot": slot.isoformat(), "repositories": {
        r.name: _drift_of_slot(cfg, r.namespace, slot, partial(_apply_branch_head, cfg, r))
        for _, r in sorted(served.items())}}


@contextmanager
def _apply_branch_head(cfg: TfoConfig, served: ServedRepository, redactor: Redactor) -> Iterator[TfoConfig]:
    """A checkout of the apply branch's head from a mirror of the beat's own (the webhook's is not shared:
    two fetches at once are not safe), with the server's settings over the repository's."""
    mirror = cfg.resolve(served.mirror + ".beat")
    token = notify.git_token(cfg, served.name)
    redactor.add([token])
    git.mirror_sync(served.remote_url, mirror, token)
    branch = cfg.webhook.apply_branch
    sha = git.branch_head(mirror, branch)
    if not sha:
        raise SelectorError(f"{served.remote_url} has no branch {branch!r} (webhook.apply_branch) to drift")
    checkout = mirror.parent / "beat-checkouts" / f"{served.namespace or 'default'}-{sha[:12]}"
    shutil.rmtree(checkout, ignore_errors=True)
    git.checkout(mirror, sha, checkout)
    try:
        run_cfg, pinned = checkout_config(cfg, checkout, served.namespace)
        if pinned and pinned != served.namespace:
            raise ConfigError(f"{served.name}@{sha[:12]}: tfo.toml pins namespace {pinned!r}, but its state is "
                              f"kept under {served.namespace!r}")
        log.info("drift of %s at %s (%s)", served.name, sha[:12], branch)
        yield run_cfg
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


Source = Callable[[Redactor], AbstractContextManager[TfoConfig]]


def _drift_of_slot(cfg: TfoConfig, namespace: str, slot: datetime, source: Source) -> dict[str, Any]:
    """One namespace's drift run for this firing, unless another run has it (or a later one). Never raises:
    a failure is the answer (the beat's log, the task's result in Flower) and the firing's record."""
    token, progress = CancelToken(), Progress()
    answer: dict[str, Any] = {"slot": slot.isoformat(), "namespace": namespace}
    with _running_lock:
        _running.add(token)
    rt: Runtime | None = None
    try:
        rt = build_runtime(cfg, token, progress)
        # No waiting: a drift run in progress (scheduled or by hand) is this firing's run.
        owner = f"drift-beat-{host_name()}-{os.getpid()}"
        with drift_run.exclusive(rt.leases, namespace, owner, 0) as got:
            if not got.acquired:
                return _skipped(answer, "another drift run holds the drift lease: "
                                        f"{got.holder.describe() if got.holder else '?'}")
            taken = drift_run.slot_taken(rt.store, namespace, slot)
            if taken is not None:
                how = "was run" if taken.finished else "was started (and not finished)"
                return _skipped(answer, f"the firing of {taken.slot} {how} by {taken.run_owner} on {taken.host}")
            record = drift_run.take_slot(rt.store, namespace, slot, owner, host_name())
            code, counts = EXIT_PLATFORM, {}  # what an exception leaves
            try:
                outcome = _drift(rt, slot, source, token, progress, answer)
                if isinstance(outcome, drift_run.DriftOutcome):
                    code, counts = outcome.exit_code(), outcome.counts()
                    if outcome.not_remediated:
                        answer["not_remediated"] = dict(outcome.not_remediated)
                else:
                    code = outcome
                    if token.cancelled:
                        answer["error"] = f"interrupted: {token.reason}; its runs go on in the workers"
            except Exception as e:  # said in the answer and the firing's record; the next firing tries again
                code = e.exit_code if isinstance(e, TfoError) else EXIT_PLATFORM
                answer["error"] = f"{type(e).__name__}: {progress.redactor.redact(str(e))}"[:1000]
            finally:
                drift_run.finish_slot(rt.store, namespace, record, code, counts)
            if "error" in answer:
                log.error("drift for %s failed: %s", slot.isoformat(), answer["error"])
            log.info("drift for %s: exit %d, %s", slot.isoformat(), code, counts)
            return {**answer, "exit_code": code, "counts": counts}
    except Exception as e:  # the store or the lease backend failed: this firing is not run here
        answer["error"] = f"{type(e).__name__}: {progress.redactor.redact(str(e))}"[:1000]
        log.error("drift for %s not run: %s", slot.isoformat(), answer["error"])
        return {**answer, "exit_code": EXIT_PLATFORM}
    finally:
        with _running_lock:
            _running.discard(token)
        progress.close()
        if rt is not None:
            rt.leases.close()


def _skipped(answer: dict[str, Any], reason: str) -> dict[str, Any]:
    log.info("drift for %s skipped: %s", answer["slot"], reason)
    return {**answer, "skipped": reason}


def _drift(rt: Runtime, slot: datetime, source: Source, token: CancelToken, progress: Progress,
           answer: dict[str, Any]) -> drift_run.DriftOutcome | int:
    from workers.producer import CeleryExecutor

    run_ids: list[str] = answer.setdefault("runs", [])
    with source(progress.redactor) as run_cfg:
        runner = CeleryExecutor(run_cfg, rt.store, progress)

        def launch(chosen: list[DeploymentSpec], request: service.RunRequest) -> RunResult | int:
            run = service.start(run_cfg, rt.store, chosen, request, runner)
            run_ids.append(run.run_id)
            log.info("drift for %s: run %s, %s of %d deployment(s)", slot.isoformat(), run.run_id,
                     request.action.value, len(chosen))
            result = runner.follow(run, lambda: token.cancelled)
            return result if result is not None else EXIT_PLATFORM

        specs = list(build_deployments(run_cfg, discover(run_cfg)).specs)
        for s in specs:
            progress.redactor.add_sensitive_variables(s.variables, s.sensitive_variables)
        return drift_run.detect_and_remediate(run_cfg, rt.store, specs, run_cfg.drift.remediate, launch,
                                              lambda: token.cancelled, actor="tfo beat")
