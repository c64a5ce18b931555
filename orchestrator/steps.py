"""Steps: each a frozen dataclass with a `name` and one `run(ctx) -> StepResult`.

The Terraform steps here run on any StepContext (a deployment's pipeline, a rollback, a verify); the
deployment pipeline (`orchestrator.deploy`) adds its own steps on a richer context (DeployContext). A failing command
or an expected refusal is a StepResult, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeVar

from orchestrator.cancel import CancelToken
from orchestrator.fsutil import flock
from orchestrator.models import PlanSummary
from orchestrator.redaction import Redactor
from orchestrator.terraform import CommandResult, CommandStatus, TerraformClient, TerraformCommand

PLAN_FILE = "tfplan"
ERROR_TAIL_LINES = 40


class StepStatus(StrEnum):
    OK = "ok"  # go on with the next step
    DONE = "done"  # the work is complete: nothing after this step runs (a plan-only run, no changes)
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped (SIGINT, `tfo runs cancel`, a timeout)
    REFUSED = "refused"  # an expected refusal (no backup possible, a lock held): recorded, not raised


@dataclass(frozen=True)
class StepResult:
    step: str
    status: StepStatus
    message: str = ""  # redacted: safe to show
    command: CommandResult | None = None

    @property
    def ok(self) -> bool:
        return self.status in (StepStatus.OK, StepStatus.DONE)


@dataclass
class StepContext:
    workdir: Path
    client: TerraformClient
    cancel: CancelToken
    timeout_s: float
    lock_timeout_s: float
    backend_config: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    var_files: tuple[str, ...] = ()  # relative to workdir, in -var-file order
    # Digests of the upstream deployments' outputs given to terraform (tfo_dependency_outputs), by id.
    upstream_outputs: dict[str, str] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)
    log: list[CommandResult] = field(default_factory=list)
    # What the last plan showed: its command (exit 2 = changes) and, once known, its resource counts.
    plan: CommandResult | None = None
    plan_summary: PlanSummary | None = None
    # A saved plan being applied (`--from-plan`): whether it has changes, as recorded when it was made.
    saved_changes: bool | None = None

    def execute(self, step: str, args: list[str], ok: tuple[int, ...] = (0,)) -> CommandResult:
        cmd = TerraformCommand(step=step, args=tuple(args), cwd=self.workdir, env=self.env,
                               timeout_s=self.timeout_s, ok_exit_codes=ok)
        result = self.client.run(cmd, self.cancel)
        self.log.append(result)
        return result

    def result(self, command: CommandResult) -> StepResult:
        """A command's outcome as a step's: cancelled and timed out stop the run, other failures fail it."""
        if command.ok:
            return StepResult(command.step, StepStatus.OK, command=command)
        stopped = command.status in (CommandStatus.CANCELLED, CommandStatus.TIMEOUT)
        return StepResult(command.step, StepStatus.CANCELLED if stopped else StepStatus.FAILED,
                          failure_text(command, self.redactor), command)

    @property
    def lock_timeout(self) -> str:
        return f"-lock-timeout={int(self.lock_timeout_s)}s"

    @property
    def has_changes(self) -> bool:
        if self.saved_changes is not None:
            return self.saved_changes
        return self.plan is not None and self.plan.exit_code == 2


C = TypeVar("C", bound=StepContext, contravariant=True)


class Step(Protocol[C]):
    @property
    def name(self) -> str: ...

    def run(self, ctx: C) -> StepResult: ...


def failure_text(result: CommandResult, redactor: Redactor) -> str:
    """A short, redacted explanation of a failed command: its Error blocks, else the tail of its output."""
    lines = result.output.strip().splitlines()
    errors = [i for i, ln in enumerate(lines) if re.match(r"^\s*(│\s*)?Error: ", ln)]
    picked = lines[errors[0]:] if errors else lines
    tail = "\n".join(picked[-ERROR_TAIL_LINES:])
    what = {CommandStatus.TIMEOUT: "timed out", CommandStatus.CANCELLED: "was cancelled"}.get(
        result.status, f"failed (exit {result.exit_code})")
    return redactor.redact(f"terraform {result.step} {what}: {tail}".strip())


@dataclass(frozen=True)
class InitStep:
    name: str = "init"

    def run(self, ctx: StepContext) -> StepResult:
        args = ["init", "-input=false", "-no-color"]
        args += [f"-backend-config={k}={v}" for k, v in ctx.backend_config.items()]
        cache = ctx.env.get("TF_PLUGIN_CACHE_DIR")
        if not cache:
            return ctx.result(ctx.execute(self.name, args))
        # Terraform's plugin cache is not safe for concurrent init: one init per cache directory at a time.
        Path(cache).mkdir(parents=True, exist_ok=True)
        with flock(Path(cache) / ".tfo-init.lock", mode=0o644):
            return ctx.result(ctx.execute(self.name, args))


@dataclass(frozen=True)
class PlanStep:
    """exit 0: no changes, 2: changes (both succeed), anything else fails. Sets ctx.plan."""

    destroy: bool = False
    name: str = "plan"

    def run(self, ctx: StepContext) -> StepResult:
        args = ["plan", "-input=false", "-no-color", ctx.lock_timeout, "-detailed-exitcode",
                f"-out={PLAN_FILE}", *(f"-var-file={v}" for v in ctx.var_files)]
        if self.destroy:
            args.append("-destroy")
        command = ctx.execute(self.name, args, ok=(0, 2))
        ctx.plan, ctx.plan_summary = command, summary_from_plan_output(command)
        return ctx.result(command)


def summarize_plan(plan_json: str) -> PlanSummary:
    data = json.loads(plan_json)
    add = change = destroy = 0
    for rc in data.get("resource_changes", []):
        actions = rc.get("change", {}).get("actions", [])
        if "create" in actions:
            add += 1
        if "delete" in actions:
            destroy += 1
        if actions == ["update"]:
            change += 1
    return PlanSummary(add=add, change=change, destroy=destroy)


# Printed by every Terraform since 0.12 and by OpenTofu; "N to import, " since Terraform 1.5.
_PLAN_LINE = re.compile(r"^Plan: (?:\d+ to import, )?(\d+) to add, (\d+) to change, (\d+) to destroy\.", re.M)


def summary_from_plan_output(plan: CommandResult) -> PlanSummary | None:
    """The counts from the plan's own output: no changes, or its "Plan:" line; None when it has neither."""
    if plan.ok and plan.exit_code == 0:
        return PlanSummary()
    lines = _PLAN_LINE.findall(plan.output)
    if plan.ok and len(lines) == 1:
        add, change, destroy = (int(n) for n in lines[0])
        return PlanSummary(add=add, change=change, destroy=destroy)
    return None


@dataclass(frozen=True)
class ShowPlanStep:
    """The last plan's resource counts (ctx.plan_summary). When the plan printed its summary line, that is
    used instead of running `show -json`, which costs a second provider start (about 0.5 s a deployment)."""

    name: str = "show"

    def run(self, ctx: StepContext) -> StepResult:
        if ctx.plan_summary is not None:
            return StepResult(self.name, StepStatus.OK)
        command = ctx.execute(self.name, ["show", "-json", "-no-color", PLAN_FILE])
        if not command.ok:
            return ctx.result(command)
        try:
            ctx.plan_summary = summarize_plan(command.output)
        except (json.JSONDecodeError, AttributeError):
            return StepResult(self.name, StepStatus.FAILED, "terraform show -json printed no plan document", command)
        return StepResult(self.name, StepStatus.OK, command=command)


@dataclass(frozen=True)
class ApplyStep:
    name: str = "apply"

    def run(self, ctx: StepContext) -> StepResult:
        return ctx.result(ctx.execute(self.name, ["apply", "-input=false", "-no-color", ctx.lock_timeout,
                                                  "-auto-approve", PLAN_FILE]))


@dataclass(frozen=True)
class StateLockInfo:
    lock_id: str
    who: str  # user@host, as Terraform records it
    operation: str

    @property
    def host(self) -> str:
        return self.who.rsplit("@", 1)[-1]


def parse_lock_error(output: str) -> StateLockInfo | None:
    """The lock Terraform reports in 'Error acquiring the state lock', if that is why a command failed."""
    if "Error acquiring the state lock" not in output:
        return None
    found = {k: re.search(rf"^\W*{k}:\s+(\S+)", output, re.M) for k in ("ID", "Who", "Operation")}
    if not found["ID"] or not found["Who"]:
        return None
    op = found["Operation"]
    return StateLockInfo(found["ID"].group(1), found["Who"].group(1), op.group(1) if op else "")


@dataclass(frozen=True)
class ForceUnlockStep:
    """Only for a lock whose owner is proven dead; the caller decides that."""

    lock_id: str
    name: str = "force-unlock"

    def run(self, ctx: StepContext) -> StepResult:
        return ctx.result(ctx.execute(self.name, ["force-unlock", "-force", self.lock_id]))
