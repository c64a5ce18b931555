"""Policy gates: built-in rules read a deployment's plan (`terraform show -json`) before it is applied and
may refuse it. A refusal is a list of Violations on the result (status `blocked`, exit 4), never an
exception. Waivers (`--allow-destroy`, `--approved-by`) are part of the run and recorded in its audit.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from orchestrator.models import AccountPolicy, DeploymentSpec, PolicyConfig, RunOptions, Violation

__all__ = ["AccountPolicy", "PolicyConfig", "changed_resources", "custom_rules", "describe", "evaluate",
           "rule_problems", "sensitive_values"]

COMMAND_TIMEOUT_S = 300
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
_CHECK_ID = re.compile(r"[A-Z][A-Z0-9_]{2,63}")
_OUTPUT_SHOWN = 2000  # characters of a refusing command's output kept in its violation

# Actions that change nothing real: a plan's no-op and a data source read.
_NO_CHANGE = (["no-op"], ["read"])


def changed_resources(plan: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(address, type, actions) of every managed resource the plan changes."""
    out = []
    for rc in plan.get("resource_changes") or []:
        actions = list((rc.get("change") or {}).get("actions") or [])
        if rc.get("mode", "managed") != "managed" or actions in _NO_CHANGE or not actions:
            continue
        out.append((str(rc.get("address", "?")), str(rc.get("type", "?")), actions))
    return out


def evaluate(plan: Mapping[str, Any], spec: DeploymentSpec, policy: PolicyConfig,
             options: RunOptions) -> tuple[Violation, ...]:
    """Every built-in rule's verdict on one deployment's plan: the violations (none: it may be applied)."""
    changes = changed_resources(plan)
    found: list[Violation] = []
    if policy.protect_destroy and not options.allow_destroy:
        destroyed = [address for address, kind, actions in changes
                     if "delete" in actions and any(fnmatchcase(kind, p) for p in policy.protect_destroy)]
        if destroyed:
            verb = "replace or destroy"
            found.append(Violation("protect_destroy", f"would {verb} {len(destroyed)} protected resource(s) "
                                   f"(protect_destroy = {list(policy.protect_destroy)}); apply with --allow-destroy "
                                   "once that is intended", tuple(destroyed)))
    approvals = len({who.strip().lower() for who in options.approved_by if who.strip()})  # distinct people
    if policy.max_changes and len(changes) > policy.max_changes and not approvals:
        found.append(Violation("max_changes", f"{len(changes)} resource changes, more than max_changes = "
                               f"{policy.max_changes}; needs an approval (--approved-by)",
                               tuple(a for a, _, _ in changes)))
    needed = policy.accounts.get(spec.account, AccountPolicy()).require_approvals
    if changes and approvals < needed:
        found.append(Violation("require_approvals", f"account {spec.account} needs {needed} approval(s) to "
                               f"change it, has {approvals}"))
    return tuple(found)


def describe(violations: Sequence[Violation]) -> str:
    return "; ".join(f"{v.rule}: {v.message}" for v in violations)


# --- custom rules: Python functions and external commands ------------------------------------------
# Both come from tfo's own configuration (the webhook's: the server's), never from the repository being
# judged: a rule is an importable module or an absolute path on the host that runs it (every worker).


def rule_problems(policy: PolicyConfig) -> list[str]:
    """What is wrong with the custom rules' settings (config time: nothing is imported or run)."""
    problems = []
    for ref in policy.python:
        target, _, func = ref.rpartition(":")
        if not target or not func.isidentifier():
            problems.append(f"python = {ref!r}: expected MODULE:FUNCTION or /ABSOLUTE/PATH.py:FUNCTION")
        elif target.endswith(".py") and not Path(target).is_absolute():
            problems.append(f"python = {ref!r}: a rule file must be an absolute path on the host that runs it "
                            "(the repository being judged never supplies its own judge)")
    if policy.checkov_severity and policy.checkov_severity.upper() not in SEVERITIES:
        problems.append(f"checkov_severity = {policy.checkov_severity!r}: expected one of {', '.join(SEVERITIES)}")
    bad_ids = [c for c in policy.checkov_checks + policy.checkov_skip_checks if not _CHECK_ID.fullmatch(c)]
    if bad_ids:
        problems.append(f"checkov check ids {bad_ids}: expected ids like CKV_AWS_20")
    for command in policy.commands:
        try:
            argv = shlex.split(command)
        except ValueError as e:
            problems.append(f"commands = {command!r}: {e}")
            continue
        if not argv:
            problems.append("commands: an empty command")
        elif "/" in argv[0] and not Path(argv[0]).is_absolute():
            problems.append(f"commands = {command!r}: the program is a name on PATH or an absolute path, never "
                            "one relative to the repository being judged")
    if policy.checkov and "/" in policy.checkov_bin and not Path(policy.checkov_bin).is_absolute():
        problems.append(f"checkov_bin = {policy.checkov_bin!r}: a name on PATH or an absolute path")
    return problems


@functools.lru_cache(maxsize=64)
def _load(ref: str) -> Callable[..., Any]:
    target, _, func = ref.rpartition(":")
    if target.endswith(".py"):
        name = "tfo_policy_" + hashlib.sha256(target.encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(name, target)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"cannot load {target}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, func)
    if not callable(fn):
        raise TypeError(f"{ref} is not a function")
    return fn  # type: ignore[no-any-return]


def public_deployment(spec: DeploymentSpec) -> dict[str, str]:
    """What a rule is told of the deployment (the plan holds the values)."""
    return {"id": spec.id, "service": spec.service, "account": spec.account, "region": spec.region,
            "project": spec.project, "state_key": spec.state_key, "tfvars_path": spec.tfvars_path}


def _python_rule(ref: str, plan: Mapping[str, Any], spec: DeploymentSpec) -> list[Violation]:
    rule = f"python:{ref.rpartition(':')[2]}"
    try:
        answer = _load(ref)(plan, public_deployment(spec))
        items: Iterable[Any] = [] if answer is None else [answer] if isinstance(answer, str | dict) else answer
        found = []
        for item in items:
            if isinstance(item, Violation):
                found.append(item)
            elif isinstance(item, str):
                found.append(Violation(rule, item))
            elif isinstance(item, dict) and isinstance(item.get("message"), str):
                found.append(Violation(str(item.get("rule") or rule), item["message"],
                                       tuple(str(r) for r in item.get("resources") or ())))
            else:
                found.append(Violation(rule, f"the rule returned {type(item).__name__}, not a message"))
        return found
    except Exception as e:  # fail closed: a rule that cannot judge refuses, and says why
        return [Violation(rule, f"the rule {ref} could not judge this plan: {type(e).__name__}: {e}")]


def _command_rule(command: str, plan_path: Path, spec: DeploymentSpec) -> list[Violation]:
    argv = shlex.split(command)
    rule = f"command:{Path(argv[0]).name}"
    if "{plan}" in command:
        argv = [a.replace("{plan}", str(plan_path)) for a in argv]
    else:
        argv.append(str(plan_path))
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": os.environ.get("HOME", str(plan_path.parent)),
           **{f"TFO_DEPLOYMENT_{k.upper()}": v for k, v in public_deployment(spec).items()}}
    try:
        r = subprocess.run(argv, cwd=plan_path.parent, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, errors="replace", timeout=COMMAND_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return [Violation(rule, f"the policy command {argv[0]!r} was not found; nothing may be applied until "
                                "it runs")]
    except subprocess.TimeoutExpired:
        return [Violation(rule, f"the policy command timed out after {COMMAND_TIMEOUT_S} s")]
    except OSError as e:
        return [Violation(rule, f"the policy command could not run: {e.strerror or e}")]
    if r.returncode == 0:
        return []
    output = (r.stdout + r.stderr).strip()
    shown = output[-_OUTPUT_SHOWN:] if len(output) > _OUTPUT_SHOWN else output
    return [Violation(rule, f"refused (exit {r.returncode})" + (f": {shown}" if shown else ""))]


def _checkov(plan_path: Path, spec: DeploymentSpec, policy: PolicyConfig) -> list[Violation]:
    argv = [policy.checkov_bin, "-f", str(plan_path), "--framework", "terraform_plan", "-o", "json", "--quiet",
            "--compact", "--skip-download"]
    if policy.checkov_checks:
        argv += ["--check", ",".join(policy.checkov_checks)]
    if policy.checkov_skip_checks:
        argv += ["--skip-check", ",".join(policy.checkov_skip_checks)]
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": os.environ.get("HOME", str(plan_path.parent)), "LOG_LEVEL": "ERROR"}
    try:
        r = subprocess.run(argv, cwd=plan_path.parent, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, errors="replace", timeout=COMMAND_TIMEOUT_S, check=False)
        report = json.loads(r.stdout) if r.stdout.strip() else {}
    except FileNotFoundError:
        return [Violation("checkov", f"checkov ({policy.checkov_bin!r}) was not found; install it (its own "
                                     "environment: `pipx install checkov`) or turn [tfo.policy] checkov off")]
    except subprocess.TimeoutExpired:
        return [Violation("checkov", f"checkov timed out after {COMMAND_TIMEOUT_S} s")]
    except (OSError, ValueError) as e:
        return [Violation("checkov", f"checkov could not scan this plan: {e}")]
    reports = report if isinstance(report, list) else [report]
    failed = [c for rep in reports if isinstance(rep, dict)
              for c in (rep.get("results") or {}).get("failed_checks") or []]
    if r.returncode not in (0, 1) or (r.returncode == 1 and not failed):
        return [Violation("checkov", f"checkov could not scan this plan (exit {r.returncode}): "
                                     f"{(r.stderr or r.stdout).strip()[-_OUTPUT_SHOWN:]}")]
    threshold = SEVERITIES.index(policy.checkov_severity.upper()) if policy.checkov_severity else 0
    by_check: dict[str, list[dict[str, Any]]] = {}
    for c in failed:
        severity = str(c.get("severity") or "").upper()
        if severity in SEVERITIES and SEVERITIES.index(severity) < threshold:
            continue  # below the configured severity; unknown severities block
        by_check.setdefault(str(c.get("check_id", "?")), []).append(c)
    return [Violation(f"checkov:{check_id}", f"{checks[0].get('check_name', '')}"
                      + (f" (severity {checks[0]['severity']})" if checks[0].get("severity") else ""),
                      tuple(sorted({str(c.get("resource", "?")) for c in checks})))
            for check_id, checks in sorted(by_check.items())]


def custom_rules(plan_text: str, plan: Mapping[str, Any], spec: DeploymentSpec, policy: PolicyConfig,
                 workdir: Path) -> tuple[Violation, ...]:
    """The configured Python rules, commands and Checkov on one plan. Commands get the plan document in
    a file, as conftest and OPA take it; their exit code is the verdict. They run in a directory of their
    own (owner-only, under `workdir`'s parent, removed after), never in the workspace: the repository's
    files there (a `.checkov.yaml` that skips every check, a `conftest.toml`) must not judge it."""
    found: list[Violation] = []
    for ref in policy.python:
        found += _python_rule(ref, plan, spec)
    if policy.commands or policy.checkov:
        judge = Path(tempfile.mkdtemp(prefix="tfo-policy-", dir=workdir.parent))  # 0700
        plan_path = judge / "plan.json"
        try:
            fd = os.open(plan_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(plan_text)
            for command in policy.commands:
                found += _command_rule(command, plan_path, spec)
            if policy.checkov:
                found += _checkov(plan_path, spec, policy)
        finally:
            shutil.rmtree(judge, ignore_errors=True)
    return tuple(found)


def sensitive_values(plan: Mapping[str, Any]) -> set[str]:
    """The values a plan document marks sensitive (before, after, the prior state, outputs), to be redacted
    from whatever quotes the plan: a rule's words, a command's output."""
    found: set[str] = set()

    def walk(value: Any, mask: Any) -> None:
        if mask is True:
            collect(value)
        elif isinstance(mask, dict) and isinstance(value, dict):
            for k, m in mask.items():
                walk(value.get(k), m)
        elif isinstance(mask, list) and isinstance(value, list):
            for v, m in zip(value, mask, strict=False):
                walk(v, m)

    def collect(value: Any) -> None:
        if isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) >= 4:
            found.add(str(value))
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for rc in plan.get("resource_changes") or []:
        change = rc.get("change") or {}
        walk(change.get("before"), change.get("before_sensitive"))
        walk(change.get("after"), change.get("after_sensitive"))
    for oc in (plan.get("output_changes") or {}).values():
        if isinstance(oc, dict) and (oc.get("before_sensitive") or oc.get("after_sensitive")):
            collect(oc.get("before"))
            collect(oc.get("after"))

    def state_module(module: Any) -> None:
        if not isinstance(module, dict):
            return
        for res in module.get("resources") or []:
            walk(res.get("values"), res.get("sensitive_values"))
        for child in module.get("child_modules") or []:
            state_module(child)

    prior = (plan.get("prior_state") or {}).get("values") or {}
    state_module(prior.get("root_module"))
    for out in (prior.get("outputs") or {}).values():
        if isinstance(out, dict) and out.get("sensitive"):
            collect(out.get("value"))
    return found
