"""Which deployments need which: `[tfo.dependencies]` (a service's deployments need the deployments of other
services with the same account, region and project, where those exist in the repository) and a tfvars
file's reserved `tfo_depends_on = ["kms/acct-a/us-west-2/lake", ...]` (any deployment, another account or
region included). The result is each deployment's `depends_on` and the graph's order; a cycle, an
unknown target or a self-edge is the input's problem, named with the file and the cycle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.config import TfoConfig
from orchestrator.errors import Problem
from orchestrator.models import DeploymentResult, DeploymentSpec, Status
from orchestrator.names import unsafe_name_reason
from orchestrator.state import parse_state
from orchestrator.store.base import Store

RESERVED = "tfo_depends_on"  # a tfvars variable tfo reads and terraform never gets


def explicit_targets(value: object, line: int, path: str) -> tuple[tuple[str, ...], list[Problem]]:
    """`tfo_depends_on`'s value: a list of deployment ids, or the problems with it."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return (), [Problem(path, f"{RESERVED} must be a list of deployment ids "
                                  '(e.g. ["kms/acct-a/us-west-2/lake"])', line)]
    problems = []
    for target in value:
        parts = target.split("/")
        bad = next((why for p in parts if (why := unsafe_name_reason(p))), None)
        if len(parts) < 3 or bad:
            problems.append(Problem(path, f"{RESERVED}: {target!r} is not a deployment id "
                                          f"(SERVICE/ACCOUNT/REGION[/PROJECT]){': part ' + bad if bad else ''}", line))
    return tuple(dict.fromkeys(value)), problems


@dataclass(frozen=True)
class DependencyGraph:
    needs: Mapping[str, tuple[str, ...]]  # deployment id -> the ids it depends on (in this graph)

    def levels(self) -> list[list[str]]:
        """The deployments by level: each after every one it depends on (sorted within a level). The graph
        is acyclic (`resolve` refuses cycles)."""
        waiting = {d: {u for u in ups if u in self.needs} for d, ups in self.needs.items()}
        out: list[list[str]] = []
        while waiting:
            ready = sorted(d for d, ups in waiting.items() if not ups)
            if not ready:
                raise ValueError("dependency cycle among " + ", ".join(sorted(waiting)))
            out.append(ready)
            for d in ready:
                del waiting[d]
            for ups in waiting.values():
                ups.difference_update(ready)
        return out

    def below(self) -> dict[str, list[str]]:
        """Each deployment's direct dependents in this graph (sorted)."""
        out: dict[str, set[str]] = {}
        for d, ups in self.needs.items():
            for u in ups:
                if u in self.needs:
                    out.setdefault(u, set()).add(d)
        return {u: sorted(ds) for u, ds in out.items()}

    def roots(self) -> list[str]:
        """The deployments that wait for nothing in this graph, in its order."""
        return [d for d, ups in self.needs.items() if not any(u in self.needs for u in ups)]

    def dependents(self, ids: Iterable[str]) -> set[str]:
        """Every deployment that needs one of `ids`, directly or through others (not `ids` themselves)."""
        below = self.below()
        seen: set[str] = set()
        todo = list(ids)
        while todo:
            for d in below.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen - set(ids)


def _cycle_among(needs: Mapping[str, tuple[str, ...]], start: Iterable[str]) -> list[str] | None:
    """A cycle in what `start` reaches through its upstreams (a path that ends where it starts), or None."""
    reach: set[str] = set()
    todo = list(start)
    while todo:
        d = todo.pop()
        if d not in reach:
            reach.add(d)
            todo.extend(u for u in needs.get(d, ()) if u in needs)
    waiting = {d: {u for u in needs[d] if u in reach} for d in reach}
    while True:  # Kahn: take away what waits for nothing; a cycle is what can never be taken
        ready = [d for d, ups in waiting.items() if not ups]
        if not ready:
            break
        for d in ready:
            del waiting[d]
        for ups in waiting.values():
            ups.difference_update(ready)
    if not waiting:
        return None
    path, node = [], min(waiting)
    while node not in path:  # every node left waits for another one left: walking upstream must repeat
        path.append(node)
        node = min(waiting[node])
    return [*path[path.index(node):], node]


def resolve(cfg: TfoConfig, selected: Sequence[DeploymentSpec], repository: Sequence[DeploymentSpec],
            explicit: Mapping[str, tuple[tuple[str, ...], int]]) -> tuple[list[DeploymentSpec], list[Problem]]:
    """The selected specs with `depends_on` set (explicit edges, then the service rules' edges to deployments
    the repository has), and the problems: unknown targets, self-edges, cycles (in the repository's graph,
    so that a cycle through deployments not selected is refused too)."""
    existing = {s.id: s for s in repository} | {s.id: s for s in selected}
    chosen_ids = {s.id for s in selected}
    problems: list[Problem] = []

    def edges(spec: DeploymentSpec) -> tuple[str, ...]:
        targets, line = explicit.get(spec.id, ((), 0))
        out = []
        for t in targets:
            # a file not selected is not this run's input: its mistakes are said when it is
            mine = spec.id in chosen_ids
            if t == spec.id:
                if mine:
                    problems.append(Problem(spec.tfvars_path, f"{RESERVED}: {spec.id} cannot depend on itself", line))
            elif t not in existing:
                if mine:
                    problems.append(Problem(spec.tfvars_path, f"{RESERVED}: {t} is no deployment of this repository",
                                            line))
            else:
                refusal = cross_account_refusal(cfg, spec, existing[t].account)
                if refusal and mine:
                    problems.append(Problem(spec.tfvars_path, f"{RESERVED}: {t}: {refusal}", line))
                out.append(t)
        for service in cfg.dependencies.get(spec.service, ()):
            target = "/".join(p for p in (service, spec.account, spec.region, spec.project) if p)
            if target in existing and target != spec.id:
                out.append(target)
        return tuple(dict.fromkeys(out))

    needs = {d: edges(s) for d, s in existing.items()}
    cycle = _cycle_among(needs, chosen_ids)  # a cycle the selection reaches, not one elsewhere
    if cycle:
        problems.append(Problem(existing[cycle[0]].tfvars_path, "dependency cycle: " + " -> ".join(cycle)))
    chosen = [replace(s, depends_on=needs[s.id]) for s in selected]
    return chosen, list(dict.fromkeys(problems))


def cross_account_refusal(cfg: TfoConfig, spec: DeploymentSpec, upstream_account: str) -> str:
    """Why `spec` may not be given the outputs of a deployment of `upstream_account`, else "". The upstream's
    state is read with its own account's credentials and every value reaches the downstream's code, so an
    edge into another account must be allowed by that code's account: `[tfo.accounts.X] outputs_from`."""
    if upstream_account == spec.account:
        return ""
    settings = cfg.accounts.get(spec.account)
    if settings is not None and settings.reads_outputs_of(upstream_account):
        return ""
    return (f"it is in account {upstream_account}, and deployments of {spec.account} may read only their own "
            f"account's outputs: allow it with [tfo.accounts.{spec.account}] outputs_from = "
            f'["{upstream_account}"] in tfo.toml')


def graph_of(specs: Sequence[DeploymentSpec]) -> DependencyGraph:
    """The graph among these deployments (edges to deployments outside them are dropped: not in this run)."""
    ids = {s.id for s in specs}
    return DependencyGraph({s.id: tuple(d for d in s.depends_on if d in ids) for s in specs})


# What lets a dependent go on: its upstream changed what it had to, or had nothing to change.
PROCEED = (Status.SUCCEEDED, Status.NO_CHANGES)
OUTPUTS_VARIABLE = "tfo_dependency_outputs"


def skip_reason(upstream: str, status: Status) -> str:
    return f"not run: it depends on {upstream}, which {'was ' if status != Status.FAILED else ''}{status.value}"


def in_run_upstreams(spec: DeploymentSpec, run_ids: Iterable[str]) -> list[str]:
    ids = set(run_ids)
    return [d for d in spec.depends_on if d in ids]


def blocked_by(spec: DeploymentSpec, run_ids: Iterable[str], status_of: Callable[[str], Status | None]) -> str:
    """Why `spec` must not run: an upstream of this run that did not go through (or has no result), else ""."""
    for upstream in in_run_upstreams(spec, run_ids):
        status = status_of(upstream)
        if status is None:
            return f"not run: it depends on {upstream}, which did not finish"
        if status not in PROCEED:
            return skip_reason(upstream, status)
    return ""


def run_in_order(specs: Sequence[DeploymentSpec], run_one: Callable[[DeploymentSpec], DeploymentResult],
                 skip: Callable[[DeploymentSpec, str], DeploymentResult], max_workers: int) -> list[DeploymentResult]:
    """Every deployment once its upstreams in this run went through (PROCEED), up to `max_workers` at a time
    and as soon as it is ready (not level by level); a deployment whose upstream did not is skipped, with the
    reason (its own dependents then say it was skipped). Results in the order of `specs`."""
    graph = graph_of(specs)
    by_id = {s.id: s for s in specs}
    waiting = {d: set(ups) for d, ups in graph.needs.items()}
    below = graph.below()
    results: dict[str, DeploymentResult] = {}

    def settle(d: str, result: DeploymentResult) -> None:
        results[d] = result
        todo = [(d, result)]
        while todo:
            upstream, r = todo.pop()
            for dependent in below.get(upstream, ()):
                if dependent not in waiting:
                    continue
                if r.status in PROCEED:
                    waiting[dependent].discard(upstream)
                else:
                    del waiting[dependent]
                    results[dependent] = skip(by_id[dependent], skip_reason(upstream, r.status))
                    todo.append((dependent, results[dependent]))

    with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="tfo-deploy") as pool:
        running: dict[Future[DeploymentResult], str] = {}

        def start_ready() -> None:
            for d in [d for d in by_id if d in waiting and not waiting[d]]:  # in the run's order
                del waiting[d]
                running[pool.submit(run_one, by_id[d])] = d

        start_ready()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                settle(running.pop(future), future.result())
            start_ready()
    return [results[s.id] for s in specs]


def upstream_state_key(deployment_id: str, namespace: str) -> str:
    # sharding.state_key of the same parts: the id's non-empty parts, under the namespace
    return f"{namespace + '/' if namespace else ''}{deployment_id}/terraform.tfstate"


def account_of(deployment_id: str, by_service: bool) -> str:
    """The account part of an id: SERVICE/ACCOUNT/REGION[/PROJECT], or ACCOUNT/REGION/PROJECT (shard_by file)."""
    parts = deployment_id.split("/")
    return parts[1] if by_service else parts[0]


def dependency_outputs(store_of: Callable[[str], Store], spec: DeploymentSpec,
                       returning: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """`tfo_dependency_outputs` for a deployment: each upstream's outputs from its state as it is now (after
    its apply in this run, or as last applied), by deployment id and, where one upstream has the service,
    by service name; and the values of the outputs Terraform marks sensitive (to redact).

    `returning` (a rollback's): upstream id -> the pre-apply backup it is being rolled back to in this run;
    that upstream's outputs are read from the backup, the state it returns to, not from its new state."""
    by_id: dict[str, dict[str, Any]] = {}
    sensitive: list[str] = []
    for upstream in spec.depends_on:
        state = parse_state(_upstream_state(store_of(upstream), upstream, spec.namespace,
                                            (returning or {}).get(upstream, ""))) or {}
        outputs = state.get("outputs") if isinstance(state.get("outputs"), dict) else {}
        by_id[upstream] = {}
        for name, out in (outputs or {}).items():
            if isinstance(out, dict) and "value" in out:
                by_id[upstream][name] = out["value"]
                if out.get("sensitive"):
                    sensitive.extend(_strings(out["value"]))
    services: dict[str, list[str]] = {}
    for upstream in by_id:
        services.setdefault(upstream.split("/")[0], []).append(upstream)
    merged: dict[str, Any] = dict(by_id)
    for service, ids in services.items():
        if len(ids) == 1 and service not in merged:
            merged[service] = by_id[ids[0]]
    return merged, sensitive


def _upstream_state(store: Store, upstream: str, namespace: str, backup: str) -> bytes | None:
    if backup:
        try:
            return store.read_backup(backup)
        except KeyError:  # gone (retention): the upstream's rollback cannot restore it either
            pass
    return store.read_state(upstream_state_key(upstream, namespace))


def output_digests(outputs: Mapping[str, Any], spec: DeploymentSpec) -> dict[str, str]:
    """What each upstream's outputs were when this deployment's terraform was given them, as digests: a saved
    plan keeps them, and an apply of that plan is stale when one moved."""
    return {upstream: hashlib.sha256(json.dumps(outputs.get(upstream), sort_keys=True).encode()).hexdigest()[:32]
            for upstream in spec.depends_on}


def moved_outputs(then: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The upstreams whose outputs differ between two `output_digests` (one only in either counts)."""
    return sorted(u for u in set(then) | set(now) if then.get(u) != now.get(u))


# Linux refuses an environment string over 128 KiB (E2BIG, and terraform would not even start): larger
# outputs go to terraform in a var file instead, where JSON strings are literal (no template escaping).
ENV_VALUE_LIMIT = 96 * 1024
OUTPUTS_FILE = "tfo-dependency-outputs.tfvars.json"


def as_var_file(value: Any) -> str:
    """The outputs as a JSON variables file (a JSON tfvars string is never read as a template)."""
    return json.dumps({OUTPUTS_VARIABLE: value}, sort_keys=True, ensure_ascii=False)


def as_variable(value: Any) -> str:
    """A TF_VAR_ value Terraform reads back exactly: a variable of type `any` is read as HCL, not JSON, so
    `${` and `%{` in any string (keys too) would be templates; characters stay as they are (\\u escapes of
    characters outside the BMP are not HCL)."""
    def escape(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("${", "$${").replace("%{", "%%{")
        if isinstance(v, dict):
            return {escape(k): escape(x) for k, x in v.items()}
        if isinstance(v, list):
            return [escape(x) for x in v]
        return v

    return json.dumps(escape(value), sort_keys=True, ensure_ascii=False)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float) and not isinstance(value, bool) and len(str(value)) >= 4:
        return [json.dumps(value)]
    return []  # true, false, null and short numbers would redact half of every plan
