"""Policy gates: built-in rules read a deployment's plan (`terraform show -json`) before it is applied and
may refuse it. A refusal is a list of Violations on the result (status `blocked`, exit 4), never an
exception. Waivers (`--allow-destroy`, `--approved-by`) are part of the run and recorded in its audit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from orchestrator.models import AccountPolicy, DeploymentSpec, PolicyConfig, RunOptions, Violation

__all__ = ["AccountPolicy", "PolicyConfig", "changed_resources", "describe", "evaluate"]

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
