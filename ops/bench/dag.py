"""A run whose deployments depend on each other: 48 deployments in 4 levels, against the ideal.

    .venv/bin/python -m ops.bench.dag [--n 48] [--levels 4] [--out docs/benchmarks.md]   # repository root

Level k's deployment i depends on level k-1's deployment i (tfo_depends_on), so each chain is `levels` long
and the levels hold n/levels deployments each. W = 4 at a time (local threads; two workers of two
processes). One deployment's time t is measured alone (a one-deployment apply through tfo); the ideal is
max(levels, ceil(n / W)) x t: no schedule can beat the critical path nor W lanes kept busy. The same 48
deployments without dependencies are applied beside it, so the cost of the order itself shows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from ops.bench.run import APPLY_SLEEP_S, bench_repo, reset_state, tfo_apply, two_workers, write_section
from tests.helpers import Repo

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bench:dag:begin -->", "<!-- bench:dag:end -->"
W = 4


def write_dag(repo: Repo, n: int, levels: int, chained: bool) -> None:
    import shutil

    shutil.rmtree(repo.root / "Accounts", ignore_errors=True)
    per_level = n // levels
    for level in range(levels):
        for i in range(per_level):
            needs = (f'tfo_depends_on = ["s3/acct-{level - 1}/us-east-1/proj-{i:03d}"]\n'
                     if chained and level else "")
            repo.write(f"Accounts/acct-{level}/proj-{i:03d}.tfvars",
                       needs + f"s3_buckets = {{\n  b = {{ delay_seconds = {APPLY_SLEEP_S} }}\n}}\n")


def applied(repo: Repo, n: int, levels: int, chained: bool, *args: str) -> float:
    reset_state(repo)
    write_dag(repo, n, levels, chained)
    return tfo_apply(repo, *args)


def one_executor(repo: Repo, n: int, levels: int, single: float, *args: str) -> dict[str, Any]:
    dag = applied(repo, n, levels, True, *args)
    flat = applied(repo, n, levels, False, *args)
    ideal = max(levels, math.ceil(n / W)) * single
    return {"dag_s": dag, "flat_s": flat, "ideal_s": ideal, "efficiency": ideal / dag, "dag_vs_flat": dag / flat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    tmp, repo = bench_repo("tfo-dag-")
    toml = repo.root / "tfo.toml"  # level k's account reads level k-1's outputs (before any worker starts)
    toml.write_text(toml.read_text() + "".join(f'\n[tfo.accounts.acct-{k}]\noutputs_from = ["acct-{k - 1}"]\n'
                                               for k in range(1, args.levels)))
    singles = [applied(repo, 1, 1, False, "--max-workers", "1") for _ in range(3)]
    single = statistics.median(singles)
    results: dict[str, Any] = {"n": args.n, "levels": args.levels, "w": W, "apply_sleep_s": APPLY_SLEEP_S,
                               "single_s": single, "single_samples_s": singles,
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                               "date": time.strftime("%Y-%m-%d")}
    results["local"] = one_executor(repo, args.n, args.levels, single, "--max-workers", str(W))
    with two_workers(repo, tmp):
        results["celery"] = one_executor(repo, args.n, args.levels, single)
    print(json.dumps(results, indent=2))
    write_section(args.out, BEGIN, END, section(results))


def section(r: dict[str, Any]) -> str:
    loc, cel = r["local"], r["celery"]

    def row(name: str, key: str, fmt: str) -> str:
        return f"| {name} | {format(loc[key], fmt)} | {format(cel[key], fmt)} |"

    return "\n".join([
        BEGIN,
        f"## Dependencies: {r['n']} deployments in {r['levels']} levels",
        "",
        f"`python -m ops.bench.dag --n {r['n']} --levels {r['levels']}` on {r['machine']}, {r['date']}. Each "
        f"deployment of level k depends on one of level k-1 (chains {r['levels']} long), W = {r['w']}; one "
        f"deployment alone takes t = {r['single_s']:.1f} s (median of 3), so the ideal is "
        f"max({r['levels']}, ceil({r['n']}/{r['w']})) x t = {loc['ideal_s']:.1f} s. The local executor starts "
        "a deployment as soon as its upstream is done; with Celery, the task of a deployment's last upstream "
        "sends it.",
        "",
        "| measure | local | celery |",
        "|---|---:|---:|",
        row("with dependencies (s)", "dag_s", ".1f"),
        row("the same deployments without them (s)", "flat_s", ".1f"),
        row("ideal (s)", "ideal_s", ".1f"),
        row("efficiency (ideal / with dependencies)", "efficiency", ".2f"),
        row("with / without dependencies", "dag_vs_flat", ".2f"),
        "",
        "```json",
        json.dumps(r, indent=2),
        "```",
        END,
    ])


if __name__ == "__main__":
    main()
