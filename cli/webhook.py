"""The GitHub webhook: a small Flask app served by waitress (`tfo webhook`).

Verify (HMAC-SHA256, constant time) -> size and replay checks -> spool the job to disk (fsync) ->
answer 202 with a run id; a single background thread then syncs the mirror, checks out the event's
commit, computes the changed files, validates, bundles and enqueues the run on Celery, and drops the
spooled job. A webhook that dies in between runs its spooled jobs when it starts again. Nothing
secret is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from orchestrator import git, notify
from orchestrator.config import TfoConfig, load_config
from orchestrator.discovery import discover
from orchestrator.errors import TfoError, ValidationError
from orchestrator.finalize import run_summary_key
from orchestrator.models import Action, RunOptions
from orchestrator.names import unsafe_name_reason
from orchestrator.redaction import Redactor
from orchestrator.runs import new_run_id, prepare_run
from orchestrator.sharding import build_deployments
from orchestrator.store import open_store

log = logging.getLogger("tfo.webhook")
PR_ACTIONS = {"opened", "synchronize", "reopened"}
ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Job:
    """One accepted event, turned into a run by the background thread."""

    run_id: str
    action: Action
    repo: str  # owner/name
    sha: str
    base: str  # diff base: the push's `before` or the PR's base sha ("" = every deployment)
    pr: int | None
    delivery: str
    sender: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(**{**d, "action": Action(d["action"])})


class Deliveries:
    """Delivery ids already seen: in Redis (shared by every webhook replica) when configured."""

    def __init__(self, redis_url: str, window_s: int) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._redis: Any = None
        if redis_url.startswith(("redis://", "rediss://")):
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def first_time(self, delivery: str) -> bool:
        if self._redis is not None:
            return bool(self._redis.set(self._key(delivery), "1", nx=True, ex=self.window_s))
        with self._lock:
            now = time.time()
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if delivery in self._seen:
                return False
            self._seen[delivery] = now + self.window_s
            return True

    def forget(self, delivery: str) -> None:
        """An event that could not be accepted after all: GitHub's redelivery must not be a duplicate."""
        if self._redis is not None:
            self._redis.delete(self._key(delivery))
            return
        with self._lock:
            self._seen.pop(delivery, None)

    @staticmethod
    def _key(delivery: str) -> str:
        return f"tfo:webhook:delivery:{delivery}"


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def job_for(event: str, payload: dict[str, Any], cfg: TfoConfig, delivery: str) -> tuple[Job | None, str]:
    """The run an event asks for, or None and why it is ignored."""
    repo = str(payload.get("repository", {}).get("full_name", ""))
    sender = str(payload.get("sender", {}).get("login", ""))
    if event == "push":
        ref = str(payload.get("ref", ""))
        if ref != f"refs/heads/{cfg.webhook.apply_branch}":
            return None, f"push to {ref} ignored: only {cfg.webhook.apply_branch} is applied"
        if payload.get("deleted"):
            return None, "branch deletion ignored"
        before = str(payload.get("before", ""))
        return Job(new_run_id(), Action.APPLY, repo, str(payload.get("after", "")),
                   "" if before == ZERO_SHA else before, None, delivery, sender), ""
    if event == "pull_request":
        action = str(payload.get("action", ""))
        if action not in PR_ACTIONS:
            return None, f"pull_request {action} ignored"
        pr = payload.get("pull_request", {})
        return Job(new_run_id(), Action.PLAN, repo, str(pr.get("head", {}).get("sha", "")),
                   str(pr.get("base", {}).get("sha", "")), int(payload.get("number", 0)), delivery, sender), ""
    return None, ""


class RunStarter:
    """Turns jobs into runs, one at a time (the mirror is not safe for concurrent fetches).

    Each accepted job is spooled to disk before the event is answered and dropped once its run is
    enqueued or recorded as not started, so a job outlives a crash of the webhook in between.
    """

    def __init__(self, server_cfg: TfoConfig, submit: Callable[[TfoConfig, Any], Any] | None = None) -> None:
        self.cfg = server_cfg
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfo-webhook-run")
        self.submit = submit
        self.token = os.environ.get(server_cfg.github.token_env, "")
        self.spool = server_cfg.resolve(server_cfg.webhook.spool_dir)

    def start(self, job: Job) -> None:
        """Spool the job (raises OSError when it cannot), then start it in the background."""
        self._spool(job, "accepted")
        self.pool.submit(self._safely, job)

    def resume_spooled(self) -> list[str]:
        """Start the jobs a previous webhook process accepted and never enqueued; their run ids."""
        resumed = []
        for path in sorted(self.spool.glob("*.json")):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                job = Job.from_dict(entry["job"])
            except (OSError, ValueError, TypeError, KeyError) as e:
                log.error("spooled job %s unreadable (%s): moved aside to %s.bad", path.name, type(e).__name__, path)
                with contextlib.suppress(OSError):
                    path.replace(path.with_name(path.name + ".bad"))
                continue
            if entry.get("stage") == "enqueueing":
                # Died between handing the run to the broker and dropping this file: the run may well
                # be queued, and enqueueing it twice would run it twice. Say so; never guess.
                log.warning("run %s (%s of %s@%s) was being enqueued when the webhook stopped; not enqueued "
                            "again: see `tfo runs show %s`", job.run_id, job.action.value, job.repo,
                            job.sha[:12], job.run_id)
                self._unspool(job)
                continue
            log.info("resuming run %s (%s of %s@%s), accepted before the webhook restarted", job.run_id,
                     job.action.value, job.repo, job.sha[:12])
            self.pool.submit(self._safely, job)
            resumed.append(job.run_id)
        return resumed

    def _spool_path(self, job: Job) -> Path:
        return self.spool / f"{job.run_id}.json"

    def _spool(self, job: Job, stage: str) -> None:
        self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._spool_path(job)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"stage": stage, "job": job.to_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def _unspool(self, job: Job) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._spool_path(job).unlink()

    def _safely(self, job: Job) -> None:
        try:
            self.run(job)
        except Exception as e:  # a background job must record its failure, not die silently
            log.error("run %s for %s@%s failed to start: %s", job.run_id, job.repo, job.sha[:12],
                      Redactor([self.token] if self.token else []).redact(f"{type(e).__name__}: {e}"))
            self._record_failure(job, "failed", f"{type(e).__name__}: {e}")
        self._unspool(job)  # enqueued, or recorded as not started: nothing left to resume

    def _record_failure(self, job: Job, status: str, error: str) -> None:
        """A run that never started still gets a summary, so `tfo runs show` and clients see why."""
        with contextlib.suppress(TfoError):
            open_store(self.cfg).put_json(run_summary_key(job.run_id), {
                "run_id": job.run_id, "action": job.action.value, "status": status,
                "error": Redactor([self.token] if self.token else []).redact(error), "deployments": []})

    def run(self, job: Job) -> None:
        w = self.cfg.webhook
        mirror = self.cfg.resolve(w.mirror_dir)
        git.mirror_sync(w.remote_url, mirror, self.token)
        checkout = mirror.parent / "checkouts" / job.run_id
        shutil.rmtree(checkout, ignore_errors=True)  # left by a webhook that died while running this job
        git.checkout(mirror, job.sha, checkout)
        try:
            self._start(job, checkout)
        finally:
            shutil.rmtree(checkout, ignore_errors=True)

    def _start(self, job: Job, checkout: Path) -> None:
        repo_cfg_file = checkout / "tfo.toml"
        repo_cfg = load_config(repo_cfg_file if repo_cfg_file.is_file() else None, repo_root=checkout, environ={})
        # The repository decides paths and policy; the server decides where things run and live.
        store = replace(self.cfg.store, path=str(self.cfg.resolve(self.cfg.store.path)))
        cfg = replace(repo_cfg, store=store, celery=self.cfg.celery, github=self.cfg.github,
                      webhook=self.cfg.webhook, workdir=str(self.cfg.workdir_path),
                      plugin_cache_dir=self.cfg.plugin_cache_dir, terraform_bin=self.cfg.terraform_bin)
        target = {"github": {"repo": job.repo, "sha": job.sha, "pr": job.pr}}
        if job.base:
            changed = "\n".join(f"{c.status}\t{c.path}" for c in git.changed_paths(checkout, f"{job.base}..{job.sha}"))
            found = discover(cfg, changed_files=changed)
        else:
            found = discover(cfg)
        try:
            specs = list(build_deployments(cfg, found).specs)
        except ValidationError as e:
            notify.post_invalid(cfg, target, job.action.value, job.run_id, list(e.problems))
            self._record_failure(job, "invalid", f"{len(e.problems)} problem(s): " + "; ".join(map(str, e.problems)))
            return
        run = prepare_run(cfg, open_store(cfg), specs, RunOptions(job.action, cfg.rollback),
                          run_id=job.run_id, who=f"github:{job.sender}", notify=target)
        notify.post_pending(cfg, run)
        submit = self.submit
        if submit is None:
            from workers import producer

            submit = producer.submit
        self._spool(job, "enqueueing")
        submit(cfg, run)
        log.info("run %s: %s of %s@%s, %d deployment(s)", run.run_id, job.action.value, job.repo, job.sha[:12],
                 len(specs))


def create_app(cfg: TfoConfig, secret: bytes, starter: RunStarter) -> Flask:
    app = Flask("tfo-webhook")
    app.config["MAX_CONTENT_LENGTH"] = cfg.webhook.max_body_bytes
    deliveries = Deliveries(cfg.celery.broker_url, cfg.webhook.replay_window_s)

    def answer(code: int, /, **body: Any) -> tuple[Response, int]:
        return jsonify(body), code

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return answer(200, status="ok")

    @app.errorhandler(413)
    def too_large(_: Exception) -> tuple[Response, int]:
        return answer(413, error=f"body larger than {cfg.webhook.max_body_bytes} bytes")

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        length = request.content_length
        if length is not None and length > cfg.webhook.max_body_bytes:
            return answer(413, error=f"body larger than {cfg.webhook.max_body_bytes} bytes")
        body = request.get_data(cache=True)
        if not verify_signature(secret, body, request.headers.get("X-Hub-Signature-256")):
            return answer(401, error="missing or bad X-Hub-Signature-256")
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        if not delivery or unsafe_name_reason(delivery.replace("-", "")[:60]) is not None:
            return answer(400, error="missing or malformed X-GitHub-Delivery")
        if event == "ping":
            return answer(200, status="pong")
        if event not in ("push", "pull_request"):
            return answer(400, error=f"unsupported event {event[:40]!r}: tfo takes push and pull_request")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return answer(400, error="body is not JSON")
        if not isinstance(payload, dict):
            return answer(400, error="body is not a JSON object")
        job, why = job_for(event, payload, cfg, delivery)
        if job is None:
            return answer(200, status="ignored", reason=why)
        if not job.sha or len(job.sha) != 40 or not all(c in "0123456789abcdef" for c in job.sha):
            return answer(400, error="event has no valid commit sha")
        try:
            first = deliveries.first_time(delivery)
        except Exception as e:
            log.error("delivery %s refused: replay store unreachable (%s)", delivery, type(e).__name__)
            return answer(503, error="replay protection unavailable (broker unreachable); redeliver the event later")
        if not first:
            return answer(200, status="duplicate", delivery=delivery)
        try:
            starter.start(job)
        except OSError as e:
            log.error("delivery %s refused: cannot spool the job in %s (%s)", delivery, starter.spool, e.strerror)
            try:
                deliveries.forget(delivery)  # so that GitHub's redelivery is taken
            except Exception as forget_error:  # the replay store is away too: the redelivery reads as a replay
                log.error("delivery %s not forgotten (%s): redeliver with a new delivery id", delivery,
                          type(forget_error).__name__)
            return answer(503, error="cannot accept the event now (webhook spool not writable); redeliver it later")
        return answer(202, status="accepted", run_id=job.run_id, action=job.action.value)

    return app


def serve(cfg: TfoConfig, secret: bytes) -> None:
    from waitress import serve as waitress_serve

    host, _, port = cfg.webhook.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    starter = RunStarter(cfg)
    starter.resume_spooled()
    waitress_serve(create_app(cfg, secret, starter), host=host or "127.0.0.1", port=int(port),
                   threads=4, ident="tfo-webhook")
