"""Drift detection over many deployments, beside the apply that made them (both executors).

    .venv/bin/python -m ops.bench.drift [--n 48] [--runs 3] [--out docs/benchmarks.md]   # repository root

The bench's deployments (one resource each, apply sleeping APPLY_SLEEP_S) are applied once, then `tfo drift`
runs over all of them: in sync (`--runs` times, median), and once with one deployment's resource deleted
behind Terraform's back (found, remediated). W = 4 at a time: the local executor's threads, or two
workers of two processes each. The provider plugin cache is shared by every run; the number of provider
packages in it before and after the drift runs shows that detection reused it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ops.bench.run import APPLY_SLEEP_S, bench_repo, reset_state, two_workers, write_deployments, write_section
from tests.helpers import Repo

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bench:drift:begin -->", "<!-- bench:drift:end -->"


def timed_tfo(repo: Repo, *args: str, expect: int = 0) -> tuple[float, dict[str, Any]]:
    out = repo.root.parent / "drift-bench.json"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cli.main", *args, "--json-out", str(out)], cwd=repo.root,
                       env=repo.env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if r.returncode != expect:
        raise RuntimeError(f"tfo {' '.join(args)} exited {r.returncode}, not {expect}: {r.stderr[-3000:]}")
    return took, json.loads(out.read_text())


def cached_providers(plugin_cache: Path) -> int:
    return sum(1 for p in plugin_cache.rglob("*") if p.is_file())


def one_executor(repo: Repo, n: int, runs: int, executor: str, plugin_cache: Path) -> dict[str, Any]:
    reset_state(repo)
    write_deployments(repo, n)
    apply_s, applied = timed_tfo(repo, "apply", "--executor", executor)
    assert {d["status"] for d in applied["deployments"]} == {"succeeded"}
    cached = cached_providers(plugin_cache)
    samples = []
    for _ in range(runs):
        took, found = timed_tfo(repo, "drift", "--executor", executor)
        assert {d["status"] for d in found["deployments"]} == {"in_sync"} and len(found["deployments"]) == n
        samples.append(took)
    victim = next(repo.world.glob("*.json"))
    victim.unlink()
    remediate_s, fixed = timed_tfo(repo, "drift", "--executor", executor, "--remediate")
    assert [d["status"] for d in fixed["remediation"]["deployments"]] == ["succeeded"]
    assert victim.exists()
    return {"apply_s": apply_s, "drift_in_sync_s": statistics.median(samples), "drift_samples_s": samples,
            "drift_and_remediate_one_s": remediate_s, "drift_vs_apply": statistics.median(samples) / apply_s,
            "providers_cached_before": cached, "providers_cached_after": cached_providers(plugin_cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    tmp, repo = bench_repo("tfo-drift-")
    plugin_cache = tmp / "plugin-cache"
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"n": args.n, "runs": args.runs, "w": 4, "apply_sleep_s": APPLY_SLEEP_S,
                               "machine": f"{platform.machine()}, {cores} cores"}
    results["local"] = one_executor(repo, args.n, args.runs, "local", plugin_cache)
    with two_workers(repo, tmp):
        results["celery"] = one_executor(repo, args.n, args.runs, "celery", plugin_cache)
    print(json.dumps(results, indent=2))
    write_section(args.out, BEGIN, END, section(results))


def section(r: dict[str, Any]) -> str:
    loc, cel = r["local"], r["celery"]

    def row(name: str, key: str, fmt: str) -> str:
        return f"| {name} | {format(loc[key], fmt)} | {format(cel[key], fmt)} |"

    return "\n".join([
        BEGIN,
        f"## Drift detection: {r['n']} deployments, beside their apply",
        "",
        f"`python -m ops.bench.drift --n {r['n']} --runs {r['runs']}` on {r['machine']}, W = {r['w']} (local "
        f"threads; two workers of two processes). Apply: one resource per deployment, the provider sleeping "
        f"{r['apply_sleep_s']} s in each write. Drift: median of {r['runs']} runs over all of them, in sync.",
        "",
        "| measure | local | celery |",
        "|---|---:|---:|",
        row("apply (s)", "apply_s", ".1f"),
        row("drift detection, all in sync (s)", "drift_in_sync_s", ".1f"),
        row("drift / apply", "drift_vs_apply", ".2f"),
        row("drift with one deleted resource, found and remediated (s)", "drift_and_remediate_one_s", ".1f"),
        f"| provider files in the plugin cache, before / after the drift runs | {loc['providers_cached_before']} / "
        f"{loc['providers_cached_after']} | {cel['providers_cached_before']} / {cel['providers_cached_after']} |",
        "",
        "```json",
        json.dumps(r, indent=2),
        "```",
        END,
    ])


if __name__ == "__main__":
    main()
