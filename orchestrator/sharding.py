"""Validate discovered tfvars and shard each into one DeploymentSpec per service."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.config import TfoConfig
from orchestrator.discovery import Discovery
from orchestrator.errors import Problem, ValidationError
from orchestrator.models import DeploymentSpec, TfvarsFile
from orchestrator.names import unsafe_name_reason
from orchestrator.tfvars import parse_tfvars, sensitive_variables

# String values that name a local file the module will read (policies, templates, ...).
FILE_SUFFIXES = (".json", ".yaml", ".yml", ".tpl", ".tftpl", ".txt", ".pem", ".crt", ".sh", ".py",
                 ".zip", ".cfg", ".conf", ".xml", ".html", ".sql", ".toml")
INPUTS_DIR = "inputs"


def _looks_like_file(value: str) -> bool:
    if not value or "\n" in value or " " in value or "://" in value or value.startswith("arn:"):
        return False
    return value.startswith(("./", "../")) or value.lower().endswith(FILE_SUFFIXES)


def _walk_strings(value: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_strings(v, f"{where}[{i}]")


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _rewrite(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    return value


def state_key(service: str, account: str, region: str, project: str) -> str:
    return f"{service}/{account}/{region}/{project}/terraform.tfstate"


class _Sharder:
    def __init__(self, cfg: TfoConfig) -> None:
        self.cfg = cfg
        self.root = cfg.repo_root.resolve()
        self.problems: list[Problem] = []
        self._modules: dict[str, tuple[str, tuple[str, ...]] | str] = {}

    def _module(self, service: str, shown: str) -> tuple[str, tuple[str, ...]] | None:
        module = self.cfg.module_for(service)
        if module not in self._modules:  # once per module, not once per file: 10,000 files share a few
            self._modules[module] = self._inspect_module(module)
        found = self._modules[module]
        if isinstance(found, str):
            self.problems.append(Problem(shown, found.format(service=service)))
            return None
        return found

    def _inspect_module(self, module: str) -> tuple[str, tuple[str, ...]] | str:
        """(repo-relative directory, sensitive variable names), or what is wrong with it."""
        full = self.cfg.resolve(module).resolve()
        try:
            full.relative_to(self.root)
        except ValueError:
            return f"module directory {module!r} for service {{service!r}} is outside the repository"
        if not full.is_dir() or not any(full.glob("*.tf")):
            return f"module directory {module!r} for service {{service!r}} has no .tf files"
        return full.relative_to(self.root).as_posix(), sensitive_variables(full, self.cfg.cache_path)

    def _referenced_files(self, tf: TfvarsFile, variables: dict[str, Any]) -> dict[str, str] | None:
        """Original string -> repo-relative path of every local file the tfvars refers to."""
        base = (self.root / tf.path).parent
        found: dict[str, str] = {}
        ok = True
        for where, value in _walk_strings(variables, ""):
            if not _looks_like_file(value):
                continue
            if PurePosixPath(value).is_absolute():
                self.problems.append(Problem(tf.path, f"{where.lstrip('.')}: {value!r} is an absolute path; "
                                                      "refer to files relative to the tfvars file"))
                ok = False
                continue
            target = (base / value).resolve()
            try:
                rel = target.relative_to(self.root).as_posix()
            except ValueError:
                self.problems.append(
                    Problem(tf.path, f"{where.lstrip('.')}: {value!r} resolves outside the repository")
                )
                ok = False
                continue
            if not target.is_file():
                self.problems.append(Problem(tf.path, f"{where.lstrip('.')}: referenced file {value!r} "
                                                      f"({rel}) does not exist"))
                ok = False
                continue
            found[value] = rel
        return found if ok else None

    def shard(self, tf: TfvarsFile) -> list[DeploymentSpec]:
        parsed = parse_tfvars(self.root / tf.path, tf.path)
        if parsed.problems:
            self.problems.extend(parsed.problems)
            return []
        variables = parsed.variables
        region = tf.region
        if region is None:
            raw_region = variables.get("region", self.cfg.default_region)
            region = raw_region if isinstance(raw_region, str) else ""
        reason = unsafe_name_reason(region)
        if reason:
            self.problems.append(Problem(tf.path, f"region {reason}"))
            return []
        by_service: dict[str, dict[str, Any]] = {}
        shared: dict[str, Any] = {}
        for name, value in variables.items():
            service = self.cfg.services.get(name)
            if service is None:
                shared[name] = value
            else:
                by_service.setdefault(service, {})[name] = value
        if not by_service:
            known = ", ".join(sorted(self.cfg.services))
            self.problems.append(Problem(tf.path, f"sets no known service variable (known: {known})"))
            return []
        refs = self._referenced_files(tf, variables)
        if refs is None:
            return []
        specs = []
        for service in sorted(by_service):
            reason = unsafe_name_reason(service)
            if reason:
                self.problems.append(Problem(tf.path, f"service {reason}"))
                continue
            module = self._module(service, tf.path)
            if module is None:
                continue
            module_dir, sensitive = module
            own = {**shared, **by_service[service]}
            own_strings = {s for _, s in _walk_strings(own, "")} if refs else set()
            own_refs = {orig: rel for orig, rel in refs.items() if orig in own_strings}
            workspace_paths = {orig: f"{INPUTS_DIR}/{rel}" for orig, rel in own_refs.items()}
            specs.append(
                DeploymentSpec(
                    id=f"{service}/{tf.account}/{region}/{tf.project}",
                    service=service,
                    account=tf.account,
                    region=region,
                    project=tf.project,
                    state_key=state_key(service, tf.account, region, tf.project),
                    tfvars_path=tf.path,
                    module_dir=module_dir,
                    variables=_rewrite(own, workspace_paths) if workspace_paths else own,
                    referenced_files=tuple(sorted(set(own_refs.values()))),
                    sensitive_variables=sensitive,
                )
            )
        return specs


def build_deployments(cfg: TfoConfig, discovery: Discovery) -> list[DeploymentSpec]:
    """Every deployment of the discovered files, or ValidationError listing every problem found."""
    sharder = _Sharder(cfg)
    sharder.problems.extend(discovery.problems)
    specs: list[DeploymentSpec] = []
    for tf in discovery.files:
        specs.extend(sharder.shard(tf))
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.id in seen:
            sharder.problems.append(
                Problem(spec.tfvars_path, f"deployment {spec.id} is also defined by {seen[spec.id]}")
            )
        seen[spec.id] = spec.tfvars_path
    if sharder.problems:
        raise ValidationError(sharder.problems)
    return specs


def module_path(cfg: TfoConfig, spec: DeploymentSpec) -> Path:
    return cfg.repo_root / spec.module_dir
