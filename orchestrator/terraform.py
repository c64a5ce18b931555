"""The only code that starts the terraform (or tofu) binary.

Prepare, then execute: `TerraformCommand` holds the command line, environment and working directory
(testable without the binary); `TerraformClient.run` only runs it and returns a `CommandResult` whose
status is succeeded|failed|timeout|cancelled. A failing terraform is a result, never an exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from orchestrator.cancel import CancelToken
from orchestrator.errors import TerraformNotFoundError
from orchestrator.terraform_env import terraform_environment

# Terraform reacts to one SIGINT by finishing in-flight resource operations, writing state and
# releasing its state lock. Only if it ignores that for this long is the process group killed.
DEFAULT_GRACE_S = 120.0
LOG_DIR = ".tfo-logs"


class CommandStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TerraformCommand:
    step: str
    args: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3600.0
    ok_exit_codes: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class CommandResult:
    step: str
    argv: tuple[str, ...]
    status: CommandStatus
    exit_code: int | None
    output: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.status == CommandStatus.SUCCEEDED


AUTOMATION_ENV = {
    "TF_IN_AUTOMATION": "1",
    "TF_INPUT": "0",
    "CHECKPOINT_DISABLE": "1",
}


class TerraformClient:
    def __init__(self, binary: str, base_env: Mapping[str, str] | None = None,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        """`base_env`: what terraform may see of ours (terraform_env.terraform_environment); default:
        the allowlist applied to this process's environment."""
        self.binary = binary
        self.base_env = dict(terraform_environment(os.environ) if base_env is None else base_env)
        self.grace_s = grace_s

    def environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {**self.base_env, **AUTOMATION_ENV, **extra}

    def run(self, cmd: TerraformCommand, cancel: CancelToken | None = None) -> CommandResult:
        argv = (self.binary, *cmd.args)
        start = time.monotonic()
        # Output goes to a file, not a pipe: if this process dies, terraform does not die of SIGPIPE
        # half-way through an apply; it finishes, writes state and releases its lock.
        # The file holds terraform's raw output (secrets included) only while it runs: owner-only, and
        # removed once read; the output then lives in the encrypted audit and, redacted, in reports.
        log_dir = cmd.cwd / LOG_DIR
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path = log_dir / f"{int(time.time() * 1000)}-{cmd.step}.log"
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cmd.cwd,
                    env=self.environment(cmd.env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Own process group: our signal reaches terraform and its providers, nothing else,
                    # and a Ctrl-C on the terminal does not hit terraform before we decide to stop it.
                    start_new_session=True,
                )
            except FileNotFoundError as e:
                raise TerraformNotFoundError(
                    f"terraform binary {self.binary!r} not found (set terraform_bin or --terraform-bin)"
                ) from e
            except PermissionError as e:
                raise TerraformNotFoundError(f"terraform binary {self.binary!r} is not executable") from e
            try:
                stopped = self._wait(proc, cmd, cancel, start)
            except BaseException:
                # Interrupted ourselves (a task time limit, KeyboardInterrupt): stop terraform the
                # same clean way before the exception goes on.
                self._signal(proc, signal.SIGINT)
                try:
                    proc.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                raise
        output = log_path.read_bytes().decode("utf-8", errors="replace")
        log_path.unlink(missing_ok=True)
        code = proc.returncode
        if code in cmd.ok_exit_codes and (stopped is None or cmd.args[:1] == ("apply",)):
            # An apply that finished, even if asked to stop, is recorded by its outcome: terraform completes
            # in-flight work after one SIGINT, and "Apply complete!" with exit 0 changed what it said.
            # Any other step that was stopped is cancelled, whatever its exit code: what follows must not run.
            status = CommandStatus.SUCCEEDED
        elif stopped is not None:
            status = stopped
        else:
            status = CommandStatus.FAILED
        return CommandResult(cmd.step, argv, status, code, output, time.monotonic() - start)

    def _wait(self, proc: subprocess.Popen[bytes], cmd: TerraformCommand, cancel: CancelToken | None,
              start: float) -> CommandStatus | None:
        """Wait for terraform; on cancel or timeout send one SIGINT, and SIGKILL only after the grace period."""
        stopped: CommandStatus | None = None
        signalled_at = 0.0
        while True:
            try:
                proc.wait(timeout=0.2)
                return stopped
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stopped is None:
                if cancel is not None and cancel.cancelled:
                    stopped = CommandStatus.CANCELLED
                elif now - start > cmd.timeout_s:
                    stopped = CommandStatus.TIMEOUT
                if stopped is not None:
                    self._signal(proc, signal.SIGINT)
                    signalled_at = now
            elif now - signalled_at > self.grace_s:
                self._signal(proc, signal.SIGKILL)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "version", "-json"], capture_output=True, text=True, timeout=60,
                                 env=self.environment({}), check=False)
        except (FileNotFoundError, PermissionError) as e:
            raise TerraformNotFoundError(f"terraform binary {self.binary!r} cannot be started: {e}") from e
        except subprocess.TimeoutExpired:
            return "unknown"
        try:
            return str(json.loads(out.stdout).get("terraform_version", "unknown"))
        except json.JSONDecodeError:
            return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"
