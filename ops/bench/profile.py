"""A profile of one parallel run: where the W lanes' time goes, and what the machine's CPU did meanwhile.

The benchmark's ideal is ceil(N/W) x bare: W lanes, each running bare init + plan + apply back to back.
The profile accounts for every lane-second of a real run (W x wall):

- the ideal's own work: N x bare;
- tfo's own time per deployment, measured alone (workspace, lease, backup, audit, checkpoint);
- the slow-down of deployments running W at a time (the rest of their in-flight time);
- lanes idle: before the first deployment starts, while deployments wait in the queue (a scheduling
  loss), while the last wave drains, and after the last deployment until the process exits.

Deployment in-flight times come from tfo's progress lines, stamped as they arrive (`preparing` to the
terminal phase). Alongside, a sampler reads /proc: machine CPU (busy, steal), runnable tasks, and the CPU
of every process of the run by kind (terraform, provider, tfo). Sampling every 0.2 s costs ~1 % of a core.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = {"succeeded", "no_changes", "failed", "rolled_back", "rollback_failed", "cancelled", "recorded"}
LINE = re.compile(r"^\[tfo\s+[\d.]+s\] (\S+) (\w+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    t: float
    busy: float  # fraction of all cores busy (user + system + irq), since the previous sample
    steal: float  # fraction of all cores taken by the hypervisor
    iowait: float  # fraction of all cores idle while a task waited for the disk
    runnable: int  # tasks runnable right now, machine-wide (/proc/loadavg)


@dataclass
class Recording:
    started: float
    ended: float = 0.0
    lines: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    cpu_by_pid: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (kind, last CPU seen)
    cpu_before: dict[int, float] = field(default_factory=dict)  # long-lived processes' CPU before the run
    returncode: int = 0


def _cpu_times() -> tuple[int, int, int, int]:
    """(total, busy, steal, iowait) jiffies of all cores."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total, user + nice + system + irq + softirq, steal, iowait


def _processes() -> Iterator[tuple[int, int, str, float]]:
    """(pid, ppid, comm, CPU seconds) of every live process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        yield int(entry.name), int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / CLK_TCK


def kind_of(comm: str) -> str:
    if comm.startswith("terraform-prov"):
        return "provider"
    if comm == "terraform":
        return "terraform"
    return "tfo"  # the tfo process, its Celery workers and pool children


def _sample_loop(rec: Recording, roots: list[int], stop: threading.Event, interval: float) -> None:
    prev = _cpu_times()
    while not stop.wait(interval):
        now = _cpu_times()
        total = max(1, now[0] - prev[0])
        load = Path("/proc/loadavg").read_text().split()
        rec.samples.append(Sample(time.monotonic() - rec.started, (now[1] - prev[1]) / total,
                                  (now[2] - prev[2]) / total, (now[3] - prev[3]) / total,
                                  int(load[3].split("/")[0])))
        prev = now
        for pid, comm, cpu in _tree(roots):
            rec.cpu_by_pid[pid] = (kind_of(comm), cpu)


def _tree(roots: list[int]) -> list[tuple[int, str, float]]:
    """(pid, comm, CPU seconds) of the roots and all their descendants."""
    procs = list(_processes())
    tree, grew = set(roots), True
    while grew:
        grew = False
        for pid, ppid, _, _ in procs:
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return [(pid, comm, cpu) for pid, _, comm, cpu in procs if pid in tree]


def record(cmd: list[str], cwd: Path, env: dict[str, str], also_watch: list[int] | None = None,
           interval: float = 0.2) -> Recording:
    """Run `cmd` (a `tfo apply` with plain progress lines on stderr) and record it."""
    rec = Recording(started=time.monotonic())
    rec.cpu_before = {pid: cpu for pid, _, cpu in _tree(also_watch or [])}  # workers that ran earlier runs
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_loop, args=(rec, [proc.pid, *(also_watch or [])], stop, interval),
                               daemon=True)
    sampler.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        rec.lines.append((time.monotonic() - rec.started, line.rstrip("\n")))
    rec.returncode = proc.wait()
    rec.ended = time.monotonic() - rec.started
    stop.set()
    sampler.join()
    return rec


def in_flight(rec: Recording) -> dict[str, tuple[float, float]]:
    """Per deployment: (start, end) seconds from its first phase after `queued` (`preparing` with the
    local executor; with Celery the producer polls each second, so whatever phase it sees first) to its
    terminal phase."""
    spans: dict[str, list[float]] = {}
    for t, line in rec.lines:
        m = LINE.match(line)
        if not m:
            continue
        dep, phase = m.groups()
        if phase == "queued":
            continue
        if dep not in spans:
            spans[dep] = [t, t]
        if phase in TERMINAL:
            spans[dep][1] = t
    return {d: (s, e) for d, (s, e) in spans.items()}


def analyze(rec: Recording, workers: int, bare_s: float, alone_s: float) -> dict[str, Any]:
    """Lane accounting (seconds of W x wall) and the machine's CPU during the run."""
    spans = in_flight(rec)
    if not spans:
        raise RuntimeError("no deployment progress lines: was the run's stderr a terminal?")
    n = len(spans)
    wall = rec.ended
    starts = sorted(s for s, _ in spans.values())
    first_start, last_start = starts[0], starts[-1]
    last_end = max(e for _, e in spans.values())
    def flying(t: float) -> int:
        return sum(1 for s, e in spans.values() if s <= t < e)

    step = 0.05
    gaps = drain = 0.0  # lane-seconds
    t = first_start
    while t < last_end:
        queued = sum(1 for s in starts if s > t)
        idle = max(0, workers - flying(t))
        if queued:
            gaps += min(idle, queued) * step
        else:
            drain += idle * step
        t += step
    busy_lanes = sum(e - s for s, e in spans.values())
    tfo_own = n * max(0.0, alone_s - bare_s)
    lanes = workers * wall
    account = {
        "bare work (N x bare)": n * bare_s,
        "tfo's own time per deployment, as measured alone": tfo_own,
        "slow-down of deployments running W at a time": busy_lanes - n * bare_s - tfo_own,
        "idle: process start, discovery, bundle (before the first deployment)": workers * first_start,
        "idle: deployments waiting in the queue while a lane is free": gaps,
        "idle: the last wave draining": drain,
        "idle: after the last deployment (finalize, run audit, reports, exit)": workers * (wall - last_end),
    }
    account["unaccounted (sampling step)"] = lanes - sum(account.values())

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    during = [s for s in rec.samples if first_start <= s.t <= last_end]
    cpu_by_kind: dict[str, float] = {}
    for pid, (kind, cpu) in rec.cpu_by_pid.items():
        cpu_by_kind[kind] = cpu_by_kind.get(kind, 0.0) + cpu - rec.cpu_before.get(pid, 0.0)
    return {
        "deployments": n, "workers": workers, "wall_s": wall, "bare_s": bare_s, "alone_s": alone_s,
        "lane_s": lanes, "lanes": account,
        "mean_in_flight_s": busy_lanes / n,
        "first_start_s": first_start, "last_start_s": last_start, "last_end_s": last_end,
        "cpu_busy": mean([s.busy for s in during]),
        "cpu_busy_all_lanes_full": mean([s.busy for s in during if flying(s.t) >= workers]),
        "cpu_steal": mean([s.steal for s in during]),
        "cpu_iowait": mean([s.iowait for s in during]),
        "runnable_mean": mean([float(s.runnable) for s in during]),
        "cpu_s_by_kind_sampled": cpu_by_kind,
        "samples": len(rec.samples),
    }
