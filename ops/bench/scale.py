"""Hundreds of deployments in one run, through both executors (issue: "what breaks at scale").

    .venv/bin/python -m ops.bench.scale [--n 400] [--out docs/benchmarks.md]    # from the repository root

One resource per deployment and no apply delay, so the run is as CPU-bound as it gets: the measure is
tfo's own cost around terraform. Per executor: wall time and deployments/min against the machine's
CPU-bound limit (cores / CPU of one bare terraform init+plan+apply), the client's CPU and peak RSS,
the workers' peak RSS, Redis's peak memory and the bytes a run leaves behind, and the time from the
last deployment's last change to the client's exit. Celery: two workers, one process each per core
(the same parallelism the local executor gets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ops.bench.run import bare_terraform, bench_repo, children, reset_state, write_deployments, write_section
from tests.cluster import RedisServer, Workers
from tests.helpers import Repo

ROOT = Path(__file__).resolve().parents[2]

BEGIN, END = "<!-- bench:scale:begin -->", "<!-- bench:scale:end -->"


def redis_memory(redis: RedisServer) -> dict[str, int]:
    import redis as redis_lib

    info = redis_lib.Redis.from_url(redis.url).info("memory")
    return {"used": int(info["used_memory"]), "peak": int(info["used_memory_peak"])}


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Sampler:
    """The workers' resident memory (main processes, pool children, terraform below them), every 0.5 s."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.peak_workers_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            pool = [p for r in self.roots for p in [r, *children(r)]]
            # tfo's own processes only: the terraform and provider processes below them are terraform's cost
            own = [p for p in pool if _comm(p).startswith(("python", "tfo"))]
            self.peak_workers_mb = max(self.peak_workers_mb, rss_mb(own))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def one_run(repo: Repo, n: int, executor: str, workers: Workers | None, redis: RedisServer | None,
            action: str = "apply") -> dict[str, Any]:
    reset_state(repo)
    write_deployments(repo, n, sleep=0)
    before = redis_memory(redis) if redis else None
    sampler = Sampler([p.pid for p in workers.procs.values()]) if workers else None
    out = repo.root.parent / f"{executor}-{action}.json"
    md = repo.root.parent / f"{executor}-{action}.md"
    log = repo.root.parent / f"{executor}-{action}.log"
    start = time.time()
    with open(log, "w") as err:  # a file, not a pipe: 400 deployments' progress lines would fill a pipe
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", action, "--executor", executor, "--json-out",
                                 str(out), "--markdown-out", str(md)], cwd=repo.root, env=repo.env,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    exited = time.time()
    stderr = log.read_text(errors="replace")
    if sampler:
        sampler.stop()
    code = proc.returncode
    if code != 0:
        raise RuntimeError(f"tfo {action} ({executor}) exited {code}: {stderr[-3000:]}")
    report = json.loads(out.read_text())
    assert len(report["deployments"]) == n and {d["status"] for d in report["deployments"]} <= {"succeeded",
                                                                                              "no_changes"}
    journal = repo.journal()
    last_change = max((e["t"] for e in journal), default=start)
    result: dict[str, Any] = {
        "wall_s": exited - start,
        "deployments_per_min": n / (exited - start) * 60,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "client_peak_rss_mb": usage.ru_maxrss / 1024,
        "last_change_to_exit_s": exited - last_change if action == "apply" else None,
        "markdown_chars": len(md.read_text()),
    }
    if sampler:
        result["workers_peak_rss_mb"] = sampler.peak_workers_mb
    if redis and before:
        import redis as redis_lib

        time.sleep(1)
        after = redis_memory(redis)
        client = redis_lib.Redis.from_url(redis.url)
        kept = [k for k in client.scan_iter(count=1000) if report["run_id"].encode() in k]
        result["redis_peak_mb"] = after["peak"] / 2**20
        # what the run's own keys hold (task results, chord state), and the server's growth in all
        result["redis_bytes_left_per_deployment"] = sum(client.memory_usage(k) or 0 for k in kept) / n
        result["redis_keys_left"] = len(kept)
        result["redis_used_growth_per_deployment"] = (after["used"] - before["used"]) / n
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    tmp, repo = bench_repo("tfo-scale-")
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text().replace("max_workers = 4", f"max_workers = {cores}"))
    # The CPU-bound limit: one bare terraform init + plan + apply, as a person would run it.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for i in range(3):
        bare_terraform(repo, tmp, repo.env, i)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    bare_cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / 3
    results: dict[str, Any] = {"n": args.n, "cores": cores, "bare_terraform_cpu_s": bare_cpu,
                               "cpu_bound_limit_per_min": cores / bare_cpu * 60,
                               "machine": f"{platform.machine()}, {cores} cores"}
    results["local"] = one_run(repo, args.n, "local", None, None)
    redis = RedisServer(tmp / "redis")
    toml.write_text(toml.read_text() + f'\n[tfo.celery]\nbroker_url = "{redis.url}"\n'
                                       'soft_time_limit_s = 3000\ntime_limit_s = 3300\nvisibility_timeout_s = 3600\n')
    workers = Workers(repo, tmp)
    try:
        workers.start("w1", concurrency=max(1, cores // 2))
        workers.start("w2", concurrency=max(1, cores // 2))
        results["celery"] = one_run(repo, args.n, "celery", workers, redis)
    finally:
        workers.stop_all()
        redis.stop()
    results["celery_vs_local_pct"] = 100 * (results["celery"]["wall_s"] / results["local"]["wall_s"] - 1)
    print(json.dumps(results, indent=2))
    write_section(args.out, BEGIN, END, section(results))
    shutil.rmtree(tmp, ignore_errors=True)


def section(r: dict[str, Any]) -> str:
    loc, cel = r["local"], r["celery"]

    def row(name: str, key: str, fmt: str, target: str) -> str:
        return f"| {name} | {format(loc.get(key), fmt) if loc.get(key) is not None else '-'} | " \
               f"{format(cel.get(key), fmt) if cel.get(key) is not None else '-'} | {target} |"

    per100_local = 100 * loc["client_cpu_s"] / r["n"]
    per100_celery = 100 * cel["client_cpu_s"] / r["n"]
    lines = [
        BEGIN,
        f"## Scale: {r['n']} deployments in one apply (one resource each, no apply delay)",
        "",
        f"`python -m ops.bench.scale --n {r['n']}` on {r['machine']}. CPU-bound limit: {r['cores']} cores / "
        f"{r['bare_terraform_cpu_s']:.2f} s of CPU per bare terraform init+plan+apply = "
        f"{r['cpu_bound_limit_per_min']:.0f} deployments/min.",
        "",
        "| measure | local | celery (2 workers) | target |",
        "|---|---:|---:|---|",
        row("wall time (s)", "wall_s", ".1f", f"celery within 5 % of local: {r['celery_vs_local_pct']:+.1f} %"),
        row("deployments/min", "deployments_per_min", ".0f", f"limit {r['cpu_bound_limit_per_min']:.0f}"),
        row("client CPU (s)", "client_cpu_s", ".2f",
            f"< 2 s per 100 deployments (celery): {per100_celery:.2f} s (local client runs the deployments: "
            f"{per100_local:.2f} s)"),
        row("client peak RSS (MB)", "client_peak_rss_mb", ".0f", ""),
        row("workers' peak RSS, tfo processes (MB)", "workers_peak_rss_mb", ".0f", ""),
        row("Redis peak memory (MB)", "redis_peak_mb", ".1f", ""),
        row("Redis bytes left per deployment (the run's keys)", "redis_bytes_left_per_deployment", ".0f", "< 1 KB"),
        row("Redis memory growth per deployment (all)", "redis_used_growth_per_deployment", ".0f", ""),
        row("last change to client exit (s)", "last_change_to_exit_s", ".2f", "< 1 s"),
        row("Markdown report (chars)", "markdown_chars", ".0f", "one comment (65,536)"),
        "",
        "```json",
        json.dumps(r, indent=2),
        "```",
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
