"""The dashboard with history: 10,000 recorded runs in a local store, a real `tfo dashboard`, the pages' answers.

    .venv/bin/python -m ops.bench.dashboard [--runs 10000] [--requests 200] [--out docs/benchmarks.md]

The runs are spread over 30 days, 1 to 12 deployments each, mostly succeeded with failures and rollbacks
among them, and 3 runs still going (cards and progress records). Measured: how long the dashboard takes to
index them (start to /healthz ok), its memory, and the time to answer `/`, `/api/overview` (the home page's
data), `/api/runs`, one run's page and `/metrics` (computed again only when the index changed), each
asked `--requests` times one after another (p50, p95, max). Target: `/` and `/api/runs` under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ops.bench.run import write_section

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bench:dashboard:begin -->", "<!-- bench:dashboard:end -->"
USER, PASSWORD = "bench", "bench-Pa55"
STATUSES = ["succeeded"] * 14 + ["no_changes"] * 4 + ["failed", "rolled_back", "skipped"]


def _run_id(at: datetime, n: int) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{n:06x}"


def _deployment(rng: random.Random, i: int) -> dict[str, Any]:
    service = rng.choice(["s3", "kms", "iam", "lambda", "sqs"])
    account = f"acct-{rng.randrange(12):02d}"
    status = rng.choice(STATUSES)
    d = {"id": f"{service}/{account}/us-east-1/proj-{i:03d}", "service": service, "account": account,
         "region": "us-east-1", "project": f"proj-{i:03d}",
         "state_key": f"{service}/{account}/us-east-1/proj-{i:03d}/terraform.tfstate", "status": status,
         "duration_s": round(rng.uniform(4, 240), 3), "lease_wait_s": round(rng.expovariate(2), 3),
         "host": f"w{rng.randrange(4)}@worker-{rng.randrange(3)}",
         "plan": {"add": rng.randrange(4), "change": rng.randrange(3), "destroy": rng.randrange(2)},
         "error": "terraform apply failed (exit 1): Error: creating bucket: AccessDenied" if status in (
             "failed", "rolled_back") else None, "backup_key": None, "audit_key": None, "policy": [],
         "rollback": {"strategy": "reapply", "status": "succeeded", "matches_target": True, "target": "",
                      "duration_s": 12.0, "error": "", "untracked": []} if status == "rolled_back" else None}
    return d


def _card(run_id: str, at: datetime, deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """What live.card_of writes when a run starts."""
    return {"run_id": run_id, "action": "apply", "atomic": False, "from_plan": "", "started_at": at.isoformat(),
            "actor": "ci-bot", "git_sha": "0" * 40, "executor": "celery", "host": "producer", "repository": "",
            "pull_request": None,
            "deployments": [{k: d[k] for k in ("id", "service", "account", "region", "project")} | {"depends_on": []}
                            for d in deployments]}


def populate(store_dir: Path, runs: int, seed: int = 7) -> None:
    from orchestrator import keys
    from orchestrator.store.local import LocalStore

    store = LocalStore(store_dir)
    rng = random.Random(seed)  # noqa: S311 - made-up history, not secrets
    now = datetime.now(UTC)

    def one(n: int) -> None:
        at = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
        run_id = _run_id(at, n)
        deployments = [_deployment(rng, i) for i in rng.sample(range(400), rng.randint(1, 12))]
        wall = max(d["duration_s"] for d in deployments) * rng.uniform(1.0, 1.6)
        bad = any(d["status"] in ("failed", "rolled_back") for d in deployments)
        store.put_json(keys.run_summary(run_id), {
            "run_id": run_id, "action": rng.choice(["apply"] * 3 + ["plan"]), "status": "failed" if bad
            else "succeeded", "atomic": False, "started_at": at.isoformat(),
            "finished_at": (at + timedelta(seconds=wall)).isoformat(), "audit_key": None,
            "deployments": deployments})
        store.put_json(keys.run_card(run_id), _card(run_id, at, deployments))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(runs)))
    for n in range(3):  # still going
        at = now - timedelta(seconds=30 * (n + 1))
        run_id = _run_id(at, 0xF00000 + n)
        deployments = [_deployment(rng, i) for i in range(20)]
        store.put_json(keys.run_card(run_id), _card(run_id, at, deployments))
        for d in deployments[:12]:
            store.put_json(keys.progress(run_id, d["id"]), {"deployment": d["id"], "phases": [
                {"phase": "init", "at": at.timestamp() + 1, "host": "w1@h", "detail": ""},
                {"phase": "apply", "at": at.timestamp() + 9, "host": "w1@h", "detail": ""}]})


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(repo: Path, requests_per_page: int) -> dict[str, Any]:
    import requests

    from tests.helpers import free_port

    port = free_port()
    env = {**os.environ, "TFO_DASHBOARD_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "-C", str(repo), "dashboard", "--listen",
                             f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    try:
        while True:
            try:
                if session.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None:
                raise SystemExit("the dashboard did not start")
            time.sleep(0.05)
        indexed_s = time.monotonic() - started
        runs = session.get(base + "/api/runs?limit=1", timeout=10).json()
        one_run = runs["runs"][0]["run_id"]
        pages = {"/": "/", "/api/overview": "/api/overview", "/api/runs": "/api/runs",
                 "/api/runs?limit=500": "/api/runs?limit=500", "/api/runs/ID": f"/api/runs/{one_run}",
                 "/metrics": "/metrics"}
        out: dict[str, Any] = {"indexed_s": indexed_s, "runs_indexed": runs["total"], "pages": {}}
        for name, path in pages.items():
            samples = []
            for _ in range(requests_per_page):
                t = time.perf_counter()
                r = session.get(base + path, timeout=10)
                samples.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (path, r.status_code)
            samples.sort()
            out["pages"][name] = {"p50_ms": statistics.median(samples),
                                  "p95_ms": samples[int(len(samples) * 0.95) - 1], "max_ms": samples[-1],
                                  "bytes": len(r.content)}
        out["rss_mb"] = _rss_kb(proc.pid) / 1024
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tfo-dash-bench-"))
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "tfo.toml").write_text('[tfo.store]\nkind = "local"\npath = ".tfo/store"\n')
    t = time.monotonic()
    populate(repo / ".tfo" / "store", args.runs)
    made_s = time.monotonic() - t
    result = {"runs": args.runs, "requests": args.requests, "populated_s": made_s,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              **measure(repo, args.requests)}
    print(json.dumps(result, indent=2))
    write_section(args.out, BEGIN, END, section(result))


def section(r: dict[str, Any]) -> str:
    rows = [f"| `{name}` | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['max_ms']:.1f} | {p['bytes']:,} |"
            for name, p in r["pages"].items()]
    ok = all(r["pages"][p]["p95_ms"] < 200 for p in ("/", "/api/runs"))
    return "\n".join([
        BEGIN,
        f"## Dashboard: {r['runs']:,} recorded runs",
        "",
        f"`python -m ops.bench.dashboard --runs {r['runs']}` on {r['machine']}, {r['date']}. A local store holding "
        f"{r['runs']:,} finished runs (1 to 12 deployments each, over 30 days) and 3 runs still going; a real "
        f"`tfo dashboard` indexed them in {r['indexed_s']:.1f} s (start to its first answer) and held "
        f"{r['rss_mb']:.0f} MB. Each page asked {r['requests']} times, one after another:",
        "",
        "| page | p50 (ms) | p95 (ms) | max (ms) | bytes |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Target (`/` and `/api/runs` under 200 ms): {'met' if ok else 'NOT met'}.",
        "",
        "```json",
        json.dumps(r, indent=2),
        "```",
        END,
    ])


if __name__ == "__main__":
    main()
