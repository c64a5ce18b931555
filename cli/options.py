"""Options shared by several subcommands, and loading the config they describe."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator.config import TfoConfig, load_config, with_overrides
from orchestrator.discovery import Discovery, discover
from orchestrator.errors import SelectorError
from orchestrator.sharding import Deployments, build_deployments

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class GlobalOptions:
    config_file: Path | None
    repo: Path | None
    terraform_bin: str | None

    def load(self, **overrides: Any) -> TfoConfig:
        cfg = load_config(self.config_file, repo_root=self.repo)
        return with_overrides(cfg, terraform_bin=self.terraform_bin, **overrides)


@dataclass(frozen=True)
class Selectors:
    paths: tuple[str, ...]
    changed_files: str | None
    git_diff: str | None


def selector_options(f: F) -> F:
    f = click.argument("paths", nargs=-1)(f)
    f = click.option("--changed-files", "changed_files", metavar="FILE|-",
                     help="File with one changed path per line ('-' for stdin), as `git diff --name-only` prints.")(f)
    f = click.option("--git-diff", "git_diff", metavar="BASE[..HEAD]",
                     help="Deployments touched by the commits in BASE..HEAD.")(f)
    return f


def read_selectors(paths: tuple[str, ...], changed_files: str | None, git_diff: str | None) -> Selectors:
    text = None
    if changed_files is not None:
        if changed_files == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(changed_files).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise SelectorError(f"--changed-files {changed_files}: cannot be read: {e}") from e
    return Selectors(paths, text, git_diff)


def select(cfg: TfoConfig, sel: Selectors) -> tuple[Discovery, Deployments]:
    found = discover(cfg, sel.paths, sel.changed_files, sel.git_diff)
    return found, build_deployments(cfg, found)
