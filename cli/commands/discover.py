"""`tfo discover` and `tfo validate`: what a change touches, and whether its inputs are sound."""

from __future__ import annotations

import json

import click

from cli.options import GlobalOptions, Selectors, select


def run_discover(g: GlobalOptions, sel: Selectors, as_json: bool) -> int:
    cfg = g.load()
    found, specs = select(cfg, sel)
    if as_json:
        click.echo(json.dumps({
            "deployments": [{"id": s.id, "service": s.service, "account": s.account, "region": s.region,
                             "project": s.project, "state_key": s.state_key, "tfvars": s.tfvars_path,
                             "module_dir": s.module_dir, "variables": sorted(s.variables),
                             "referenced_files": list(s.referenced_files)} for s in specs],
            "skipped": [{"path": k.path, "reason": k.reason} for k in found.skipped],
        }, indent=2))
        return 0
    for s in specs:
        click.echo(f"{s.id}\t{s.state_key}\t{s.tfvars_path}")
    for k in found.skipped:
        click.echo(f"skipped {k.path}: {k.reason}", err=True)
    if not specs:
        click.echo("no deployments selected", err=True)
    return 0


def run_validate(g: GlobalOptions, sel: Selectors) -> int:
    cfg = g.load()
    _, specs = select(cfg, sel)
    files = {s.tfvars_path for s in specs}
    click.echo(f"ok: {len(files)} tfvars file(s), {len(specs)} deployment(s) valid")
    return 0
