"""Every git call tfo makes, each returning parsed data."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import GitError, SelectorError


@dataclass(frozen=True)
class ChangedPath:
    status: str  # git's letter: A, M, D, R, C, T
    path: str  # repo-relative, the new path for renames


def _git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120, check=False
        )
    except FileNotFoundError as e:
        raise GitError("git is not installed or not on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise GitError(f"git {' '.join(args)} timed out") from e
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


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
