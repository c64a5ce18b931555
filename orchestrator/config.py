"""tfo.toml plus TFO_<SECTION>_<KEY> environment overrides, resolved once into frozen dataclasses."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator import schedule
from orchestrator.errors import ConfigError
from orchestrator.models import AccountPolicy, DriftConfig, PolicyConfig, RollbackStrategy, duration_s
from orchestrator.names import unsafe_name_reason

DEFAULT_SERVICES: dict[str, str] = {
    "s3_buckets": "s3",
    "kms_keys": "kms",
    "iam_roles": "iam",
    "iam_policies": "iam",
    "lambda_functions": "lambda",
    "sqs_queues": "sqs",
    "sns_topics": "sns",
    "dynamodb_tables": "dynamodb",
    "ecr_repositories": "ecr",
    "cloudwatch_log_groups": "logs",
    "vpcs": "vpc",
    "security_groups": "vpc",
    "route53_zones": "route53",
}

ROLLBACK_STRATEGIES = tuple(s.value for s in RollbackStrategy)
FILE_KEYS = ("*_file", "*_files")


@dataclass(frozen=True)
class StoreConfig:
    kind: str = "local"
    path: str = ".tfo/store"
    bucket: str = ""
    audit_bucket: str = ""
    lock_table: str = "terraform-locks"
    region: str = "us-east-1"
    endpoint_url: str = ""
    sse: str = "AES256"
    kms_key_id: str = ""


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str = ""
    result_backend: str = ""  # default: the broker URL
    # "account" or "region": deployments go to queue "tfo.<value>" (workers opt in with --queues).
    route_by: str = ""
    # One deployment task may run this long: soft limit stops terraform cleanly (recorded cancelled),
    # the hard limit kills the worker child as a last resort.
    soft_time_limit_s: int = 7200
    time_limit_s: int = 7500
    # An unacknowledged task returns to the queue after this long; above the hard limit, so a running
    # deployment is never handed to a second worker while the first still works on it.
    visibility_timeout_s: int = 10800
    result_expires_days: int = 7
    worker_concurrency: int = 2
    # A run with dependencies is watched this often for what no task reports (a revoked task, a lost
    # settle): workers/dag.py.
    dag_watch_s: int = 30


@dataclass(frozen=True)
class GitHubConfig:
    api_url: str = "https://api.github.com"  # GitHub Enterprise: https://HOST/api/v3
    # Credentials come from the environment, never from this file: the names of the variables.
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 - a variable name, not a token
    app_id: str = ""
    app_key_env: str = "TFO_GITHUB_APP_KEY"  # PEM text of the App's private key
    installation_id: str = ""  # empty: looked up from the repository
    status_context: str = "tfo"
    # The login tfo's comments are written under, when its credentials cannot say (GET /user, /app).
    comment_author: str = ""
    # Statuses link here: "{dashboard_url}/runs/{run_id}".
    dashboard_url: str = ""
    # A report longer than one comment is split over at most this many.
    max_comments: int = 10
    # How long a call waits out GitHub's rate limits in all before it gives up.
    rate_limit_wait_s: int = 900


@dataclass(frozen=True)
class AlertsConfig:
    # A Slack incoming webhook (or TFO_ALERTS_SLACK_WEBHOOK_URL, to keep it out of the file): drift
    # transitions, and (`runs`) runs that failed, rolled back or could not be finalized; and a repository
    # (OWNER/NAME) where tfo opens an issue per drifted deployment.
    slack_webhook_url: str = ""
    github_repo: str = ""
    runs: bool = True
    # Links in alerts: "{dashboard_url}/runs/{run_id}" (default: [tfo.github] dashboard_url).
    dashboard_url: str = ""


@dataclass(frozen=True)
class DashboardConfig:
    """`tfo dashboard`: read-only, from the store. Credentials come from the environment (never the file):
    TFO_DASHBOARD_BASIC_AUTH=user:password, or a file of user:password lines named by basic_auth_file."""

    listen: str = "127.0.0.1:8480"
    basic_auth_file: str = ""
    # Behind a reverse proxy that authenticates: the header naming the user, trusted only from these hosts.
    trusted_user_header: str = ""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    refresh_s: float = 2.0  # how often the store is looked at
    stuck_after: str = "30m"  # a run that has not moved for this long is shown (and alerted) as stuck
    max_streams: int = 32  # live-update connections at once (each holds a server thread)
    threads: int = 48


# A served repository's default store namespace: its deployments' state keys and last-good pointers
# live under it, so two repositories with the same deployment ids never share a state.
DEFAULT_NAMESPACE = "repos/{repository}"


@dataclass(frozen=True)
class WebhookRepository:
    """`[tfo.webhook.repositories."OWNER/NAME"]`: one more repository the webhook serves."""

    remote_url: str = ""
    # Where its state lives in the store ("" = at the top, as a one-repository webhook keeps it: set that
    # for the repository a webhook served alone before it served several).
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True)
class ServedRepository:
    name: str  # OWNER/NAME as configured
    remote_url: str
    namespace: str
    mirror: str  # its git mirror: webhook.mirror_dir, or beside it for each of `repositories`


@dataclass(frozen=True)
class WebhookConfig:
    listen: str = "127.0.0.1:8080"
    secret_env: str = "TFO_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
    # The repository the webhook mirrors (any git URL; a token from token_env is used for https).
    remote_url: str = ""
    mirror_dir: str = ".tfo/mirror"
    # Accepted events not yet enqueued, one file each (written before the 202): a webhook that dies
    # in between runs them when it starts again.
    spool_dir: str = ".tfo/webhook-spool"
    apply_branch: str = "main"
    max_body_bytes: int = 5 * 1024 * 1024
    # Deliveries remembered (in Redis when a broker is configured) to ignore replays.
    replay_window_s: int = 7 * 24 * 3600
    # The GitHub repository (OWNER/NAME) whose events run, from `remote_url`; any other repository's are
    # ignored. Several repositories: `repositories` (each with its own remote and store namespace).
    repository: str = ""
    repositories: Mapping[str, WebhookRepository] = field(default_factory=dict)
    # A plan runs the pull request's code with the accounts' credentials: only pull requests from this
    # repository's own branches whose author's association with it is one of these are planned.
    # Anything else (a fork, an outside contributor) waits for `/tfo plan SHA` from such a person.
    pr_authors: tuple[str, ...] = ("OWNER", "MEMBER", "COLLABORATOR")
    plan_forks: bool = False
    # What applies: "merge" (a push to apply_branch), "comment" (`/tfo apply` on a pull request, applying
    # the plans saved for its head commit), or "both".
    apply_on: str = "merge"
    # What a `/tfo apply` needs besides a commenter with write access: "approved" (`approvals` approving
    # reviews of the head commit, not by its author), "mergeable" (GitHub says it merges cleanly),
    # "undiverged" (the base branch's head is in the pull request).
    apply_requirements: tuple[str, ...] = ("approved", "mergeable", "undiverged")
    approvals: int = 1

    def served(self, namespace: str = "") -> dict[str, ServedRepository]:
        """Every repository whose events run, by lower-cased OWNER/NAME (GitHub's names are case-insensitive).

        `repository` keeps the server's own `namespace` (normally none: where a one-repository webhook
        always kept its state); each of `repositories` its own, lower-cased by default so that fixing a
        name's case in this file never moves a repository's state.
        """
        out: dict[str, ServedRepository] = {}
        if self.repository:
            out[self.repository.lower()] = ServedRepository(self.repository, self.remote_url, namespace,
                                                            self.mirror_dir)
        base = Path(self.mirror_dir)
        for name, r in self.repositories.items():
            out[name.lower()] = ServedRepository(name, r.remote_url,
                                                 r.namespace.replace("{repository}", name.lower()),
                                                 str(base.parent / f"{base.name}-{name.lower().replace('/', '__')}"))
        return out


@dataclass(frozen=True)
class AccountConfig:
    role_arn: str = ""
    # The other accounts whose deployments' outputs this account's deployments may be given through
    # tfo_depends_on ("*": any). tfo reads an upstream's state with the upstream account's credentials, and
    # the downstream's code (a pull request's, perhaps) sees every value: crossing accounts is opted into.
    outputs_from: tuple[str, ...] = ()

    def reads_outputs_of(self, account: str) -> bool:
        return "*" in self.outputs_from or account in self.outputs_from


@dataclass(frozen=True)
class TfoConfig:
    repo_root: Path
    module_dir: str = "terraform"
    path_template: str = "Accounts/{account}/{project}.tfvars"
    default_region: str = "us-east-1"
    terraform_bin: str = "terraform"
    max_workers: int = 5
    rollback: str = "reapply"
    # A prefix for every deployment's state key and last-good pointer in the store ("" = none), so several
    # repositories can share one store; the webhook sets it per served repository.
    namespace: str = ""
    workdir: str = ".tfo/work"
    # Slow facts keyed by their inputs (terraform's version, a module's sensitive variables). Empty: the
    # user's cache ($XDG_CACHE_HOME/tfo, else ~/.cache/tfo), which outlives checkouts; see user_cache_dir.
    cache_dir: str = ""
    # Terraform's provider plugin cache for this host; `terraform init` is serialised per cache directory.
    plugin_cache_dir: str = ""
    # How long a run waits for another run's lease on the same state key before failing it.
    lock_timeout_s: float = 300.0
    # A lease not renewed for this long belongs to a dead process and may be taken over.
    lease_ttl_s: float = 120.0
    # One terraform command may run this long before it is stopped and the deployment cancelled.
    terraform_timeout_s: float = 3600.0
    # Variable files layered under each deployment's own file: these names, looked up in the repository
    # root and every directory down to the deployment file's, applied shallowest first (Terraform's
    # -var-file order: a later file replaces a variable an earlier one set).
    layers: tuple[str, ...] = ()
    # Variables that give a deployment's region when the path does not: the first one set wins. The
    # region is part of the state key, so adding a name here moves deployments that set it.
    region_variables: tuple[str, ...] = ("region",)
    # Keys (at any depth) whose string values name local files the module reads; shipped with the
    # deployment and checked to exist inside the repository.
    file_keys: tuple[str, ...] = FILE_KEYS
    # "service": one deployment per service a file sets (the service table below); "file": every file
    # is one deployment of module_dir, with no service in its id or state key.
    shard_by: str = "service"
    # Environment variables terraform may see besides its own, the clouds' and the basics (names or
    # globs; see orchestrator/terraform_env.py). tfo's own secrets are never passed.
    terraform_env: tuple[str, ...] = ()
    services: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVICES))
    modules: Mapping[str, str] = field(default_factory=dict)
    # [tfo.dependencies] s3 = ["kms"]: a deployment of s3 runs after the kms deployment of the same account,
    # region and project (where the repository has one) and reads its outputs.
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    store: StoreConfig = field(default_factory=StoreConfig)
    backend_config: Mapping[str, str] = field(default_factory=dict)
    accounts: Mapping[str, AccountConfig] = field(default_factory=dict)
    celery: CeleryConfig = field(default_factory=CeleryConfig)
    github: GitHubConfig = field(default_factory=GitHubConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)

    def resolve(self, relative: str) -> Path:
        """A configured path, relative to the repo root unless absolute."""
        p = Path(relative)
        return p if p.is_absolute() else self.repo_root / p

    @property
    def workdir_path(self) -> Path:
        return self.resolve(self.workdir)

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.cache_dir)

    @property
    def secret_env_names(self) -> tuple[str, ...]:
        """The variables that hold tfo's own secrets: never passed to terraform."""
        return (self.github.token_env, self.github.app_key_env, self.webhook.secret_env)

    def module_for(self, service: str) -> str:
        return self.modules.get(service, self.module_dir)

    @property
    def private_dirs(self) -> tuple[str, ...]:
        """tfo's own directories that lie inside the repository (repo-relative): never a deployment's input."""
        root = self.repo_root.resolve()
        found = []
        mirrors = [served.mirror for served in self.webhook.served(self.namespace).values()]
        for configured in (self.workdir, self.cache_dir, self.plugin_cache_dir, self.webhook.mirror_dir, *mirrors,
                           self.webhook.spool_dir, self.store.path if self.store.kind == "local" else ""):
            if not configured:
                continue
            try:
                found.append(self.resolve(configured).resolve().relative_to(root).as_posix())
            except ValueError:
                continue  # outside the repository: nothing a repository path can reach
        return tuple(f for f in found if f != ".")


_SCALAR_SECTIONS: dict[str, type] = {"store": StoreConfig, "celery": CeleryConfig, "github": GitHubConfig,
                                     "webhook": WebhookConfig, "drift": DriftConfig, "alerts": AlertsConfig,
                                     "dashboard": DashboardConfig}
_MAP_SECTIONS = ("services", "modules", "backend_config")


def _coerce(name: str, value: Any, like: Any) -> Any:
    """Coerce a TOML or environment value to the type of the field's default."""
    if isinstance(like, tuple):  # a list of strings; from the environment, comma-separated
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{name}: {value!r} is not a list of strings")
        return tuple(items)
    try:
        if isinstance(like, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if isinstance(like, int):
            return int(value)
        if isinstance(like, float):
            return float(value)
        if isinstance(like, str):
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {value!r} is not a valid {type(like).__name__}") from e
    return value


def _scalar_fields(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    defaults = cls(repo_root=Path(".")) if cls is TfoConfig else cls()
    known = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known or isinstance(value, dict):
            raise ConfigError(f"{where}: unknown key {key!r}")
        out[key] = _coerce(f"{where}.{key}", value, getattr(defaults, key))
    return out


def load_config(
    config_file: Path | None = None,
    *,
    repo_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TfoConfig:
    """Read tfo.toml (if any), then TFO_* variables, then command-line overrides."""
    env = os.environ if environ is None else environ
    if config_file is None:
        candidate = (repo_root or Path.cwd()) / "tfo.toml"
        config_file = candidate if candidate.is_file() else None
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"{config_file}: config file does not exist") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{config_file}: not valid TOML: {e}") from e
        data = dict(raw.get("tfo", {}))
        unknown_top = set(raw) - {"tfo"}
        if unknown_top:
            raise ConfigError(f"{config_file}: unknown table(s) {sorted(unknown_top)}; everything lives under [tfo]")
    root = (repo_root or (config_file.parent if config_file else Path.cwd())).resolve()
    where = str(config_file or "config")

    sections: dict[str, Any] = {}
    webhook_raw = dict(data.get("webhook") or {})
    repositories_raw = webhook_raw.pop("repositories", {})
    if not isinstance(repositories_raw, dict):
        raise ConfigError(f"{where} [tfo.webhook.repositories]: must be a table of OWNER/NAME tables")
    data["webhook"] = webhook_raw
    repositories = {}
    for name, settings in repositories_raw.items():
        section = f'{where} [tfo.webhook.repositories."{name}"]'
        if not isinstance(settings, dict):
            raise ConfigError(f"{section}: must be a table (remote_url, namespace)")
        repositories[str(name)] = WebhookRepository(**_scalar_fields(WebhookRepository, settings, section))
    for name, cls in _SCALAR_SECTIONS.items():
        sections[name] = _scalar_fields(cls, data.pop(name, {}), f"{where} [tfo.{name}]")
    maps: dict[str, Any] = {}
    for name in _MAP_SECTIONS:
        section = data.pop(name, None)
        if section is not None:
            if not isinstance(section, dict) or not all(isinstance(v, str | int | bool) for v in section.values()):
                raise ConfigError(f"{where} [tfo.{name}]: must be a table of strings")
            maps[name] = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in section.items()}
    dependencies_raw = data.pop("dependencies", None) or {}
    if not isinstance(dependencies_raw, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in dependencies_raw.values()):
        raise ConfigError(f'{where} [tfo.dependencies]: must be a table of service lists (s3 = ["kms"])')
    maps["dependencies"] = {str(k): tuple(dict.fromkeys(v)) for k, v in dependencies_raw.items()}
    policy_raw = data.pop("policy", None) or {}
    if not isinstance(policy_raw, dict) or not isinstance(policy_raw.get("accounts", {}), dict):
        raise ConfigError(f"{where} [tfo.policy]: must be a table (with [tfo.policy.accounts.NAME] tables)")
    policy_raw = dict(policy_raw)
    policy_accounts = {}
    for acct, settings in dict(policy_raw.pop("accounts", None) or {}).items():
        section = f"{where} [tfo.policy.accounts.{acct}]"
        if not isinstance(settings, dict):
            raise ConfigError(f"{section}: must be a table (require_approvals)")
        policy_accounts[str(acct)] = AccountPolicy(**_scalar_fields(AccountPolicy, settings, section))
    policy = PolicyConfig(**_scalar_fields(PolicyConfig, policy_raw, f"{where} [tfo.policy]"),
                          accounts=policy_accounts)
    accounts_raw = data.pop("accounts", {})
    accounts = {
        str(acct): AccountConfig(**_scalar_fields(AccountConfig, settings, f"{where} [tfo.accounts.{acct}]"))
        for acct, settings in accounts_raw.items()
    }
    top = _scalar_fields(TfoConfig, data, f"{where} [tfo]")

    # Environment: TFO_STORE_BUCKET -> store.bucket, TFO_MAX_WORKERS -> max_workers, ...
    for var, value in env.items():
        if not var.startswith("TFO_"):
            continue
        rest = var[4:].lower()
        section_hit = next((s for s in _SCALAR_SECTIONS if rest.startswith(s + "_")), None)
        if section_hit:
            key = rest[len(section_hit) + 1 :]
            cls = _SCALAR_SECTIONS[section_hit]
            if key in {f.name for f in fields(cls)} and not isinstance(getattr(cls(), key), Mapping):
                sections[section_hit][key] = _coerce(var, value, getattr(cls(), key))
            continue
        if rest in {f.name for f in fields(TfoConfig)} and rest not in _MAP_SECTIONS and rest != "repo_root":
            default = getattr(TfoConfig(repo_root=root), rest)
            if isinstance(default, str | int | float | bool | tuple):  # tables (accounts, policy) are the file's
                top[rest] = _coerce(var, value, default)

    for key, value in (overrides or {}).items():
        if value is not None:
            top[key] = value
    if not top.get("cache_dir"):
        top["cache_dir"] = str(user_cache_dir(env, root))

    cfg = TfoConfig(
        repo_root=root,
        store=StoreConfig(**sections["store"]),
        celery=CeleryConfig(**sections["celery"]),
        github=GitHubConfig(**sections["github"]),
        webhook=WebhookConfig(**sections["webhook"], repositories=repositories),
        drift=DriftConfig(**sections["drift"]),
        alerts=AlertsConfig(**sections["alerts"]),
        dashboard=DashboardConfig(**sections["dashboard"]),
        accounts=accounts,
        policy=policy,
        **maps,
        **top,
    )
    _check(cfg, where)
    return cfg


def user_cache_dir(env: Mapping[str, str], repo_root: Path) -> Path:
    """Like pre-commit's: entries are keyed by content, so one cache serves every checkout on a host and
    a fresh clone in CI starts warm (or restores it with the CI's cache step). No home: the checkout."""
    if Path(env.get("XDG_CACHE_HOME", "")).is_absolute():  # the XDG spec ignores a relative one
        return Path(env["XDG_CACHE_HOME"]) / "tfo"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "tfo"
    return repo_root / ".tfo" / "cache"


def _check(cfg: TfoConfig, where: str) -> None:
    if cfg.rollback not in ROLLBACK_STRATEGIES:
        raise ConfigError(f"{where}: rollback = {cfg.rollback!r}; expected one of {', '.join(ROLLBACK_STRATEGIES)}")
    if cfg.store.kind not in ("local", "s3"):
        raise ConfigError(f"{where}: store.kind = {cfg.store.kind!r}; expected 'local' or 's3'")
    if cfg.store.kind == "s3" and not cfg.store.bucket:
        raise ConfigError(f"{where}: store.kind = 's3' needs store.bucket (or TFO_STORE_BUCKET)")
    if cfg.store.sse not in ("AES256", "aws:kms"):
        raise ConfigError(f"{where}: store.sse = {cfg.store.sse!r}; expected 'AES256' or 'aws:kms'")
    from orchestrator.terraform_env import refused_names

    refused = refused_names(cfg.terraform_env, cfg.secret_env_names)
    if refused:
        raise ConfigError(f"{where}: terraform_env names {', '.join(refused)}: tfo's own secrets are never passed "
                          "to terraform (a plan runs the repository's code)")
    if cfg.policy.max_changes < 0 or any(a.require_approvals < 0 for a in cfg.policy.accounts.values()):
        raise ConfigError(f"{where}: [tfo.policy] max_changes and require_approvals cannot be negative")
    try:
        cfg.policy.plan_max_age_s  # noqa: B018 - parsed here so a bad value is a config error, not a run's
    except ValueError as e:
        raise ConfigError(f"{where}: [tfo.policy] plan_max_age: {e}") from e
    from orchestrator.policy import rule_problems

    problems = rule_problems(cfg.policy)
    if problems:
        raise ConfigError(f"{where}: [tfo.policy] " + "; ".join(problems))
    if cfg.max_workers < 1:
        raise ConfigError(f"{where}: max_workers must be at least 1")
    c = cfg.celery
    if c.route_by not in ("", "account", "region"):
        raise ConfigError(f"{where}: celery.route_by = {c.route_by!r}; expected 'account', 'region' or empty")
    if not c.soft_time_limit_s < c.time_limit_s < c.visibility_timeout_s:
        raise ConfigError(f"{where}: celery needs soft_time_limit_s < time_limit_s < visibility_timeout_s")
    ns_problem = namespace_problem(cfg.namespace)
    if ns_problem:
        raise ConfigError(f"{where}: namespace {ns_problem}")
    _check_webhook_repositories(cfg, where)
    if cfg.drift.remediate not in ("none", "high", "all"):
        raise ConfigError(f"{where}: drift.remediate = {cfg.drift.remediate!r}; expected 'none', 'high' or 'all'")
    known_services = set(cfg.services.values())
    for service, needs in cfg.dependencies.items():
        unknown = sorted({service, *needs} - known_services)
        if cfg.shard_by == "file":
            raise ConfigError(f"{where}: [tfo.dependencies] needs services; with shard_by = \"file\" use "
                              "tfo_depends_on in the tfvars files")
        if unknown:
            raise ConfigError(f"{where}: [tfo.dependencies] names {', '.join(unknown)}, which "
                              f"{'is no service' if len(unknown) == 1 else 'are no services'} (known: "
                              f"{', '.join(sorted(known_services))})")
        if service in needs:
            raise ConfigError(f"{where}: [tfo.dependencies] {service} cannot depend on itself")
    for account, settings in cfg.accounts.items():
        bad = [a for a in settings.outputs_from if a != "*" and unsafe_name_reason(a)]
        if bad:
            raise ConfigError(f"{where}: [tfo.accounts.{account}] outputs_from: {', '.join(map(repr, bad))} "
                              "is no account name (or \"*\")")
    try:
        duration_s(cfg.dashboard.stuck_after)
    except ValueError as e:
        raise ConfigError(f"{where}: dashboard.stuck_after = {cfg.dashboard.stuck_after!r}: {e}") from e
    if cfg.dashboard.refresh_s <= 0 or cfg.dashboard.max_streams < 1 or cfg.dashboard.threads < 4:
        raise ConfigError(f"{where}: [tfo.dashboard] refresh_s must be positive, max_streams at least 1, "
                          "threads at least 4")
    if cfg.drift.schedule:
        try:
            schedule.parse(cfg.drift.schedule)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
    w = cfg.webhook
    if w.apply_on not in ("merge", "comment", "both"):
        raise ConfigError(f"{where}: webhook.apply_on = {w.apply_on!r}; expected 'merge', 'comment' or 'both'")
    unknown_requirements = sorted(set(w.apply_requirements) - {"approved", "mergeable", "undiverged"})
    if unknown_requirements:
        raise ConfigError(f"{where}: webhook.apply_requirements has {', '.join(unknown_requirements)}; expected "
                          "approved, mergeable, undiverged")
    if w.approvals < 0:
        raise ConfigError(f"{where}: webhook.approvals cannot be negative")
    w = cfg.webhook
    associations = {"OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR",
                    "FIRST_TIMER", "MANNEQUIN", "NONE"}
    unknown = [a for a in w.pr_authors if a not in associations]
    if unknown:
        raise ConfigError(f"{where}: webhook.pr_authors has {', '.join(unknown)}; GitHub's author associations "
                          f"are {', '.join(sorted(associations))}")
    template_problem = path_template_problem(cfg.path_template)
    if template_problem:
        raise ConfigError(f"{where}: path_template = {cfg.path_template!r}: {template_problem}")
    placeholders = set(PLACEHOLDER.findall(cfg.path_template))
    for name, value in [("module_dir", cfg.module_dir), *((f"modules.{k}", v) for k, v in cfg.modules.items())]:
        problem = _relative_problem(value) or next(
            (f"placeholder {{{p}}} is not in path_template" for p in PLACEHOLDER.findall(value)
             if p not in placeholders), None)
        if problem or re.search(r"\{(?!(?:account|project|region)\})", value):
            raise ConfigError(f"{where}: {name} = {value!r}: {problem or 'unknown placeholder'}")
    if cfg.shard_by not in ("service", "file"):
        raise ConfigError(f"{where}: shard_by = {cfg.shard_by!r}; expected 'service' or 'file'")
    for layer in cfg.layers:
        if "/" in layer or not layer.endswith((".tfvars", ".tfvars.json")):
            raise ConfigError(f"{where}: layers: {layer!r} must be a file name ending in .tfvars or .tfvars.json")


PLACEHOLDER = re.compile(r"\{(account|project|region)\}")


def _relative_problem(path: str) -> str | None:
    if not path or path.startswith("/") or re.match(r"[A-Za-z]:[\\/]", path):
        return "must be a path relative to the repository root"
    if ".." in path.split("/"):
        return "must not contain '..'"
    return None


def path_template_problem(template: str) -> str | None:
    """Why a path template cannot be used, or None."""
    problem = _relative_problem(template)
    if problem:
        return problem
    unknown = re.findall(r"\{(?!(?:account|project|region)\})[^}]*\}?", template)
    if unknown:
        return f"unknown placeholder {unknown[0]!r} (known: {{account}}, {{project}}, {{region}})"
    if "{account}" not in template:
        return "must contain {account}"
    names = PLACEHOLDER.findall(template)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"placeholder {{{repeated[0]}}} appears more than once"
    if not template.endswith((".tfvars", ".tfvars.json")):
        return "must end in .tfvars or .tfvars.json"
    for segment in template.split("/"):
        if "**" in segment and segment != "**":
            return "'**' must be a whole path segment (e.g. Accounts/**/{account}/{project}.tfvars)"
        if segment != "**" and any(c in segment for c in "*?[]"):
            return "glob characters other than a '**' segment are not supported; use placeholders"
    if template.split("/")[-1] == "**":
        return "must end with a file name"
    return None


def with_overrides(cfg: TfoConfig, **changes: Any) -> TfoConfig:
    clean = {k: v for k, v in changes.items() if v is not None}
    new = replace(cfg, **clean)
    _check(new, "command line")
    return new


def _check_webhook_repositories(cfg: TfoConfig, where: str) -> None:
    w = cfg.webhook
    if w.remote_url and not w.repository:
        raise ConfigError(f"{where}: webhook.remote_url is set without webhook.repository (OWNER/NAME)")
    seen: dict[str, str] = {}
    for name in ([w.repository] if w.repository else []) + list(w.repositories):
        if not re.fullmatch(r"[A-Za-z0-9_-]+/[A-Za-z0-9._-]+", name):
            raise ConfigError(f"{where}: webhook repository {name!r}; expected OWNER/NAME")
        if name.lower() in seen:
            raise ConfigError(f"{where}: webhook repository {name} is named twice (as {seen[name.lower()]} too; "
                              "names are case-insensitive)")
        seen[name.lower()] = name
    served = list(w.served(cfg.namespace).values())
    for repo in served:
        if repo.name in w.repositories and not repo.remote_url:
            raise ConfigError(f'{where}: [tfo.webhook.repositories."{repo.name}"] needs remote_url')
        problem = namespace_problem(repo.namespace)
        if problem:
            raise ConfigError(f'{where}: the namespace of webhook repository {repo.name} {problem}; set '
                              f'[tfo.webhook.repositories."{repo.name}"] namespace')
    # One namespace must never be a prefix of another's keys: "a/b/c" and "a/b/c/d" could meet.
    for i, a in enumerate(served):
        for b in served[i + 1:]:
            pa, pb = a.namespace.lower().split("/"), b.namespace.lower().split("/")
            shorter = min(len(pa), len(pb))
            same = a.namespace.lower() == b.namespace.lower()
            if same or (a.namespace and b.namespace and pa[:shorter] == pb[:shorter]):
                raise ConfigError(f"{where}: webhook repositories {a.name} and {b.name} have the store namespaces "
                                  f"{a.namespace!r} and {b.namespace!r}: one holds the other's keys, so their states "
                                  "could collide")


def namespace_problem(namespace: str) -> str:
    """Why a store namespace cannot be used ("" when it can): safe names separated by '/'."""
    if not namespace:
        return ""
    for part in namespace.split("/"):
        reason = unsafe_name_reason(part)
        if reason:
            return f"{namespace!r}: a part {reason}"
    if namespace.split("/")[0] in ("backups", "bundles", "last-good", "runs", "audit", "locks", "pulls",
                                   "reservations", "drift"):
        return f"{namespace!r} starts with one of tfo's own store prefixes"
    if namespace.count("/") < 2:
        # A state key without a namespace has at most 4 parts before terraform.tfstate; with 3 or more
        # in front, a namespaced key can never equal one that has none.
        return f"{namespace!r} has fewer than 3 parts (e.g. repos/OWNER/NAME)"
    return ""


def checkout_config(server: TfoConfig, checkout: Path, namespace: str) -> tuple[TfoConfig, str]:
    """A checkout's settings (its own tfo.toml, read without the environment) under a server's (the webhook's,
    `tfo beat`'s): where things run and live, credentials, accounts, policy and the namespace are the
    server's. Also the namespace the checkout pins, which the caller must refuse if it is another."""
    own = checkout / "tfo.toml"
    repo_cfg = load_config(own if own.is_file() else None, repo_root=checkout, environ={})
    store = replace(server.store, path=str(server.resolve(server.store.path)))
    cfg = replace(repo_cfg, store=store, celery=server.celery, github=server.github, webhook=server.webhook,
                  workdir=str(server.workdir_path), plugin_cache_dir=server.plugin_cache_dir,
                  terraform_bin=server.terraform_bin, terraform_env=server.terraform_env, cache_dir=server.cache_dir,
                  accounts=server.accounts, policy=server.policy, alerts=server.alerts,
                  # the schedule and what is remediated are the server's; a repository may only name more
                  # of its resource types as critical
                  drift=replace(server.drift, critical_types=tuple(dict.fromkeys(
                      server.drift.critical_types + repo_cfg.drift.critical_types))),
                  # never the repository's choice: another namespace would be another repository's state
                  namespace=namespace)
    return cfg, repo_cfg.namespace
