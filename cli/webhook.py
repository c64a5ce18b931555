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
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from orchestrator import git, keys, notify, reservations, service
from orchestrator.config import ServedRepository, TfoConfig, checkout_config
from orchestrator.discovery import discover
from orchestrator.errors import EnqueueUncertain, Problem, SelectorError, TfoError, ValidationError
from orchestrator.fsutil import atomic_write
from orchestrator.github import WRITE_ROLES, GitHubError
from orchestrator.models import Action, RollbackStrategy, RunResult, RunSpec, RunStatus
from orchestrator.names import unsafe_name_reason
from orchestrator.redaction import Redactor
from orchestrator.service import RunRequest, new_run_id
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
    # `/tfo plan` on a pull request: its head and base are looked up when the job runs; `sha` is then
    # the commit the commenter named, or "" for the current head of a trusted pull request.
    lookup: bool = False
    # A pull request's plan resumed after a restart: its trust is checked again (the policy may have
    # been tightened, or the job accepted by a version without one).
    recheck: bool = False
    # `/tfo apply [paths]`: the deployments it names (tfvars paths or ids; none: every planned one), and
    # the comment that asked, read back from GitHub before anything runs.
    paths: tuple[str, ...] = ()
    comment_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(**{**d, "action": Action(d["action"]), "paths": tuple(d.get("paths") or ())})

    @property
    def target(self) -> dict[str, Any]:
        """Where the run reports back (`RunSpec.notify`)."""
        return {"github": {"repo": self.repo, "sha": self.sha, "pr": self.pr}}


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


@dataclass(frozen=True)
class Refusal:
    """A pull request tfo does not plan (or apply) on its own: said on GitHub (status and comment), nothing runs."""

    repo: str
    sha: str
    pr: int
    reason: str
    action: str = "plan"


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Release:
    """A pull request merged or closed: the deployments reserved for it are free again."""

    repo: str
    pr: int


# The whole commit hash: a prefix could be matched by a second commit the pull request's author made.
PLAN_COMMAND = re.compile(r"/tfo plan(?:[ \t]+([0-9a-f]{40}))?((?:[ \t]+[A-Za-z0-9_.@/-]{1,200}){0,50})[ \t]*")
# `/tfo apply [tfvars path or deployment id ...]`
APPLY_COMMAND = re.compile(r"/tfo apply((?:[ \t]+[A-Za-z0-9_.@/-]{1,200}){0,50})[ \t]*")


def untrusted_reason(cfg: TfoConfig, repo: str, head_repo: str, association: str) -> str:
    """Why a pull request is not planned on its own, or "" when it is."""
    w = cfg.webhook
    if head_repo.lower() != repo.lower() and not w.plan_forks:
        return f"it comes from a fork ({head_repo or 'a deleted repository'})"
    if association not in w.pr_authors:
        return f"its author's association with {repo} is {association or 'unknown'}"
    return ""


def explain_refusal(cfg: TfoConfig, repo: str, sha: str, reason: str) -> str:
    allowed = ", ".join(cfg.webhook.pr_authors)
    return (f"## tfo plan: not run 🔒\n\ntfo did not plan commit `{sha[:12]}` because {reason}.\n\n"
            f"A plan runs the pull request's code (providers, external data sources, `file()`) with the "
            f"deployment accounts' credentials, so tfo plans on its own only pull requests from branches of "
            f"`{repo}` opened by its {allowed}.\n\nAfter reviewing the code, someone with write access to "
            f"`{repo}` (not the pull request's author) can start the plan of exactly this commit by "
            f"commenting:\n\n```\n/tfo plan {sha}\n```\n")


def _names_a_deployment(word: str) -> bool:
    """A tfvars path or a deployment id (SERVICE/ACCOUNT/...): anything else in a command is a typo."""
    return ".." not in word.split("/") and ("/" in word or word.endswith((".tfvars", ".tfvars.json")))


def explain_apply_refusal(cfg: TfoConfig, repo: str, sha: str, reason: str) -> str:
    return (f"## tfo apply: not run 🔒\n\ntfo did not apply commit `{sha[:12]}` because {reason}.\n\n"
            f"{apply_hint(cfg, sha)}\n")


def apply_hint(cfg: TfoConfig, sha: str) -> str:
    """What applies a pull request's plans, as its report says it."""
    w = cfg.webhook
    merge = f"merging it into `{w.apply_branch}` applies the merge commit" if w.apply_on in ("merge", "both") else ""
    if w.apply_on == "merge":
        return f"**To apply:** {merge}."
    needs = ["someone with write access to the repository comments `/tfo apply` (or `/tfo apply PATH...`)"]
    if "approved" in w.apply_requirements and w.approvals:
        needs.append(f"{w.approvals} approving review(s) of `{sha[:12]}` by others than its author")
    if "mergeable" in w.apply_requirements:
        needs.append("GitHub sees no merge conflict")
    if "undiverged" in w.apply_requirements:
        needs.append("the base branch's latest commit is in the pull request")
    text = "**To apply the plans above:** " + "; ".join(needs) + "."
    return text + (f" Or {merge}." if merge else "")


def job_for(event: str, payload: dict[str, Any], cfg: TfoConfig, delivery: str) -> Job | Refusal | Ignored | Release:
    """What an event asks for: a run, a refusal to explain on GitHub, or nothing (and why)."""
    repo = str((payload.get("repository") or {}).get("full_name", ""))
    sender = str((payload.get("sender") or {}).get("login", ""))
    served = cfg.webhook.served(cfg.namespace)
    if repo.lower() not in served:
        names = ", ".join(sorted((s.name for s in served.values()), key=str.lower))
        return Ignored(f"events of {repo or 'an unnamed repository'} are not handled here "
                       f"(this webhook serves {names})")
    if event == "push":
        ref = str(payload.get("ref", ""))
        if ref != f"refs/heads/{cfg.webhook.apply_branch}":
            return Ignored(f"push to {ref} ignored: only {cfg.webhook.apply_branch} is applied")
        if payload.get("deleted"):
            return Ignored("branch deletion ignored")
        if cfg.webhook.apply_on == "comment":
            return Ignored("pushes are not applied here (webhook.apply_on = comment): `/tfo apply` on a pull "
                           "request is")
        before = str(payload.get("before", ""))
        return Job(new_run_id(), Action.APPLY, repo, str(payload.get("after", "")),
                   "" if before == ZERO_SHA else before, None, delivery, sender)
    if event == "pull_request":
        action = str(payload.get("action", ""))
        if action == "closed":
            return Release(repo, int(payload.get("number") or (payload.get("pull_request") or {}).get("number") or 0))
        if action not in PR_ACTIONS:
            return Ignored(f"pull_request {action} ignored")
        pr = payload.get("pull_request") or {}
        head = pr.get("head") or {}
        number = int(payload.get("number") or pr.get("number") or 0)
        sha = str(head.get("sha", ""))
        why = untrusted_reason(cfg, repo, str((head.get("repo") or {}).get("full_name", "")),
                               str(pr.get("author_association", "")))
        if why:
            return Refusal(repo, sha, number, why)
        return Job(new_run_id(), Action.PLAN, repo, sha, str((pr.get("base") or {}).get("sha", "")), number,
                   delivery, sender)
    if event == "issue_comment":
        issue, comment = payload.get("issue") or {}, payload.get("comment") or {}
        if payload.get("action") != "created" or issue.get("pull_request") is None:
            return Ignored("only new comments on pull requests are read")
        first_line = str(comment.get("body", "")).strip().splitlines()[:1]
        command = PLAN_COMMAND.fullmatch(first_line[0]) if first_line else None
        apply = APPLY_COMMAND.fullmatch(first_line[0]) if first_line and command is None else None
        if command is None and apply is None:
            return Ignored("not a tfo command")
        association = str(comment.get("author_association", ""))
        what = "plan" if apply is None else "apply"
        if association not in cfg.webhook.pr_authors:
            return Ignored(f"/tfo {what} by {sender} ignored: their association with {repo} is {association}")
        if apply is not None:
            paths = tuple(apply.group(1).split())
            if not all(_names_a_deployment(p) for p in paths):
                return Ignored("/tfo apply: name tfvars paths or deployment ids")
            return Job(new_run_id(), Action.APPLY, repo, "", "", int(issue.get("number") or 0), delivery, sender,
                       lookup=True, paths=paths, comment_id=int(comment.get("id") or 0))
        assert command is not None
        paths = tuple(command.group(2).split())
        if not all(_names_a_deployment(p) for p in paths):
            return Ignored("/tfo plan: name the whole commit hash, then tfvars paths or deployment ids")
        return Job(new_run_id(), Action.PLAN, repo, command.group(1) or "", "", int(issue.get("number") or 0),
                   delivery, sender, lookup=True, paths=paths, comment_id=int(comment.get("id") or 0))
    return Ignored(f"{event} events are not handled (tfo takes push, pull_request and issue_comment)")


class RunStarter:
    """Turns jobs into runs, one at a time (the mirror is not safe for concurrent fetches).

    Each accepted job is spooled to disk before the event is answered and dropped once its run is
    enqueued or recorded as not started, so a job outlives a crash of the webhook in between.
    """

    def __init__(self, server_cfg: TfoConfig, submit: Callable[[TfoConfig, Any], Any] | None = None,
                 deliveries: Deliveries | None = None) -> None:
        self.cfg = server_cfg
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfo-webhook-run")
        # Refusals are posted on a pool of their own, once per pull request and commit, with a short
        # rate-limit wait: a stream of fork pushes must not hold up the runs behind it.
        self.notices = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfo-webhook-notice")
        self._refused: dict[tuple[str, int, str], None] = {}
        self.submit = submit
        self.token = os.environ.get(server_cfg.github.token_env, "")
        self.secrets = {self.token} - {""}  # what never reaches a log or a comment
        self.spool = server_cfg.resolve(server_cfg.webhook.spool_dir)
        self.deliveries = deliveries or Deliveries(server_cfg.celery.broker_url, server_cfg.webhook.replay_window_s)

    def refuse(self, refusal: Refusal) -> None:
        """Say on the pull request why it was not planned (in the background: GitHub may be slow)."""
        key = (refusal.repo.lower(), refusal.pr, refusal.sha)
        if key in self._refused:
            return
        self._refused[key] = None
        while len(self._refused) > 1000:
            del self._refused[next(iter(self._refused))]
        self.notices.submit(self._post_refusal, refusal, 60)

    def _post_refusal(self, r: Refusal, max_wait_s: float | None = None) -> None:
        client = notify.github_client(self.cfg, max_wait_s)
        explain = explain_refusal if r.action == "plan" else explain_apply_refusal
        done = "planned" if r.action == "plan" else "applied"
        error = notify.post_not_run(self.cfg, {"github": {"repo": r.repo, "sha": r.sha, "pr": r.pr}}, r.action,
                                    explain(self.cfg, r.repo, r.sha, r.reason), f"not {done}: {r.reason}", client)
        log.info("pull request %s#%d (%s) not %s: %s", r.repo, r.pr, r.sha[:12], done, r.reason)
        if error:
            log.error("pull request %s#%d: the refusal could not be posted: %s", r.repo, r.pr, error)

    def release(self, r: Release) -> None:
        """Free what a merged or closed pull request reserved (in the background: the store may be slow)."""
        self.notices.submit(self._release, r)

    def _release(self, r: Release) -> None:
        try:
            dropped = reservations.release(open_store(self.cfg), r.repo, r.pr)
        except Exception as e:  # said in the log; `tfo unlock` frees them by hand
            log.error("pull request %s#%d: its reservations could not be released: %s", r.repo, r.pr,
                      type(e).__name__)
            return
        if dropped:
            log.info("pull request %s#%d closed: %d reservation(s) released", r.repo, r.pr, len(dropped))

    def _still_open(self, holder: reservations.Reservation) -> bool:
        client = notify.github_client(self.cfg)
        if client is None:
            return True
        try:
            return client.pull_request(holder.repo, holder.pr).state == "open"
        except GitHubError:
            return True  # cannot tell: the reservation stands

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
            if job.pr is not None and not job.lookup:
                job = replace(job, recheck=True)
            self.pool.submit(self._safely, job)
            resumed.append(job.run_id)
        return resumed

    def _spool_path(self, job: Job) -> Path:
        return self.spool / f"{job.run_id}.json"

    def _spool(self, job: Job, stage: str) -> None:
        self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self._spool_path(job), json.dumps({"stage": stage, "job": job.to_dict()}))

    def _unspool(self, job: Job) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._spool_path(job).unlink()

    def _safely(self, job: Job) -> None:
        try:
            self.run(job)
        except EnqueueUncertain as e:
            # Some tasks may be on the broker and will run: no "failed" summary, no "nothing ran",
            # and the delivery id stays taken, so a Redeliver cannot start the same run twice.
            error = Redactor(list(self.secrets)).redact(str(e))
            log.error("run %s for %s@%s: %s; see `tfo runs show %s`", job.run_id, job.repo, job.sha[:12], error,
                      job.run_id)
            self._post_not_started(job, error, "may have started ⚠️", "was being handed to the workers when that "
                                   "failed", f"Some of its deployments may run. Check `tfo runs show {job.run_id}` "
                                   "before starting it again.", "enqueue failed part-way")
        except Exception as e:  # a background job must record its failure, not die silently
            error = Redactor(list(self.secrets)).redact(f"{type(e).__name__}: {e}")
            log.error("run %s for %s@%s failed to start: %s", job.run_id, job.repo, job.sha[:12], error)
            self._record_failure(job, RunStatus.FAILED, error)
            self._post_start_failure(job, error)
            try:  # GitHub's Redeliver (the same delivery id) must start it again, not read as a replay
                self.deliveries.forget(job.delivery)
            except Exception as forget_error:
                log.error("delivery %s not forgotten (%s): redeliver with a new delivery id", job.delivery,
                          type(forget_error).__name__)
        self._unspool(job)  # enqueued, or recorded as not started: nothing left to resume

    def _post_start_failure(self, job: Job, error: str) -> None:
        self._post_not_started(job, error, "did not start ❌", "could not be started", "Nothing ran. Once the "
                               "cause is fixed, redeliver the event from the webhook's *Recent Deliveries* in GitHub "
                               "(or push again).", "did not start")

    def _post_not_started(self, job: Job, error: str, title: str, what: str, advice: str, status: str) -> None:
        """A run that did not (or may not have) started: the commit's status and the PR's comment say why."""
        text = (f"## tfo {job.action.value}: {title}\n\nRun `{job.run_id}` for commit `{job.sha[:12]}` {what}:"
                f"\n\n```\n{error[:2000].replace('`', chr(39))}\n```\n\n{advice}\n")
        posted = notify.post_not_run(self.cfg, job.target, job.action.value, text, f"run {job.run_id}: {status}",
                                     run_id=job.run_id)
        if posted:
            log.error("run %s: the failure could not be posted to GitHub: %s", job.run_id, posted)

    def _record_failure(self, job: Job, status: RunStatus, error: str) -> None:
        """A run that never started still gets a summary, so `tfo runs show` and clients see why."""
        with contextlib.suppress(TfoError):
            open_store(self.cfg).put_json(keys.run_summary(job.run_id), {
                "run_id": job.run_id, "action": job.action.value, "status": status.value,
                "error": Redactor(list(self.secrets)).redact(error), "deployments": []})

    def run(self, job: Job) -> None:
        served = self.cfg.webhook.served(self.cfg.namespace).get(job.repo.lower())
        if served is None:  # a spooled job of a repository this webhook no longer serves
            log.error("run %s for %s@%s dropped: the webhook no longer serves %s", job.run_id, job.repo,
                      job.sha[:12], job.repo)
            return
        if job.recheck and not self._still_trusted(job):
            return
        approval: PullApproval | None = None
        if job.lookup and job.action == Action.APPLY:
            approval = self._pull_request_apply(job)
            if approval is None:
                return
            job = approval.job
        elif job.lookup:
            found = self._pull_request_head(job)
            if found is None:
                return
            job = found
        mirror = self.cfg.resolve(served.mirror)
        git.mirror_sync(served.remote_url, mirror, self._git_token(job.repo))
        if approval is not None:
            self._apply_from_comment(job, approval, mirror, served)
            return
        checkout = mirror.parent / "checkouts" / job.run_id
        shutil.rmtree(checkout, ignore_errors=True)  # left by a webhook that died while running this job
        git.checkout(mirror, job.sha, checkout)
        branch = f"refs/heads/{self.cfg.webhook.apply_branch}"
        if job.action == Action.APPLY and not git.is_ancestor(mirror, job.sha, branch):
            shutil.rmtree(checkout, ignore_errors=True)
            # A signed event is not proof enough: whoever holds the shared secret could name any commit
            # the remote has (a fork's pull request head, say) and have it applied.
            raise SelectorError(f"commit {job.sha[:12]} is not on {branch} of {served.remote_url}: only commits of "
                                "the apply branch are applied")
        try:
            self._start(job, checkout, served)
        finally:
            shutil.rmtree(checkout, ignore_errors=True)

    def _still_trusted(self, job: Job) -> bool:
        """A resumed pull request's plan runs only if the pull request passes today's trust policy."""
        assert job.pr is not None
        client = notify.github_client(self.cfg)
        if client is None:
            log.error("run %s: a resumed pull request plan is not run: no GitHub credentials to check its author",
                      job.run_id)
            return False
        pull = client.pull_request(job.repo, job.pr)
        why = untrusted_reason(self.cfg, job.repo, pull.head_repo, pull.author_association)
        if why:
            self._post_refusal(Refusal(job.repo, job.sha, job.pr, why))
            return False
        return True

    def _git_token(self, repo: str) -> str:
        """$GITHUB_TOKEN, or with a GitHub App the installation's token (cached by the client)."""
        token = self.token or notify.git_token(self.cfg, repo)
        self.secrets.add(token)
        return token

    def _pull_request_head(self, job: Job) -> Job | None:
        """`/tfo plan [SHA]`: the pull request's head and base now, or None when it must not run.

        The comment's author_association says little (any organisation member, a read-only
        collaborator), so the commenter's role on the repository is asked: write or more. A pull
        request tfo would not plan on its own needs the whole head commit named, by someone other
        than its author.
        """
        assert job.pr is not None
        client = notify.github_client(self.cfg)
        if client is None:
            raise GitHubError("/tfo plan needs GitHub credentials to look up the pull request")
        # The comment as GitHub has it, on this pull request: an event signed with the shared secret alone
        # could name any commenter and any commit (a fork's, planned with the accounts' credentials).
        author, body, number = client.comment(job.repo, job.comment_id) if job.comment_id else ("", "", 0)
        first = body.strip().splitlines()[:1]
        command = PLAN_COMMAND.fullmatch(first[0]) if first else None
        if author.lower() != job.sender.lower() or number != job.pr or command is None:
            log.error("run %s: /tfo plan on %s#%s dropped: GitHub has no such comment by %s on it", job.run_id,
                      job.repo, job.pr, job.sender)
            return None
        job = replace(job, sha=command.group(1) or "", paths=tuple(command.group(2).split()))
        assert job.pr is not None
        pull = client.pull_request(job.repo, job.pr)
        untrusted = untrusted_reason(self.cfg, job.repo, pull.head_repo, pull.author_association)
        role = client.role(job.repo, job.sender)
        why = ""
        if pull.state != "open":
            why = f"pull request #{job.pr} is {pull.state or 'not open'}"
        elif role not in WRITE_ROLES:
            why = f"/tfo plan was asked by {job.sender}, whose role on {job.repo} is {role}, not write or more"
        elif job.sha and pull.head_sha != job.sha:
            why = (f"its head is now `{pull.head_sha[:12]}`, not the commit `{job.sha[:12]}` the command named; "
                   "review the new commits, then name the head")
        elif untrusted and not job.sha:
            why = untrusted + ", so the command must name the reviewed commit"
        elif untrusted and pull.author and pull.author.lower() == job.sender.lower():
            why = untrusted + f"; {job.sender} opened it, and someone else must review it"
        if why:
            self._post_refusal(Refusal(job.repo, pull.head_sha, job.pr, why))
            return None
        return replace(job, sha=pull.head_sha, base=pull.base_sha, lookup=False)

    def _pull_request_apply(self, job: Job) -> PullApproval | None:
        """`/tfo apply`: whether it may run now, and on what; None when not (the refusal said on the PR)."""
        assert job.pr is not None
        client = notify.github_client(self.cfg)
        if client is None:
            raise GitHubError("/tfo apply needs GitHub credentials to look up the pull request")
        # The comment as GitHub has it, on this pull request, used once: an event signed with the shared
        # secret could name any commenter, replay an old command, or carry other paths than the comment.
        author, body, number = client.comment(job.repo, job.comment_id) if job.comment_id else ("", "", 0)
        first = body.strip().splitlines()[:1]
        command = APPLY_COMMAND.fullmatch(first[0]) if first else None
        if author.lower() != job.sender.lower() or number != job.pr or command is None:
            log.error("run %s: /tfo apply on %s#%s dropped: GitHub has no such comment by %s on it", job.run_id,
                      job.repo, job.pr, job.sender)
            return None
        job = replace(job, paths=tuple(command.group(1).split()))
        assert job.pr is not None
        store = open_store(self.cfg)
        used = keys.pull_comment(job.repo, job.pr, job.comment_id)
        if store.head(used) is not None:
            log.error("run %s: /tfo apply comment %s on %s#%s was used already: dropped", job.run_id, job.comment_id,
                      job.repo, job.pr)
            return None
        store.put_json(used, {"run_id": job.run_id, "at": time.time()})  # one start thread: no race here
        pull = client.pull_request(job.repo, job.pr)
        w = self.cfg.webhook
        why, unmet = "", []
        plan_run = ""
        approvers: tuple[str, ...] = ()
        if w.apply_on == "merge":
            why = "applies from comments are off here (webhook.apply_on = merge)"
        elif pull.state != "open":
            why = f"pull request #{job.pr} is {pull.state or 'not open'}"
        elif client.role(job.repo, job.sender) not in WRITE_ROLES:
            why = f"/tfo apply was asked by {job.sender}, who has no write access to {job.repo}"
        elif untrusted := untrusted_reason(self.cfg, job.repo, pull.head_repo, pull.author_association):
            why = untrusted + "; such pull requests are not applied from comments"
        else:
            # Only reviewers who could merge it count: on a public repository anyone may approve.
            approvers = tuple(a for a in client.approvers(job.repo, job.pr, pull.head_sha, pull.author)
                              if client.role(job.repo, a) in WRITE_ROLES)
            if "approved" in w.apply_requirements and len(approvers) < w.approvals:
                unmet.append(f"{w.approvals} approving review(s) of `{pull.head_sha[:12]}` by people with write "
                             f"access other than its author (it has {len(approvers)})")
            if "mergeable" in w.apply_requirements and pull.mergeable is not True:
                unmet.append("GitHub has not yet worked out whether it merges cleanly: try again in a moment"
                             if pull.mergeable is None else "it has merge conflicts")
            plan_run, problem = self._plan_of(job, pull.head_sha)
            if problem:
                unmet.append(problem)
        if unmet:
            why = "it needs " + "; ".join(unmet)
        if why:
            self._post_refusal(Refusal(job.repo, pull.head_sha, job.pr, why, "apply"))
            return None
        return PullApproval(replace(job, sha=pull.head_sha, base=pull.base_sha, lookup=False), plan_run,
                            approvers, pull.base_ref)

    def _plan_of(self, job: Job, sha: str) -> tuple[str, str]:
        """The finished plan run of this pull request's commit, or why there is none to apply."""
        assert job.pr is not None
        store = open_store(self.cfg)
        try:
            run_id = str(store.get_json(keys.pull_plan(job.repo, job.pr, sha))["run_id"])
        except (KeyError, TypeError):
            return "", f"a plan of `{sha[:12]}` first: comment `/tfo plan`, or push, and wait for its report"
        try:
            status = store.get_json(keys.run_summary(run_id)).get("status")
        except KeyError:
            return "", f"its plan (run `{run_id}`) to finish first"
        if status not in (RunStatus.SUCCEEDED, RunStatus.BLOCKED):
            return "", f"a plan that succeeded: run `{run_id}` was {status}; fix it and plan again"
        return run_id, ""

    def _apply_from_comment(self, job: Job, approval: PullApproval, mirror: Path, served: ServedRepository) -> None:
        assert job.pr is not None
        w = self.cfg.webhook
        base_tip = git.branch_head(mirror, approval.base_ref)
        if "undiverged" in w.apply_requirements and not git.is_ancestor(mirror, base_tip, job.sha):
            self._post_refusal(Refusal(job.repo, job.sha, job.pr, f"it needs the latest commit of "
                                       f"`{approval.base_ref}` merged in (it has diverged): update it and plan again",
                                       "apply"))
            return
        checkout = mirror.parent / "checkouts" / job.run_id
        shutil.rmtree(checkout, ignore_errors=True)
        git.checkout(mirror, job.sha, checkout)
        try:
            cfg = self._run_config(job, checkout, served)
        finally:
            shutil.rmtree(checkout, ignore_errors=True)
        if cfg is None:
            return
        store = open_store(cfg)
        planned = service.planned_deployments(store, approval.plan_run)
        chosen = list(planned.deployments)
        if job.paths:
            chosen = [s for s in chosen if s.id in job.paths or s.tfvars_path in job.paths]
            named = {s.id for s in chosen} | {s.tfvars_path for s in chosen}
            unknown = [p for p in job.paths if p not in named]
            if unknown:
                self._post_refusal(Refusal(job.repo, job.sha, job.pr, f"its plan (run `{approval.plan_run}`) has no "
                                           f"deployment {', '.join(unknown)}", "apply"))
                return
        taken = {s.id: h for s in chosen if (h := reservations.held(store, s)) and not h.same_pull(job.repo, job.pr)}
        if taken:
            self._post_refusal(Refusal(job.repo, job.sha, job.pr, "another pull request holds " + ", ".join(
                f"`{d}` ({h})" for d, h in sorted(taken.items())) + ": it is released when that one is merged or "
                "closed, or by `tfo unlock`", "apply"))
            return
        # An approved pull request is the waiver the CLI's --allow-destroy and --approved-by give: its
        # approvers are on record in the audit.
        request = RunRequest(Action.APPLY, RollbackStrategy(cfg.rollback), actor=f"github:{job.sender}",
                             git_sha=job.sha, notify=job.target, run_id=job.run_id, from_plan=approval.plan_run,
                             approved_by=tuple(f"github:{a}" for a in approval.approvers),
                             allow_destroy=bool(approval.approvers))
        run = service.start(cfg, store, chosen, request, _Enqueue(self, job, cfg))
        log.info("run %s: apply of %s#%s@%s from plan run %s, %d deployment(s), approved by %s", run.run_id, job.repo,
                 job.pr, job.sha[:12], approval.plan_run, len(chosen), ", ".join(approval.approvers) or "nobody")

    def _run_config(self, job: Job, checkout: Path, served: ServedRepository) -> TfoConfig | None:
        """The repository's settings with the server's (where things run and live, the policy); None when
        the repository pins another namespace (said on GitHub)."""
        cfg, pinned = checkout_config(self.cfg, checkout, served.namespace)
        if pinned and pinned != served.namespace:
            # Said, not ignored: the repository pins it for its CLI and CI runs, which would then
            # work on other states than the webhook's.
            problem = Problem("tfo.toml", f"namespace = {pinned!r}, but this webhook keeps "
                                          f"{served.name}'s state under {served.namespace!r}")
            notify.post_invalid(cfg, job.target, job.action.value, job.run_id, [problem])
            self._record_failure(job, RunStatus.INVALID, str(problem))
            return None
        return cfg

    def _start(self, job: Job, checkout: Path, served: ServedRepository) -> None:
        cfg = self._run_config(job, checkout, served)
        if cfg is None:
            return
        target = job.target
        if job.pr is not None and job.action == Action.PLAN:
            target["github"]["apply_hint"] = apply_hint(cfg, job.sha)
        # `/tfo plan PATH...` plans what it names, changed by the pull request or not; otherwise what changed.
        found = discover(cfg, git_diff=f"{job.base}..{job.sha}" if job.base and not job.paths else None)
        try:
            specs = list(build_deployments(cfg, found).specs)
            if job.paths:
                specs = [s for s in specs if s.id in job.paths or s.tfvars_path in job.paths]
                named = {s.id for s in specs} | {s.tfvars_path for s in specs}
                unknown = [p for p in job.paths if p not in named]
                if unknown:
                    raise ValidationError([Problem(p, "is not a deployment id or tfvars path of this commit")
                                           for p in unknown])
        except ValidationError as e:
            notify.post_invalid(cfg, target, job.action.value, job.run_id, list(e.problems))
            self._record_failure(job, RunStatus.INVALID,
                                 f"{len(e.problems)} problem(s): " + "; ".join(map(str, e.problems)))
            return
        store = open_store(cfg)
        if job.pr is not None and job.action == Action.PLAN:
            claim = reservations.Reservation(job.repo, job.pr, job.sha, job.run_id)
            taken = reservations.reserve(store, specs, claim, self._still_open)
            if taken:
                specs = [s for s in specs if s.id not in taken]
                target["github"]["reserved"] = {d: str(h) for d, h in sorted(taken.items())}
                if not specs:
                    text = ("## tfo plan: not run 🔒\n\nEvery deployment this pull request changes is reserved by "
                            "another one, which planned it first:\n\n"
                            + reservations.note(target["github"]["reserved"]))
                    notify.post_not_run(cfg, target, "plan", text, "reserved by another pull request",
                                        run_id=job.run_id)
                    self._record_failure(job, RunStatus.FAILED, "every deployment is reserved by another pull request")
                    return
        request = RunRequest(job.action, RollbackStrategy(cfg.rollback), actor=f"github:{job.sender}",
                             git_sha=job.sha, notify=target, run_id=job.run_id)
        if job.pr is not None and job.action == Action.PLAN:
            # What `/tfo apply` on this commit applies (its plans are saved with the run).
            store.put_json(keys.pull_plan(job.repo, job.pr, job.sha), {"run_id": job.run_id, "at": time.time()})
        run = service.start(cfg, store, specs, request, _Enqueue(self, job, cfg))
        log.info("run %s: %s of %s@%s, %d deployment(s)", run.run_id, job.action.value, job.repo, job.sha[:12],
                 len(specs))


@dataclass(frozen=True)
class PullApproval:
    """A `/tfo apply` that may run: on the pull request's head, from its plan run, with its approvers."""

    job: Job
    plan_run: str
    approvers: tuple[str, ...]
    base_ref: str


class _Enqueue:
    """The webhook's executor: the celery executor's submit, spooled first, and never followed here
    (finalize on the workers reports back to GitHub)."""

    name = "celery"
    distributed = True

    def __init__(self, starter: RunStarter, job: Job, cfg: TfoConfig) -> None:
        self.starter, self.job, self.cfg = starter, job, cfg

    def submit(self, run: RunSpec) -> None:
        submit = self.starter.submit
        if submit is None:
            from workers import producer

            submit = producer.submit
        self.starter._spool(self.job, "enqueueing")
        try:
            submit(self.cfg, run)
        except Exception as e:
            raise EnqueueUncertain(f"handing run {run.run_id} to the broker failed part-way "
                                   f"({type(e).__name__}: {e}); some of its deployments may be queued") from e

    def follow(self, run: RunSpec, stop: Callable[[], bool]) -> RunResult | None:
        return None


def _payload(body: bytes, content_type: str) -> dict[str, Any] | str:
    """The event's JSON object, from either of GitHub's content types; or why it cannot be read."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return "form body cannot be decoded"
        if len(fields.get("payload", [])) != 1:
            return "form body has no payload field"
        text = fields["payload"][0]
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "body is not UTF-8 JSON"
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return "body is not JSON"
    return payload if isinstance(payload, dict) else "body is not a JSON object"


def create_app(cfg: TfoConfig, secret: bytes, starter: RunStarter) -> Flask:
    app = Flask("tfo-webhook")
    app.config["MAX_CONTENT_LENGTH"] = cfg.webhook.max_body_bytes
    deliveries = starter.deliveries

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
        if event not in ("push", "pull_request", "issue_comment"):
            # 2xx: GitHub shows anything else as a failed delivery, and an App receives events it
            # cannot opt out of (installation, ...).
            return answer(200, status="ignored", reason=f"{event[:40]!r} events are not handled")
        payload = _payload(body, request.headers.get("Content-Type", ""))
        if isinstance(payload, str):
            return answer(400, error=payload)
        decision = job_for(event, payload, cfg, delivery)
        if isinstance(decision, Ignored):
            return answer(200, status="ignored", reason=decision.reason)
        if isinstance(decision, Release):
            starter.release(decision)
            return answer(200, status="released", pr=decision.pr)
        if isinstance(decision, Refusal):
            if _valid_sha(decision.sha) and decision.pr > 0:
                starter.refuse(decision)
            return answer(200, status="refused", reason=decision.reason)
        job = decision
        valid = _valid_sha(job.sha) or (job.lookup and (not job.sha or all(c in "0123456789abcdef" for c in job.sha)))
        if not valid or (job.lookup and not job.pr):
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


def _valid_sha(sha: str) -> bool:
    return len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)


def serve(cfg: TfoConfig, secret: bytes) -> None:
    from waitress import serve as waitress_serve

    host, _, port = cfg.webhook.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    starter = RunStarter(cfg)
    starter.resume_spooled()
    waitress_serve(create_app(cfg, secret, starter), host=host or "127.0.0.1", port=int(port),
                   threads=4, ident="tfo-webhook")
