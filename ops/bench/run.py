"""tfo benchmarks: one command runs them all and writes docs/benchmarks.md.

    .venv/bin/python -m ops.bench.run [--quick]      # from the repository root (imports tests.*)

Real terraform (1.0.3 from the demo extra), the project's Python provider whose apply sleeps a set
time, a real redis-server and real `tfo worker` processes. Ratios are measured side by side in one
run; times are medians of several runs (--quick: one run, smaller N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.bench import profile
from orchestrator.procs import host_name
from tests.cluster import RedisServer, Workers
from tests.helpers import Repo, make_repo, terraform_binary
from tests.testprovider.mirror import install

ROOT = Path(__file__).resolve().parents[2]

APPLY_SLEEP_S = 2


def write_section(path: Path, begin: str, end: str, block: str) -> None:
    """Put a bench's section (from `begin` to `end`) into the benchmarks page, in place or at its end."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


@contextmanager
def two_workers(repo: Repo, tmp: Path, concurrency: int = 2) -> Iterator[Workers]:
    """A Redis and two `tfo worker`s of `concurrency` processes each, the repo's runs on them."""
    redis = RedisServer(tmp / "redis")
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + f'\n[tfo.celery]\nbroker_url = "{redis.url}"\n')
    workers = Workers(repo, tmp)
    try:
        workers.start("w1", concurrency=concurrency)
        workers.start("w2", concurrency=concurrency)
        yield workers
    finally:
        workers.stop_all()
        redis.stop()


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [fn() for _ in range(runs)]
    return statistics.median(samples), samples


def write_deployments(repo: Repo, n: int, sleep: float = APPLY_SLEEP_S, salt: str = "") -> None:
    shutil.rmtree(repo.root / "Accounts", ignore_errors=True)
    for i in range(n):
        versioning = str(bool(salt)).lower()
        repo.write(f"Accounts/acct-{i % 4}/proj-{i:03d}.tfvars",
                   f"s3_buckets = {{\n  b = {{ delay_seconds = {sleep}, versioning = {versioning} }}\n}}\n")


def reset_state(repo: Repo) -> None:
    shutil.rmtree(repo.root / ".tfo", ignore_errors=True)
    shutil.rmtree(repo.world, ignore_errors=True)


def children_cpu_s() -> float:
    """user + system CPU of every finished child process (terraform waits for its providers, so theirs too)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd: Callable[[], Any]) -> float:
    start = time.perf_counter()
    cmd()
    return time.perf_counter() - start


def bare_terraform(repo: Repo, tmp: Path, env: dict[str, str], index: int = 0) -> float:
    """init + plan -out + apply of one deployment, by hand, as a person would run it."""
    d = tmp / f"bare-{index}-{time.monotonic_ns()}"
    shutil.copytree(repo.root / "terraform", d)
    (d / "backend_override.tf").write_text('terraform {\n  backend "local" {\n    path = "state.tfstate"\n  }\n}\n')
    (d / "vars.tfvars.json").write_text(json.dumps(
        {"s3_buckets": {"b": {"delay_seconds": APPLY_SLEEP_S, "versioning": False}}}))
    tf = env["TFO_TERRAFORM_BIN"]
    e = {**env, "TF_VAR_tfo_account": f"bare{index}", "TF_VAR_tfo_project": f"{time.monotonic_ns()}",
         "TF_IN_AUTOMATION": "1"}
    start = time.perf_counter()
    for args in (["init", "-input=false", "-no-color"],
                 ["plan", "-input=false", "-no-color", "-out=tfplan", "-var-file=vars.tfvars.json"],
                 ["apply", "-input=false", "-no-color", "-auto-approve", "tfplan"]):
        t = time.perf_counter()
        subprocess.run([tf, *args], cwd=d, env=e, check=True, capture_output=True)
        BARE_STEPS[args[0]] = time.perf_counter() - t
    return time.perf_counter() - start


BARE_STEPS: dict[str, float] = {}


LAST_CONSOLE: list[str] = [""]


def tfo_apply(repo: Repo, *args: str) -> float:
    start = time.perf_counter()
    r = repo.tfo("apply", *args, timeout=3600)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    LAST_CONSOLE[0] = r.stderr
    return elapsed


def timeline(console: str, wall: float) -> dict[str, float]:
    """Seconds since the run started at which one deployment reached each phase, from the progress lines."""
    marks = {}
    for m in re.finditer(r"^\[tfo\s+([\d.]+)s\] \S+ (\w+)", console, re.M):
        marks.setdefault(m.group(2), float(m.group(1)))
    marks["process_exit"] = wall
    return marks


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process and its live children, in MB."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            continue
    return total / 1024


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    return kids + [g for k in kids for g in children(k)]


def profiled_run(repo: Repo, n: int, workers_n: int, results: dict[str, Any], *args: str,
                 watch: list[int] | None = None) -> dict[str, Any]:
    """One more run of N deployments, recorded by ops/bench/profile.py (not one of the median's samples)."""
    reset_state(repo)
    write_deployments(repo, n)
    rec = profile.record([sys.executable, "-m", "cli.main", "apply", *args], repo.root, repo.env, watch)
    if rec.returncode != 0:
        raise RuntimeError("\n".join(line for _, line in rec.lines[-40:]))
    marks = results["single_tfo_timeline"]
    alone = marks["succeeded"] - marks["preparing"]  # one deployment's in-flight time through tfo, alone
    return profile.analyze(rec, workers_n, results["bare_terraform_s"], alone)


def bench_repo(prefix: str) -> tuple[Path, Repo]:
    """A scratch directory and the sample repository in it, with the test provider and a plugin cache."""
    # Measure tfo as installed (pip writes bytecode), not a checkout whose every process compiles it again.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "orchestrator", "cli", "workers", "tests/__init__.py",
                    "tests/testprovider"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    mirror = install(tmp / "mirror")
    tf = terraform_binary()
    if tf is None:
        raise SystemExit("terraform is needed: pip install '.[demo]'")
    repo = make_repo(tmp, mirror, tf)
    # One store key for every process of the bench: reset_state() removes the store between runs while
    # the workers keep running, and a regenerated key file would leave them unable to read new runs.
    from cryptography.fernet import Fernet

    repo.env["TFO_STORE_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    repo.config(extra=f'plugin_cache_dir = "{tmp}/plugin-cache"')
    return tmp, repo


def run_all(quick: bool) -> dict[str, Any]:
    runs = 1 if quick else 3
    sizes = (12,) if quick else (12, 48)
    workers_n = 4
    tmp, repo = bench_repo("tfo-bench-")  # max_workers = 4 in the template
    results: dict[str, Any] = {"apply_sleep_s": APPLY_SLEEP_S, "workers": workers_n, "runs": runs}

    # bare terraform (the unit of the ideal) and one deployment through tfo, in interleaved pairs so that
    # the machine's drift over the minutes of the bench falls on both sides of each difference
    def one() -> float:
        reset_state(repo)
        write_deployments(repo, 1)
        return tfo_apply(repo)

    pairs = 3 if quick else 7
    # The first run on a host works out what tfo caches (terraform's version, the module's sensitive
    # variables; in the user's cache, so later checkouts share it); the pairs below run warm.
    results["single_tfo_cold_cache_s"] = one()
    bare_samples, tfo_samples, bare_cpu, tfo_cpu = [], [], 0.0, 0.0
    for i in range(pairs):
        cpu0 = children_cpu_s()
        bare_samples.append(bare_terraform(repo, tmp, repo.env, i))
        cpu1 = children_cpu_s()
        tfo_samples.append(one())
        bare_cpu, tfo_cpu = bare_cpu + cpu1 - cpu0, tfo_cpu + children_cpu_s() - cpu1
    bare, single = statistics.median(bare_samples), statistics.median(tfo_samples)
    diffs = [t - b for b, t in zip(bare_samples, tfo_samples, strict=True)]
    results["bare_terraform_s"] = bare
    results["bare_terraform_cpu_s"] = bare_cpu / pairs
    results["bare_terraform_steps_s"] = dict(BARE_STEPS)  # of the last run
    results["single_tfo_cpu_s"] = tfo_cpu / pairs  # tfo, terraform and providers
    results["single_tfo_timeline"] = timeline(LAST_CONSOLE[0], tfo_samples[-1])
    results["single_tfo_s"] = single
    results["overhead_pairs"] = {"bare_s": bare_samples, "tfo_s": tfo_samples, "differences_s": diffs}
    results["overhead_s"] = statistics.median(diffs)
    results["overhead_pct"] = 100 * statistics.median(d / b for d, b in zip(diffs, bare_samples, strict=True))

    # parallel efficiency, local executor, and the sequential baseline for N=12
    for n in sizes:
        def local(n: int = n) -> float:
            reset_state(repo)
            write_deployments(repo, n)
            return tfo_apply(repo, "--max-workers", str(workers_n))
        cpu0 = children_cpu_s()
        t, samples = median_of(runs, local)
        cpu = (children_cpu_s() - cpu0) / runs
        ideal = math.ceil(n / workers_n) * bare
        # CPU floor: the run's CPU spread over every core; no schedule can beat it
        floor = cpu / (os.cpu_count() or 1)
        results[f"local_n{n}"] = {"actual_s": t, "ideal_s": ideal, "efficiency": ideal / t, "samples": samples,
                                  "cpu_s": cpu, "cpu_floor_s": floor,
                                  "efficiency_vs_machine": max(ideal, floor) / t}
        seq = sum(bare_terraform(repo, tmp, repo.env, i) for i in range(n))
        results[f"sequential_n{n}_s"] = seq
        results[f"speedup_local_n{n}"] = seq / t
        # The machine's own ceiling: the same N bare deployments, W at a time, by the simplest scheduler
        # there is (W threads taking the next one), no tfo at all.
        with ThreadPoolExecutor(max_workers=workers_n) as lanes:
            start = time.perf_counter()
            list(lanes.map(lambda i: bare_terraform(repo, tmp, repo.env, 1000 + i), range(n)))
            by_hand = time.perf_counter() - start
        results[f"bare_parallel_n{n}"] = {"actual_s": by_hand, "efficiency": ideal / by_hand}
        if n == 12:
            # The same 12 deployments through one `tfo apply --max-workers 1`: tfo's cost per deployment
            # once the process start is shared, side by side with the sequential baseline above.
            reset_state(repo)
            write_deployments(repo, n)
            one_by_one = tfo_apply(repo, "--max-workers", "1")
            results["tfo_one_at_a_time_n12_s"] = one_by_one
            results["overhead_per_deployment_in_run_s"] = (one_by_one - seq) / n
            results["overhead_per_deployment_in_run_pct"] = 100 * (one_by_one - seq) / seq
    results[f"profile_local_n{sizes[-1]}"] = profiled_run(repo, sizes[-1], workers_n, results,
                                                         "--max-workers", str(workers_n))

    # celery: 2 worker processes x 2 = 4 slots
    toml = repo.root / "tfo.toml"
    with two_workers(repo, tmp) as workers:
        for n in sizes:
            def distributed(n: int = n) -> float:
                reset_state(repo)
                write_deployments(repo, n)
                return tfo_apply(repo)
            peak_worker = 0.0
            t_samples = []
            for _ in range(runs):
                t_samples.append(distributed())
                peak_worker = max(peak_worker, max(peak_rss_mb(p.pid) for p in workers.procs.values()))
            t = statistics.median(t_samples)
            ideal = math.ceil(n / workers_n) * bare
            local = results[f"local_n{n}"]  # the same deployments' CPU (workers' own CPU comes on top)
            results[f"celery_n{n}"] = {"actual_s": t, "ideal_s": ideal, "efficiency": ideal / t,
                                       "samples": t_samples, "peak_worker_rss_mb": peak_worker,
                                       "cpu_s": local["cpu_s"], "cpu_floor_s": local["cpu_floor_s"],
                                       "efficiency_vs_machine": max(ideal, local["cpu_floor_s"]) / t}
        results[f"profile_celery_n{sizes[-1]}"] = profiled_run(
            repo, sizes[-1], workers_n, results, watch=[p.pid for p in workers.procs.values()])
        results["dispatch_200_noop_s"] = dispatch(repo)

    # producer peak memory for the largest N (local executor): the CLI process alone
    n = sizes[-1]
    reset_state(repo)
    write_deployments(repo, n)
    toml.write_text(toml.read_text().split("[tfo.celery]")[0])
    # the CLI in-process, so RUSAGE_SELF is the producer alone (terraform and providers are children)
    proc = subprocess.Popen([sys.executable, "-c",
                             "import resource, sys\n"
                             "from cli.main import main\n"
                             "code = main(['apply', '--executor', 'local'])\n"
                             "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)\n"],
                            cwd=repo.root, env=repo.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = proc.communicate(timeout=3600)
    rss_line = next(line for line in out.splitlines() if line.startswith("RSS "))
    results[f"producer_peak_rss_mb_n{n}"] = int(rss_line.split()[1]) / 1024

    results["discovery_10k_s"] = discovery_10k(tmp)
    results["init_plugin_cache"] = plugin_cache(repo, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def dispatch(repo: Repo) -> float:
    """A chord of 200 no-op tasks on Redis: submit to callback."""
    code = (
        "import time, sys\n"
        "from celery import chord\n"
        "from orchestrator.config import load_config\n"
        "from workers.app import make_app\n"
        "app = make_app(load_config())\n"
        "ping = app.signature('tfo.ping')\n"
        "t = time.perf_counter()\n"
        "res = chord([ping.clone(args=(i,)) for i in range(200)])(ping.clone(args=('done',)))\n"
        "res.get(timeout=300)\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo.root, env=repo.env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def discovery_10k(tmp: Path) -> float:
    from orchestrator.config import load_config
    from orchestrator.discovery import discover
    from orchestrator.sharding import build_deployments

    root = tmp / "big-repo"
    shutil.copytree(ROOT / "examples/infra-repo/terraform", root / "terraform")
    for i in range(10_000):
        p = root / f"Accounts/acct-{i % 100:03d}/proj-{i:05d}.tfvars"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f'region = "us-west-2"\ns3_buckets = {{ b{i} = {{ versioning = true }} }}\n'
                     'kms_keys = { k = { rotation = true } }\ntags = { team = "data" }\n')
    cfg = load_config(repo_root=root, environ={})
    start = time.perf_counter()
    specs = build_deployments(cfg, discover(cfg)).specs
    elapsed = time.perf_counter() - start
    assert len(specs) == 20_000
    return elapsed


def plugin_cache(repo: Repo, tmp: Path) -> dict[str, float]:
    tf = repo.env["TFO_TERRAFORM_BIN"]
    cache = tmp / "bench-cache"

    def init(with_cache: bool) -> float:
        d = tmp / f"init-{time.monotonic_ns()}"
        shutil.copytree(repo.root / "terraform", d)
        (d / "backend_override.tf").write_text('terraform {\n  backend "local" {}\n}\n')
        env = {**repo.env, **({"TF_PLUGIN_CACHE_DIR": str(cache)} if with_cache else {})}
        return timed(lambda: subprocess.run([tf, "init", "-input=false", "-no-color"], cwd=d, env=env, check=True,
                                            capture_output=True))

    cache.mkdir(exist_ok=True)
    init(True)  # warm the cache
    return {"without_s": statistics.median(init(False) for _ in range(3)),
            "with_warm_cache_s": statistics.median(init(True) for _ in range(3))}


def write_report(results: dict[str, Any], path: Path) -> None:
    r = results
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {host_name()}: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Terraform from the demo extra, the project's provider sleeping "
        f"{r['apply_sleep_s']} s per resource apply. Reproduce: `.venv/bin/python -m ops.bench.run"
        f"{' --quick' if r['runs'] == 1 else ''}`. Medians of {r['runs']} run(s).",
        "",
        "| measure | result | target |",
        "|---|---:|---|",
        f"| bare terraform init + plan -out + apply, one deployment | {r['bare_terraform_s']:.2f} s | |",
        f"| the same through `tfo apply` (bundle, workspace, lease, backup, audit, report) | "
        f"{r['single_tfo_s']:.2f} s | |",
        f"| orchestration overhead, a run of one deployment (process start included): median of "
        f"{len(r['overhead_pairs']['differences_s'])} interleaved pairs' differences "
        f"({', '.join(f'{d:.2f}' for d in r['overhead_pairs']['differences_s'])}) | {r['overhead_s']:.2f} s"
        f" ({r['overhead_pct']:.0f} %) | < 0.5 s and < 10 % |",
    ]
    if "single_tfo_cold_cache_s" in r:
        lines.append(f"| the same deployment's first run on a host, cold cache (one sample; then warm for every "
                     f"checkout) | {r['single_tfo_cold_cache_s']:.2f} s | |")
    if "overhead_per_deployment_in_run_s" in r:
        lines.append(
            f"| orchestration overhead per deployment in a run (one sample): 12 deployments one at a time through tfo "
            f"({r['tfo_one_at_a_time_n12_s']:.1f} s) vs by hand ({r['sequential_n12_s']:.1f} s), divided by 12 | "
            f"{r['overhead_per_deployment_in_run_s']:.2f} s ({r['overhead_per_deployment_in_run_pct']:.0f} %) | "
            "< 0.5 s and < 10 % |")
    for key in sorted(k for k in r if k.startswith(("local_n", "celery_n"))):
        v = r[key]
        lines.append(f"| parallel efficiency {key.replace('_n', ', N=')}, W={r['workers']} (ideal {v['ideal_s']:.1f} s"
                     f" / actual {v['actual_s']:.1f} s) | {v['efficiency']:.2f} | >= 0.85 |")
        if "cpu_floor_s" in v:
            lines.append(f"| the same against what 2 cores allow (max(ideal, CPU {v['cpu_s']:.0f} s / cores = "
                         f"{v['cpu_floor_s']:.1f} s) / actual) | {v['efficiency_vs_machine']:.2f} | |")
    for key in sorted(k for k in r if k.startswith("bare_parallel_n")):
        n = key.removeprefix("bare_parallel_n")
        v, tfo_local = r[key], r[f"local_n{n}"]
        lines.append(f"| the machine's ceiling: the same N={n} bare deployments, W={r['workers']} at a time by hand "
                     f"(ideal {tfo_local['ideal_s']:.1f} s / actual {v['actual_s']:.1f} s), and tfo (local) against"
                     f" it ({v['actual_s']:.1f} s / {tfo_local['actual_s']:.1f} s) | {v['efficiency']:.2f} /"
                     f" {v['actual_s'] / tfo_local['actual_s']:.2f} | |")
    for key in sorted(k for k in r if k.startswith("sequential_n")):
        n = key.split("_n")[1].rstrip("_s")
        lines += [
            f"| sequential baseline N={n} (bare, one after another) | {r[key]:.1f} s | |",
            f"| speed-up of tfo (local, W={r['workers']}) over sequential, N={n} | {r[f'speedup_local_n{n}']:.2f}x | |",
        ]
    lines += [
        f"| CPU of one deployment: bare terraform / through tfo (user + system, all processes) | "
        f"{r['bare_terraform_cpu_s']:.2f} s / {r['single_tfo_cpu_s']:.2f} s | |",
        f"| chord of 200 no-op tasks on Redis, submit to callback | {r['dispatch_200_noop_s']:.2f} s | < 10 s |",
        f"| discovery + validation of 10,000 tfvars files (20,000 deployments) | {r['discovery_10k_s']:.2f} s "
        "| < 3 s |",
        f"| `terraform init` without / with a warm plugin cache | {r['init_plugin_cache']['without_s']:.2f} s / "
        f"{r['init_plugin_cache']['with_warm_cache_s']:.2f} s | |",
    ]
    for key in (k for k in r if k.startswith("producer_peak")):
        lines.append(f"| peak RSS of the producer (`tfo apply` process, local executor), {key[-3:]} | "
                     f"{r[key]:.0f} MB | |")
    for key in sorted(k for k in r if k.startswith("celery_n")):
        rss = r[key]["peak_worker_rss_mb"]
        lines.append(f"| peak RSS of a worker (main + pool, largest), {key} | {rss:.0f} MB | |")
    marks = r["single_tfo_timeline"]
    steps = r["bare_terraform_steps_s"]

    def between(a: str, b: str) -> str:
        return f"{marks[b] - marks[a]:.2f} s" if a in marks and b in marks else "n/a"

    lines += [
        "",
        "Where one deployment's time goes through `tfo apply` (from its progress lines; the run clock starts"
        " after the CLI has loaded, so the last row holds interpreter start, imports, discovery and bundling"
        " as well as the run audit and reports):",
        "",
        "| phase | through tfo | bare terraform |",
        "|---|---:|---:|",
        f"| run start to `init` (lease, workspace from the bundle) | {marks.get('init', 0):.2f} s | |",
        f"| `init` | {between('init', 'plan')} | {steps.get('init', 0):.2f} s |",
        f"| `plan -out` and its summary | {between('plan', 'backup')} | {steps.get('plan', 0):.2f} s |",
        f"| state backup | {between('backup', 'apply')} | |",
        f"| `apply`, state serial, deployment audit, checkpoint | {between('apply', 'succeeded')} | "
        f"{steps.get('apply', 0):.2f} s |",
        f"| the rest of the process (start, imports, discovery, bundle, finalize, reports) | "
        f"{marks['process_exit'] - marks.get('succeeded', 0):.2f} s | |",
        *profile_lines(r),
        "",
        "Notes on what is measured:",
        "",
        "- *Overhead* is wall time of one `tfo apply` process (CLI start, config, discovery, bundle upload,"
        " lease, init, plan, backup, apply, audit, reports) minus bare `init` + `plan -out` + `apply` of the"
        " same module by hand, measured in interleaved pairs (bare, tfo, bare, tfo, ...) so that the"
        " machine's drift falls on both sides of each difference; the median difference is reported. The"
        " caches tfo keeps in the user's cache are warm (a first run on a host is its own row), and the"
        " project's bytecode is compiled, as pip leaves an installed package. The phase table is its"
        " profile. *Per deployment in a run* shares the process start among 12 deployments.",
        "- *Efficiency* is ideal / actual with ideal = ceil(N/W) x the bare time measured in the same run."
        " The ideal assumes W deployments running at once cost no more than one alone; on 2 cores they do:"
        " every deployment needs the CPU row above (terraform starts three times, the Python provider"
        " five times), so a run needs at least N x that / 2 cores. The second efficiency row divides by the"
        " larger of the two bounds: what the machine allows, and what tfo's scheduling loses on top. The"
        " ceiling row measures what the machine allows directly: the same bare deployments, W at a time,"
        " with no orchestrator; tfo against it is the share of that ceiling tfo keeps.",
        "- *Profile*: the lane table says where the gap to 0.85 comes from. The slow-down row is the"
        " machine: with W = 4 deployments in flight on 2 cores there are on average more runnable tasks than"
        " cores and the CPU is nearly always busy, so each deployment's in-flight time grows from 'alone'"
        " to 'mean in the run'. tfo's rows (its own time per deployment, the idle rows) are what"
        " orchestration costs. With Celery the producer follows progress once a second, so its spans, and"
        " the rows built from them, are good to about a second per deployment.",
        "- The plugin-cache pair uses the project's provider from a local filesystem mirror, so there is no"
        " download to save; with registry providers the difference is the provider download.",
        "- *Noise*: this is a shared 2-core VM (see the steal row). Single samples of the same measure"
        " differ by several tenths of a second (see the pairs' differences); two full runs on different"
        " days differed by 0.35 s in overhead and up to 0.2 in efficiency. Compare ratios within one run,"
        " not across runs.",
        "",
        "Raw results:", "", "```json", json.dumps(r, indent=2, default=str), "```", "",
    ]
    path.write_text("\n".join(lines))


def profile_lines(r: dict[str, Any]) -> list[str]:
    """The lane accounting of the profiled runs, side by side."""
    keys = sorted(k for k in r if k.startswith("profile_"))
    if not keys:
        return []
    profiles = [r[k] for k in keys]
    p0 = profiles[0]
    out = [
        "",
        f"Profile of one more run of N={p0['deployments']} (`ops/bench/profile.py`): every second of the W ="
        f" {p0['workers']} lanes (W x wall) accounted for. The ideal is the first row alone; efficiency is"
        " that row's share.",
        "",
        "| lane time | " + " | ".join(k.removeprefix("profile_").replace("_n", ", N=") for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for row in p0["lanes"]:
        out.append(f"| {row} | " + " | ".join(
            f"{p['lanes'][row]:.1f} s ({100 * p['lanes'][row] / p['lane_s']:.0f} %)" for p in profiles) + " |")
    rows = [
        ("W x wall", lambda p: f"{p['lane_s']:.1f} s ({p['workers']} x {p['wall_s']:.1f} s)"),
        ("a deployment's in-flight time: alone / mean in the run (bare: "
         f"{p0['bare_s']:.2f} s)", lambda p: f"{p['alone_s']:.2f} s / {p['mean_in_flight_s']:.2f} s"),
        ("machine CPU busy while deployments ran (2 cores = 100 %)", lambda p: f"{100 * p['cpu_busy']:.0f} %"),
        ("the same while all W lanes were in flight", lambda p: f"{100 * p['cpu_busy_all_lanes_full']:.0f} %"),
        ("CPU taken by the hypervisor (steal)", lambda p: f"{100 * p['cpu_steal']:.1f} %"),
        ("CPU idle while tasks waited for the disk (iowait)", lambda p: f"{100 * p.get('cpu_iowait', 0):.1f} %"),
        ("runnable tasks, mean (2 can run at once)", lambda p: f"{p['runnable_mean']:.1f}"),
        ("CPU seen by kind of process: terraform / provider / tfo", lambda p: " / ".join(
            f"{p['cpu_s_by_kind_sampled'].get(k, 0):.0f} s" for k in ("terraform", "provider", "tfo"))),
    ]
    for label, fmt in rows:
        out.append(f"| {label} | " + " | ".join(fmt(p) for p in profiles) + " |")
    out.append("")
    for key, p in zip(keys, profiles, strict=True):
        share = {k: 100 * v / p["lane_s"] for k, v in p["lanes"].items()}
        machine = share["slow-down of deployments running W at a time"]
        ours = sum(v for k, v in share.items() if k.startswith(("tfo's", "idle")))
        name = key.removeprefix("profile_").replace("_n", ", N=")
        gap = 100 - share["bare work (N x bare)"]
        out.append(f"- {name}: of the {gap:.0f} points between this run's efficiency and 1, {machine:.0f} are the"
                   f" slow-down of W deployments sharing 2 cores and {ours:.0f} are tfo's (its own time per"
                   " deployment and idle lanes).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run of N=12 only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    results = run_all(args.quick)
    write_report(results, args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
