"""Data objects passed between discovery, the executors, deploy and finalize.

Frozen, JSON-serialisable (`to_dict`/`from_dict`) so the same objects can travel as Celery arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    PLAN = "plan"
    APPLY = "apply"


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    NO_CHANGES = "no_changes"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    INVALID = "invalid"
    CANCELLED = "cancelled"

    @property
    def ok(self) -> bool:
        return self in (Status.SUCCEEDED, Status.NO_CHANGES)


@dataclass(frozen=True)
class TfvarsFile:
    """One discovered input file with the names its path gives."""

    path: str  # relative to the repo root, POSIX separators
    account: str
    project: str
    region: str | None  # from the path template, when it has {region}


@dataclass(frozen=True)
class DeploymentSpec:
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["referenced_files"] = list(self.referenced_files)
        d["sensitive_variables"] = list(self.sensitive_variables)
        d["layers"] = list(self.layers)
        d["var_files"] = [list(v) for v in self.var_files]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeploymentSpec:
        return cls(
            **{
                **d,
                "referenced_files": tuple(d.get("referenced_files", ())),
                "sensitive_variables": tuple(d.get("sensitive_variables", ())),
                "layers": tuple(d.get("layers", ())),
                "var_files": tuple((str(n), str(t)) for n, t in d.get("var_files", ())),
            }
        )

    @property
    def slug(self) -> str:
        """The id as one path segment (for directories and audit object names)."""
        return self.id.replace("/", "__")


@dataclass(frozen=True)
class PlanSummary:
    add: int = 0
    change: int = 0
    destroy: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.destroy)


@dataclass(frozen=True)
class RollbackRecord:
    strategy: str
    status: str  # succeeded | failed | skipped
    target: str = ""  # bundle key (reapply), backup key (state) or "destroy"
    matches_target: bool | None = None
    untracked: tuple[str, ...] = ()
    error: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["untracked"] = list(self.untracked)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RollbackRecord:
        return cls(**{**d, "untracked": tuple(d.get("untracked", ()))})


@dataclass(frozen=True)
class DeploymentResult:
    spec: DeploymentSpec
    action: str
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "action": self.action,
            "status": self.status.value,
            "plan": asdict(self.plan),
            "backup_key": self.backup_key,
            "audit_key": self.audit_key,
            "plan_text": self.plan_text,
            "error": self.error,
            "duration_s": self.duration_s,
            "host": self.host,
            "applied": self.applied,
            "state_serial": self.state_serial,
            "previous_bundle_key": self.previous_bundle_key,
            "lease_held": self.lease_held,
            "rollback": self.rollback.to_dict() if self.rollback else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeploymentResult:
        return cls(
            spec=DeploymentSpec.from_dict(d["spec"]),
            action=d["action"],
            status=Status(d["status"]),
            plan=PlanSummary(**d.get("plan", {})),
            backup_key=d.get("backup_key", ""),
            audit_key=d.get("audit_key", ""),
            plan_text=d.get("plan_text", ""),
            error=d.get("error", ""),
            duration_s=d.get("duration_s", 0.0),
            host=d.get("host", ""),
            applied=d.get("applied", False),
            state_serial=d.get("state_serial"),
            previous_bundle_key=d.get("previous_bundle_key", ""),
            lease_held=d.get("lease_held", False),
            rollback=RollbackRecord.from_dict(d["rollback"]) if d.get("rollback") else None,
        )

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
            "backup_key": self.backup_key or None,
            "audit_key": self.audit_key or None,
            "plan": asdict(self.plan),
            "rollback": self.rollback.to_dict() if self.rollback else None,
            "duration_s": round(self.duration_s, 3),
            "error": self.error or None,
            "host": self.host,
        }


@dataclass(frozen=True)
class RunOptions:
    action: Action
    rollback: str = "reapply"
    atomic: bool = False


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, recorded before anything executes."""

    run_id: str
    options: RunOptions
    deployments: tuple[DeploymentSpec, ...]
    started_at: str
    actor: str = ""
    git_sha: str = ""
    # Where to report back, e.g. {"github": {"repo": "o/r", "sha": "...", "pr": 12}}.
    notify: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "notify": self.notify,
            "run_id": self.run_id,
            "options": {"action": self.options.action.value, "rollback": self.options.rollback,
                        "atomic": self.options.atomic},
            "deployments": [d.to_dict() for d in self.deployments],
            "started_at": self.started_at,
            "actor": self.actor,
            "git_sha": self.git_sha,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        o = d["options"]
        return cls(
            run_id=d["run_id"],
            options=RunOptions(Action(o["action"]), o["rollback"], o["atomic"]),
            deployments=tuple(DeploymentSpec.from_dict(x) for x in d["deployments"]),
            started_at=d["started_at"],
            actor=d.get("actor", ""),
            git_sha=d.get("git_sha", ""),
            notify=dict(d.get("notify") or {}),
        )


@dataclass(frozen=True)
class RunResult:
    run: RunSpec
    results: tuple[DeploymentResult, ...]
    finished_at: str
    audit_key: str = ""

    @property
    def status(self) -> str:
        if any(r.status == Status.CANCELLED for r in self.results):
            return "cancelled"
        if all(r.status.ok for r in self.results):
            return "succeeded"
        return "failed"

    def report_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "action": self.run.options.action.value,
            "status": self.status,
            "atomic": self.run.options.atomic,
            "started_at": self.run.started_at,
            "finished_at": self.finished_at,
            "audit_key": self.audit_key or None,
            "deployments": [r.report_dict() for r in self.results],
        }
