"""Errors typed by who is at fault, each mapped to one documented exit code by the CLI's handler.

A Terraform failure inside a deployment is not an exception: it is a recorded DeploymentResult.
These exceptions are for what stops tfo itself from doing its job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_DEPLOYMENT_FAILED = 1
EXIT_INVALID_INPUT = 2
EXIT_PLATFORM = 3
EXIT_POLICY = 4  # a policy rule refused a deployment (and nothing failed)
EXIT_DRIFT = 5  # `tfo drift` found drift it did not remediate
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, as a shell reports it


class TfoError(Exception):
    """Base of every error tfo raises on purpose."""

    exit_code = EXIT_PLATFORM


# --- the user's input is at fault: exit 2 -------------------------------------------------------


class UserError(TfoError):
    exit_code = EXIT_INVALID_INPUT


class ConfigError(UserError):
    """tfo.toml or a TFO_* variable is malformed or names something that does not exist."""


class SelectorError(UserError):
    """A path, --changed-files list or --git-diff range cannot be used."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input file; `line` is 1-based when known."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class ValidationError(UserError):
    def __init__(self, problems: Sequence[Problem], warnings: Sequence[Problem] = ()) -> None:
        self.problems = tuple(problems)
        self.warnings = tuple(warnings)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the input; nothing was run:\n{lines}")


class UnknownDeploymentError(UserError):
    """A deployment id or backup key given on the command line does not exist."""


# --- our platform is at fault (store, broker, binary): exit 3 -----------------------------------


class PlatformError(TfoError):
    exit_code = EXIT_PLATFORM


class StoreError(PlatformError):
    """The state/backup/audit store cannot be read or written."""


class StateBackupError(StoreError):
    """The pre-apply backup could not be written; the apply must not run."""


class LockError(PlatformError):
    """The lock backend itself failed (not: the lock is held, which is a result)."""


class TerraformNotFoundError(PlatformError):
    """The configured terraform/tofu binary cannot be started."""


class GitError(PlatformError):
    """git failed or is not installed."""


class AssumeRoleError(PlatformError):
    """STS refused or could not be reached for an account's role."""


class GitHubError(PlatformError):
    """GitHub refused or could not be reached after retries."""


class BrokerError(PlatformError):
    """The broker or result backend cannot be reached."""


class RunNotFinalizedError(PlatformError):
    """The workers gave up on a run: its chord broke and the reconciler failed too."""


class EnqueueUncertain(BrokerError):
    """Handing a run to the broker failed after it may have published some of its tasks."""
