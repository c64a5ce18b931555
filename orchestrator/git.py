"""Every git call tfo makes, each returning parsed data."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import GitError, SelectorError
from orchestrator.terraform_env import git_environment


@dataclass(frozen=True)
class ChangedPath:
    status: str  # git's letter: A, M, D, R, C, T
    path: str  # repo-relative, the new path for renames


def _git(repo: Path, *args: str) -> str:
    return _git_env(repo, list(args), timeout=120)


def toplevel(path: Path) -> Path | None:
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip())
    except GitError:
        return None


def changed_paths(repo: Path, revision_range: str) -> list[ChangedPath]:
    """Files changed in `BASE..HEAD` (or `BASE`, meaning BASE..HEAD), renames as their new path."""
    base, _, head = revision_range.partition("..")
    head = head.lstrip(".") or "HEAD"
    if not base or base.startswith("-") or head.startswith("-"):
        raise SelectorError(f"--git-diff {revision_range!r}: expected BASE or BASE..HEAD")
    for rev in (base, head):
        try:
            _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except GitError as e:
            raise SelectorError(f"--git-diff {revision_range!r}: {rev!r} is not a commit in {repo}") from e
    out = _git(repo, "diff", "--name-status", "-z", "-M", f"{base}...{head}")
    fields = out.split("\0")
    result: list[ChangedPath] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in "RC":
            result.append(ChangedPath("D" if status == "R" else "A", fields[i + 1]))
            result.append(ChangedPath("A", fields[i + 2]))
            i += 3
        else:
            result.append(ChangedPath(status, fields[i + 1]))
            i += 2
    return result


def head_sha(repo: Path) -> str:
    try:
        return _git(repo, "rev-parse", "HEAD").strip()
    except GitError:
        return ""


def user_email(repo: Path) -> str:
    try:
        return _git(repo, "config", "user.email").strip()
    except GitError:
        return ""


def _auth_env(token: str) -> dict[str, str]:
    """A token for https remotes as an extra header, passed through the environment (never argv or logs)."""
    if not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}", "GIT_TERMINAL_PROMPT": "0"}


def _git_env(repo: Path | None, args: list[str], token: str = "", timeout: float = 600) -> str:
    """Run git; its error names the subcommand and git's own message (never the token, which is in env)."""
    cmd = ["git", *(["-C", str(repo)] if repo else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**git_environment(os.environ), **_auth_env(token)})
    except FileNotFoundError as e:
        raise GitError("git is not installed or not on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise GitError(f"git {args[0]} timed out") from e
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc.stdout


def mirror_sync(remote: str, mirror: Path, token: str = "") -> None:
    """Keep a bare mirror of `remote` (branches and pull request heads) up to date."""
    if not (mirror / "HEAD").exists():
        mirror.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(mirror, ignore_errors=True)  # a clone cut short (the webhook died): start it again
        _git_env(None, ["clone", "--quiet", "--mirror", remote, str(mirror)], token)
        return
    _git_env(mirror, ["fetch", "--quiet", "--prune", "origin"], token)


def checkout(mirror: Path, sha: str, dest: Path) -> None:
    """A detached working tree of `sha` at `dest`, sharing the mirror's objects."""
    _git_env(None, ["clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(dest)])
    _git_env(dest, ["checkout", "--quiet", "--detach", sha])


def is_ancestor(repo: Path, sha: str, ref: str) -> bool:
    """Whether commit `sha` is `ref` or one of its ancestors (false when either is unknown)."""
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        return False
    try:
        _git(repo, "merge-base", "--is-ancestor", sha, ref)
    except GitError:
        return False
    return True


def branch_head(repo: Path, branch: str) -> str:
    """The commit a branch points at, or "" when there is no such branch."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", branch) or ".." in branch:
        return ""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}").strip()
    except GitError:
        return ""
