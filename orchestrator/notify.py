"""Reporting a run back to where it came from (GitHub: a commit status, and the sticky PR comment)."""

from __future__ import annotations

import os
import threading
from typing import Any

from orchestrator import reservations
from orchestrator.config import TfoConfig
from orchestrator.errors import Problem
from orchestrator.github import REPORT_LIMIT, GitHubAuth, GitHubClient, GitHubError
from orchestrator.models import RunResult, RunSpec, RunStatus
from orchestrator.report import report_parts

_clients: dict[tuple[Any, ...], GitHubClient] = {}
_clients_lock = threading.Lock()


def github_client(cfg: TfoConfig, max_wait_s: float | None = None) -> GitHubClient | None:
    """One client per process and credentials: an App's installation token and tfo's own login are
    looked up once and reused until the token nears its expiry."""
    g = cfg.github
    auth = GitHubAuth(token=os.environ.get(g.token_env, ""), app_id=g.app_id,
                      app_private_key_pem=os.environ.get(g.app_key_env, ""), installation_id=g.installation_id)
    if not auth.token and not (auth.app_id and auth.app_private_key_pem):
        return None
    wait = g.rate_limit_wait_s if max_wait_s is None else max_wait_s
    key = (g.api_url, auth, g.comment_author, wait)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = GitHubClient(g.api_url, auth, comment_author=g.comment_author, max_wait_s=wait)
        return _clients[key]


def git_token(cfg: TfoConfig, repo: str) -> str:
    """What fetches `repo` (OWNER/NAME) over https: the token variable, or a GitHub App's installation token."""
    token = os.environ.get(cfg.github.token_env, "")
    if token:
        return token
    client = github_client(cfg)
    return client.token(repo) if client is not None and client.is_app else ""


def _target(run: RunSpec) -> dict[str, Any] | None:
    target = run.notify.get("github")
    return target if isinstance(target, dict) and target.get("repo") and target.get("sha") else None


def context(cfg: TfoConfig, run: RunSpec) -> str:
    return f"{cfg.github.status_context}/{run.options.action.value}"


def run_url(cfg: TfoConfig, run_id: str) -> str:
    return f"{cfg.github.dashboard_url.rstrip('/')}/runs/{run_id}" if cfg.github.dashboard_url and run_id else ""


def post_pending(cfg: TfoConfig, run: RunSpec, client: GitHubClient | None = None) -> str:
    target, client = _target(run), client or github_client(cfg)
    if target is None or client is None:
        return ""
    try:
        client.set_status(target["repo"], target["sha"], "pending", context(cfg, run),
                          f"run {run.run_id}: {len(run.deployments)} deployment(s)", run_url(cfg, run.run_id))
    except GitHubError as e:
        return str(e)
    return ""


def post_result(cfg: TfoConfig, result: RunResult, client: GitHubClient | None = None) -> str:
    """Commit status and (for a PR) the sticky comment; returns an error text, never raises."""
    run = result.run
    target, client = _target(run), client or github_client(cfg)
    if target is None or client is None:
        return ""
    state = "success" if result.status == RunStatus.SUCCEEDED else "failure"
    changes = sum(r.plan.add + r.plan.change + r.plan.destroy for r in result.results)
    try:
        client.set_status(target["repo"], target["sha"], state, context(cfg, run),
                          f"run {run.run_id}: {result.status}, {len(result.results)} deployment(s), "
                          f"{changes} change(s)", run_url(cfg, run.run_id))
        if target.get("pr"):
            # What applies this pull request's plans, and what another one reserved (the webhook's words),
            # under the first part.
            hint = str(target.get("apply_hint") or "")[:1000] if result.status != RunStatus.INVALID else ""
            reserved = target.get("reserved")
            if isinstance(reserved, dict) and reserved:
                hint = "**Not planned here:**\n" + reservations.note(reserved) + (f"\n\n{hint}" if hint else "")
            parts = report_parts(result, REPORT_LIMIT - len(hint) - 2, cfg.github.max_comments)
            if hint and parts:
                parts[0] = f"{parts[0]}\n\n{hint}"
            client.upsert_report(target["repo"], int(target["pr"]), parts)
    except GitHubError as e:
        return str(e)
    return ""


def post_invalid(cfg: TfoConfig, notify: dict[str, Any], action: str, run_id: str, problems: list[Problem],
                 client: GitHubClient | None = None) -> str:
    """The change did not validate: nothing ran; say why on the PR and the commit."""
    lines = "\n".join(f"- `{p}`" for p in problems)
    return post_not_run(cfg, notify, action, f"## tfo {action}: invalid input ⚠️\n\nRun `{run_id}` did not start; "
                        f"{len(problems)} problem(s):\n\n{lines}\n", f"invalid input: {len(problems)} problem(s)",
                        client, run_id)


def post_not_run(cfg: TfoConfig, notify: dict[str, Any], action: str, markdown: str, description: str,
                 client: GitHubClient | None = None, run_id: str = "") -> str:
    """Nothing ran (invalid input, a refused pull request, a start that failed): a failure status on the
    commit and, for a PR, the sticky comment saying why. Returns an error text, never raises."""
    target, client = notify.get("github"), client or github_client(cfg)
    if not isinstance(target, dict) or client is None:
        return ""
    try:
        if len(str(target.get("sha", ""))) == 40:  # a commit status needs the whole sha
            client.set_status(target["repo"], target["sha"], "failure", f"{cfg.github.status_context}/{action}",
                              description, run_url(cfg, run_id))
        if target.get("pr"):
            client.upsert_sticky_comment(target["repo"], int(target["pr"]), markdown)
    except GitHubError as e:
        return str(e)
    return ""
