"""Data objects passed between discovery, the executors, deploy and finalize.

Frozen and JSON-serialisable (`to_dict`/`from_dict`, by `orchestrator.codec` from the type hints), so
the same objects are stored, read back and shown. Every state is an enum: one vocabulary for progress,
reports, the store and the JSON contract (an enum's value is what users see).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Self

from orchestrator import codec, keys


class Action(StrEnum):
    PLAN = "plan"
    APPLY = "apply"
    DRIFT = "drift"  # detection: plans of the last applied bundle, nothing changed


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    NO_CHANGES = "no_changes"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    INVALID = "invalid"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # refused by a policy rule before apply: nothing was changed
    STALE = "stale"  # its saved plan no longer applies (the state moved, too old, applied already)
    SKIPPED = "skipped"  # not run: a deployment it depends on failed, was blocked, cancelled or skipped
    # Drift detection (`tfo drift`):
    IN_SYNC = "in_sync"  # infrastructure matches the last applied configuration
    DRIFTED = "drifted"  # changed outside Terraform, or the last apply did not converge
    UNMANAGED = "unmanaged"  # never applied by tfo: nothing to compare with
    ERROR = "error"  # detection could not run

    @property
    def ok(self) -> bool:
        return self in (Status.SUCCEEDED, Status.NO_CHANGES, Status.IN_SYNC, Status.UNMANAGED)


class RunStatus(StrEnum):
    """How a run ended (`running` only while it has not)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a deployment failed; or (a webhook run) it could not be started
    CANCELLED = "cancelled"
    INVALID = "invalid"  # never started: its input did not validate
    BLOCKED = "blocked"  # a policy rule refused a deployment (and nothing failed)
    DRIFTED = "drifted"  # drift detection found drift (and nothing failed)


class RollbackStrategy(StrEnum):
    REAPPLY = "reapply"  # apply the last good bundle (none: destroy what the failed apply created)
    STATE = "state"  # restore the pre-apply backup
    NONE = "none"  # record the failure only


class RollbackStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class Record:
    """`to_dict`/`from_dict` for a frozen dataclass, from its type hints."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = codec.encode(self)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return codec.decode(cls, d)


@dataclass(frozen=True)
class TfvarsFile:
    """One discovered input file with the names its path gives."""

    path: str  # relative to the repo root, POSIX separators
    account: str
    project: str
    region: str | None  # from the path template, when it has {region}


@dataclass(frozen=True)
class DeploymentSpec(Record):
    """One service's slice of one tfvars file: the unit that is planned, applied and rolled back."""

    id: str
    service: str
    account: str
    region: str
    project: str
    state_key: str
    tfvars_path: str
    module_dir: str
    # What tfo knows of the values (for redaction and its own decisions; Terraform reads var_files):
    # each variable's value, or for one tfo cannot evaluate exactly, the strings written in it.
    variables: dict[str, Any]
    referenced_files: tuple[str, ...] = ()
    sensitive_variables: tuple[str, ...] = ()
    bundle_key: str = ""
    # Variable files layered under tfvars_path (shallowest first), and the var files Terraform gets:
    # (path in the bundle, text cut from the originals), in -var-file order.
    layers: tuple[str, ...] = ()
    var_files: tuple[tuple[str, str], ...] = ()
    # The store namespace of its repository (`TfoConfig.namespace`): in its state key and last-good key.
    namespace: str = ""
    # The deployments it needs first (`orchestrator/dependencies.py`): their outputs are its input.
    depends_on: tuple[str, ...] = ()
    # Why a change-based selection took it although none of its own inputs changed ("kms/... changed").
    selected_because: str = ""

    @property
    def slug(self) -> str:
        """The id as one path segment (for directories and audit object names)."""
        return keys.slug(self.id)


@dataclass(frozen=True)
class PlanSummary:
    add: int = 0
    change: int = 0
    destroy: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.destroy)


@dataclass(frozen=True)
class RollbackRecord(Record):
    strategy: RollbackStrategy
    status: RollbackStatus
    target: str = ""  # bundle key (reapply), backup key (state) or "destroy"
    matches_target: bool | None = None
    untracked: tuple[str, ...] = ()
    error: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True)
class Violation(Record):
    """One policy rule's refusal of a deployment's plan."""

    rule: str
    message: str
    resources: tuple[str, ...] = ()  # the resource addresses it is about

    def __str__(self) -> str:
        shown = ", ".join(self.resources[:20]) + (f" and {len(self.resources) - 20} more"
                                                  if len(self.resources) > 20 else "")
        return f"{self.rule}: {self.message}" + (f" [{shown}]" if shown else "")


@dataclass(frozen=True)
class DriftedResource(Record):
    """A resource that does not match the last applied configuration. Names only, never values."""

    address: str
    type: str
    change: str  # "deleted" or "updated" outside Terraform; "pending" (the last apply did not converge)
    attributes: tuple[str, ...] = ()  # updated: which attributes differ
    actions: tuple[str, ...] = ()  # pending: what an apply would do

    def __str__(self) -> str:
        detail = f" ({', '.join(self.attributes)})" if self.attributes else ""
        detail += f" (apply would {'+'.join(self.actions)})" if self.actions else ""
        return f"{self.address}: {self.change}{detail}"


@dataclass(frozen=True)
class DeploymentResult(Record):
    spec: DeploymentSpec
    action: Action
    status: Status
    plan: PlanSummary = field(default_factory=PlanSummary)
    backup_key: str = ""
    audit_key: str = ""
    plan_text: str = ""  # redacted: safe to show
    error: str = ""  # redacted: safe to show
    duration_s: float = 0.0
    host: str = ""
    # Whether `terraform apply` started: only then can real infrastructure have changed.
    applied: bool = False
    # Serial of the state our apply left behind; a rollback refuses to run if it has moved on since.
    state_serial: int | None = None
    # The last-good bundle before this apply: what `reapply` converges back to.
    previous_bundle_key: str = ""
    lease_held: bool = False
    rollback: RollbackRecord | None = None
    violations: tuple[Violation, ...] = ()  # the policy rules that refused it (status blocked)
    drift: tuple[DriftedResource, ...] = ()  # what drift detection found (status drifted)
    severity: str = ""  # of the drift: high (deleted outside Terraform, or a critical type) or low
    lease_wait_s: float = 0.0  # how long it waited for its state's lease (another run held it)

    def public_dict(self) -> dict[str, Any]:
        """`to_dict` without the variables' values: safe for a result backend and Flower."""
        d = self.to_dict()
        d["spec"]["variables"] = {}
        d["spec"]["var_files"] = []
        return d

    def report_dict(self) -> dict[str, Any]:
        """The `--json-out` shape of one deployment (the CLI contract)."""
        s = self.spec
        return {
            "id": s.id,
            "service": s.service,
            "account": s.account,
            "region": s.region,
            "project": s.project,
            "state_key": s.state_key,
            "status": self.status.value,
            **({"selected_because": s.selected_because} if s.selected_because else {}),
            "backup_key": self.backup_key or None,
            "audit_key": self.audit_key or None,
            "plan": asdict(self.plan),
            "rollback": self.rollback.to_dict() if self.rollback else None,
            "duration_s": round(self.duration_s, 3),
            "lease_wait_s": round(self.lease_wait_s, 3),
            "error": self.error or None,
            "host": self.host,
            "policy": [v.to_dict() for v in self.violations],
            **({"drift": [d.to_dict() for d in self.drift], "severity": self.severity or None}
               if self.action == Action.DRIFT else {}),
        }


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_s(text: str) -> float:
    """"7d", "12h", "1d12h", "90s" or a number of seconds; ValueError for anything else."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration (e.g. 7d, 12h, 30m, 90s)")
    return float(sum(int(n) * _UNIT_S[u] for n, u in parts))


@dataclass(frozen=True)
class AccountPolicy(Record):
    # Applies to this account need this many approvals (`--approved-by` on the CLI, recorded in the audit).
    require_approvals: int = 0


@dataclass(frozen=True)
class PolicyConfig(Record):
    # Resource types (globs) whose delete or replace is refused unless the run allows destroys.
    protect_destroy: tuple[str, ...] = ()
    # More resource changes than this in one deployment need an approval (0: no limit).
    max_changes: int = 0
    accounts: Mapping[str, AccountPolicy] = field(default_factory=dict)
    # A saved plan older than this is stale (`tfo apply --from-plan`): "7d", "12h", "30m", "90s".
    plan_max_age: str = "7d"
    # Custom rules: Python functions ("module:function", "/abs/path.py:function") called with the plan
    # document and the deployment, returning violations; commands run with the plan document's path
    # (`{plan}`, else the last argument), a non-zero exit refusing with their output.
    python: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    # Checkov's checks on the plan document (its own install: `checkov_bin`). Failed checks block; with
    # `checkov_severity`, only those at or above it (checkov reports severities with a Prisma Cloud API
    # key; a failed check of unknown severity blocks). `checkov_checks` / `checkov_skip_checks`: ids.
    checkov: bool = False
    checkov_bin: str = "checkov"
    checkov_checks: tuple[str, ...] = ()
    checkov_skip_checks: tuple[str, ...] = ()
    checkov_severity: str = ""

    @property
    def plan_max_age_s(self) -> float:
        return duration_s(self.plan_max_age)

    @property
    def active(self) -> bool:
        return bool(self.protect_destroy or self.max_changes or self.python or self.commands or self.checkov
                    or any(a.require_approvals for a in self.accounts.values()))


@dataclass(frozen=True)
class DriftConfig(Record):
    # Resource types (globs) whose drift is high severity, like a deletion outside Terraform.
    critical_types: tuple[str, ...] = ()
    # What `tfo drift` re-applies on its own: "none", "high" (severity), "all". `--remediate` = all.
    remediate: str = "none"
    # When `tfo beat` runs drift detection (crontab: minute hour day-of-month month day-of-week).
    schedule: str = ""


@dataclass(frozen=True)
class RunOptions:
    action: Action
    rollback: RollbackStrategy = RollbackStrategy.REAPPLY
    atomic: bool = False
    # Policy waivers, recorded in the audit: destroys of protected types allowed; who approved.
    allow_destroy: bool = False
    approved_by: tuple[str, ...] = ()
    # An apply of the plans saved by this plan run (`tfo apply --from-plan`), not of new ones.
    from_plan: str = ""


@dataclass(frozen=True)
class RunSpec(Record):
    """Everything a run needs, recorded before anything executes."""

    run_id: str
    options: RunOptions
    deployments: tuple[DeploymentSpec, ...]
    started_at: str
    actor: str = ""
    git_sha: str = ""
    # Where to report back, e.g. {"github": {"repo": "o/r", "sha": "...", "pr": 12}}.
    notify: dict[str, Any] = field(default_factory=dict)
    # The rules its plans are judged by, fixed by the producer (the webhook: the server's, never the
    # repository's), so every executor and worker judges the run alike.
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # For a drift run: what counts as high severity.
    drift: DriftConfig = field(default_factory=DriftConfig)


@dataclass(frozen=True)
class RunResult:
    run: RunSpec
    results: tuple[DeploymentResult, ...]
    finished_at: str
    audit_key: str = ""

    @property
    def status(self) -> RunStatus:
        if any(r.status == Status.CANCELLED for r in self.results):
            return RunStatus.CANCELLED
        if all(r.status.ok for r in self.results):
            return RunStatus.SUCCEEDED
        if all(r.status.ok or r.status == Status.BLOCKED for r in self.results):
            return RunStatus.BLOCKED
        if all(r.status.ok or r.status == Status.DRIFTED for r in self.results):
            return RunStatus.DRIFTED
        return RunStatus.FAILED

    def report_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "action": self.run.options.action.value,
            "status": self.status.value,
            "atomic": self.run.options.atomic,
            "started_at": self.run.started_at,
            "finished_at": self.finished_at,
            "audit_key": self.audit_key or None,
            "deployments": [r.report_dict() for r in self.results],
        }
