"""`tfo discover` and `tfo validate`: what a change touches, and whether its inputs are sound."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.options import GlobalOptions, Selectors, select
from orchestrator.dependencies import graph_of
from orchestrator.discovery import Discovery, discover
from orchestrator.errors import EXIT_INVALID_INPUT, EXIT_OK, Problem, ValidationError
from orchestrator.sharding import Deployments, build_deployments


def _problem(p: Problem) -> dict[str, Any]:
    return {"path": p.path, "line": p.line, "message": p.message}


def _echo_warnings(warnings: tuple[Problem, ...]) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def run_discover(g: GlobalOptions, sel: Selectors, as_json: bool) -> int:
    cfg = g.load()
    if not as_json:
        found, chosen = select(cfg, sel)
        by_id = {s.id: s for s in chosen.specs}
        graph = graph_of(chosen.specs)
        ordered = any(graph.needs.values())
        for n, level in enumerate(graph.levels() if ordered else [list(by_id)]):
            if ordered:  # the order a run follows: each level after the ones above it
                click.echo(f"# level {n + 1}")
            for d in level:
                s = by_id[d]
                after = f"\tafter {','.join(s.depends_on)}" if s.depends_on else ""
                after += f"\tselected because {s.selected_because}" if s.selected_because else ""
                click.echo(f"{s.id}\t{s.state_key}\t{s.tfvars_path}{after}")
        for k in (*found.skipped, *chosen.skipped):
            click.echo(f"skipped {k.path}: {k.reason}", err=True)
        _echo_warnings(chosen.warnings)
        if not chosen.specs:
            click.echo("no deployments selected", err=True)
        return EXIT_OK
    # --json: always JSON on stdout, the problems in it too (exit 2), for tools that read it
    found = discover(cfg, sel.paths, sel.changed_files, sel.git_diff)
    problems: tuple[Problem, ...] = ()
    try:
        chosen = build_deployments(cfg, found)
    except ValidationError as e:
        chosen, problems = Deployments((), e.warnings), e.problems
    click.echo(json.dumps(_discovery_json(found, chosen, problems), indent=2))
    return EXIT_INVALID_INPUT if problems else EXIT_OK


def _discovery_json(found: Discovery, chosen: Deployments, problems: tuple[Problem, ...]) -> dict[str, Any]:
    return {
        "deployments": [{"id": s.id, "service": s.service, "account": s.account, "region": s.region,
                         "project": s.project, "state_key": s.state_key, "tfvars": s.tfvars_path,
                         "layers": list(s.layers), "module_dir": s.module_dir, "variables": sorted(s.variables),
                         "referenced_files": list(s.referenced_files), "depends_on": list(s.depends_on),
                         "selected_because": s.selected_because or None}
                        for s in chosen.specs],
        "skipped": [{"path": k.path, "reason": k.reason} for k in (*found.skipped, *chosen.skipped)],
        "problems": [_problem(p) for p in problems],
        "warnings": [_problem(w) for w in chosen.warnings],
    }


def run_validate(g: GlobalOptions, sel: Selectors) -> int:
    cfg = g.load()
    try:
        _, chosen = select(cfg, sel)
    except ValidationError as e:
        _echo_warnings(e.warnings)
        raise
    _echo_warnings(chosen.warnings)
    files = {s.tfvars_path for s in chosen.specs}
    edges = sum(len(s.depends_on) for s in chosen.specs)
    click.echo(f"ok: {len(files)} tfvars file(s), {len(chosen.specs)} deployment(s) valid"
               + (f", {edges} dependenc{'y' if edges == 1 else 'ies'} in {len(graph_of(chosen.specs).levels())} "
                  "level(s)" if edges else "")
               + (f", {len(chosen.warnings)} warning(s)" if chosen.warnings else ""))
    return EXIT_OK
