"""Terraform steps: each a small object with one `run(ctx)`, each recording its CommandResult."""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.cancel import CancelToken
from orchestrator.models import PlanSummary
from orchestrator.terraform import CommandResult, CommandStatus, TerraformClient, TerraformCommand

PLAN_FILE = "tfplan"


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
    log: list[CommandResult] = field(default_factory=list)

    def execute(self, step: str, args: list[str], ok: tuple[int, ...] = (0,)) -> CommandResult:
        cmd = TerraformCommand(step=step, args=tuple(args), cwd=self.workdir, env=self.env,
                               timeout_s=self.timeout_s, ok_exit_codes=ok)
        result = self.client.run(cmd, self.cancel)
        self.log.append(result)
        return result

    @property
    def lock_timeout(self) -> str:
        return f"-lock-timeout={int(self.lock_timeout_s)}s"


class InitStep:
    def run(self, ctx: StepContext) -> CommandResult:
        args = ["init", "-input=false", "-no-color"]
        args += [f"-backend-config={k}={v}" for k, v in ctx.backend_config.items()]
        cache = ctx.env.get("TF_PLUGIN_CACHE_DIR")
        if not cache:
            return ctx.execute("init", args)
        # Terraform's plugin cache is not safe for concurrent init: one init per cache directory at a time.
        Path(cache).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(cache) / ".tfo-init.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return ctx.execute("init", args)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@dataclass(frozen=True)
class PlanStep:
    destroy: bool = False
    name: str = "plan"

    def run(self, ctx: StepContext) -> CommandResult:
        """exit 0: no changes, 2: changes (both succeed), anything else fails."""
        args = ["plan", "-input=false", "-no-color", ctx.lock_timeout, "-detailed-exitcode",
                f"-out={PLAN_FILE}", *(f"-var-file={v}" for v in ctx.var_files)]
        if self.destroy:
            args.append("-destroy")
        return ctx.execute(self.name, args, ok=(0, 2))


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


class ShowPlanStep:
    def run(self, ctx: StepContext, plan: CommandResult | None = None) -> tuple[CommandResult, PlanSummary | None]:
        """The plan's resource changes. When the plan printed its summary line, that is read instead of
        running `show -json`, which costs a second provider start (about 0.5 s a deployment)."""
        if plan is not None and (summary := summary_from_plan_output(plan)) is not None:
            return plan, summary
        result = ctx.execute("show", ["show", "-json", "-no-color", PLAN_FILE])
        if not result.ok:
            return result, None
        try:
            return result, summarize_plan(result.output)
        except (json.JSONDecodeError, AttributeError):
            failed = CommandResult(result.step, result.argv, CommandStatus.FAILED, result.exit_code,
                                   result.output, result.duration_s)
            return failed, None


class ApplyStep:
    def __init__(self, name: str = "apply") -> None:
        self.name = name

    def run(self, ctx: StepContext) -> CommandResult:
        return ctx.execute(self.name, ["apply", "-input=false", "-no-color", ctx.lock_timeout,
                                       "-auto-approve", PLAN_FILE])


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


class ForceUnlockStep:
    """Only for a lock whose owner is proven dead; the caller decides that."""

    def __init__(self, lock_id: str) -> None:
        self.lock_id = lock_id

    def run(self, ctx: StepContext) -> CommandResult:
        return ctx.execute("force-unlock", ["force-unlock", "-force", self.lock_id])
