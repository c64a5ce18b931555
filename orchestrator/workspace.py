"""A deployment's working directory on this host, and the context its Terraform steps run in."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from orchestrator import dependencies
from orchestrator.bundle import Workspace, extract_bundle, fetch_bundle
from orchestrator.errors import UserError
from orchestrator.models import DeploymentSpec
from orchestrator.redaction import Redactor
from orchestrator.runtime import Runtime
from orchestrator.steps import StepContext


def redactor_for(spec: DeploymentSpec) -> Redactor:
    r = Redactor()
    r.add_sensitive_variables(spec.variables, spec.sensitive_variables)
    return r


def directory(rt: Runtime, run_id: str, spec: DeploymentSpec, suffix: str = "") -> Path:
    """Where one attempt works: `{workdir}/{run}/{slug}` (".resume", ".rollback" for the others)."""
    return rt.run_dir(run_id) / f"{spec.slug}{suffix}"


def prepare_workspace(rt: Runtime, run_id: str, spec: DeploymentSpec, bundle_key: str,
                      suffix: str = "") -> Workspace:
    """A fresh per-deployment directory from the bundle (modules, var files, referenced files) with the
    store's backend settings beside the root module."""
    # Owner-only: a workspace holds tfvars and a plan file, both with secrets in them.
    rt.cfg.workdir_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    rt.run_dir(run_id).mkdir(mode=0o700, exist_ok=True)
    dest = directory(rt, run_id, spec, suffix)
    if dest.exists():
        shutil.rmtree(dest)  # a retried deployment starts from its bundle, never from leftovers
    ws = extract_bundle(fetch_bundle(rt.store, bundle_key), dest)
    for name, content in rt.store.backend_files(spec.state_key).items():
        (ws.cwd / name).write_text(content)
    return ws


def step_context(rt: Runtime, ws: Workspace, spec: DeploymentSpec, run_id: str,
                 redactor: Redactor | None = None, returning: Mapping[str, str] | None = None) -> StepContext:
    """The terraform context of one deployment's directory; `returning` is a rollback's (the upstreams
    rolled back in the same run, whose outputs are read from their backups: `dependency_outputs`)."""
    backend = {**rt.store.backend_config(spec.state_key, spec.region), **rt.cfg.backend_config}
    env = deployment_env(spec, ws.root, rt.cfg.resolve(rt.cfg.plugin_cache_dir) if rt.cfg.plugin_cache_dir else None)
    redactor = redactor or redactor_for(spec)
    creds = rt.account_credentials(spec.account, run_id)
    if creds is not None:
        # The account's role serves terraform's backend and providers alike.
        env.update(creds.env())
        redactor.add(creds.secrets())
    var_files, digests = ws.var_files, {}
    if spec.depends_on:
        # Read when the step context is made, so after the upstreams' applies in this run.
        # The ids of one repository share a shape, the downstream's own: the checkout's shard_by, which a
        # worker's config need not share.
        by_service = bool(spec.service)
        for upstream in spec.depends_on:  # again here: this host's accounts, whatever the producer's said
            refusal = dependencies.cross_account_refusal(rt.cfg, spec, dependencies.account_of(upstream, by_service))
            if refusal:
                raise UserError(f"{dependencies.RESERVED}: {upstream}: {refusal}")
        outputs, sensitive = dependencies.dependency_outputs(
            lambda upstream: rt.state_store(dependencies.account_of(upstream, by_service), run_id), spec, returning)
        redactor.add(sensitive)
        digests = dependencies.output_digests(outputs, spec)
        value = dependencies.as_variable(outputs)
        if len(value.encode()) <= dependencies.ENV_VALUE_LIMIT:
            env[f"TF_VAR_{dependencies.OUTPUTS_VARIABLE}"] = value
        else:
            path = ws.root / dependencies.OUTPUTS_FILE
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
                f.write(dependencies.as_var_file(outputs))
            var_files = (*var_files, os.path.relpath(path, ws.cwd))
    return StepContext(workdir=ws.cwd, client=rt.client, cancel=rt.cancel, timeout_s=rt.cfg.terraform_timeout_s,
                       lock_timeout_s=min(rt.cfg.lock_timeout_s, 600), backend_config=backend, env=env,
                       var_files=var_files, upstream_outputs=digests, redactor=redactor)


def deployment_env(spec: DeploymentSpec, workdir: Path, plugin_cache: Path | None = None) -> dict[str, str]:
    # TF_VAR_* for variables a module does not declare are ignored, so every module may opt in.
    cache = {"TF_PLUGIN_CACHE_DIR": str(plugin_cache)} if plugin_cache else {}
    return {
        **cache,
        "TF_DATA_DIR": str(workdir / ".terraform"),
        "TF_VAR_tfo_deployment_id": spec.id,
        "TF_VAR_tfo_service": spec.service,
        "TF_VAR_tfo_account": spec.account,
        "TF_VAR_tfo_region": spec.region,
        "TF_VAR_tfo_project": spec.project,
    }


def drop_provider_binaries(rt: Runtime, run_id: str, spec: DeploymentSpec) -> None:
    """Provider binaries are large and re-fetched on demand; plan, tfvars, module and logs stay as the record."""
    for suffix in ("", ".resume"):
        shutil.rmtree(directory(rt, run_id, spec, suffix) / ".terraform", ignore_errors=True)
