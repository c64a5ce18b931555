"""Prometheus metrics over the run index (orchestrator/history.py): what the store says about every run, so
two dashboards (or one restarted) report the same numbers. Counters count the recorded history; a run
removed from the store by retention makes them go down, which Prometheus reads as a reset.

Queue depths and workers come from the cluster (a callable: the core knows no Celery), drift counts from
the drift records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.history import RunIndex
from orchestrator.models import Action, RollbackStatus, RollbackStrategy, RunStatus, Status
from orchestrator.store.base import Store

DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, float("inf"))
LEASE_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, float("inf"))
DEPLOYMENT_OUTCOMES = tuple(s.value for s in (Status.SUCCEEDED, Status.NO_CHANGES, Status.FAILED, Status.ROLLED_BACK,
                                              Status.ROLLBACK_FAILED, Status.BLOCKED, Status.SKIPPED,
                                              Status.CANCELLED, Status.STALE))


@dataclass(frozen=True)
class ClusterView:
    queues: dict[str, int] = field(default_factory=dict)  # Celery queue -> messages waiting
    workers: tuple[str, ...] = ()  # the workers that answered
    error: str = ""


def _histogram(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], list[float]],
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, samples in sorted(values.items()):
        counts = []
        for bound in buckets:
            counts.append((str(bound) if bound != float("inf") else "+Inf", sum(1 for v in samples if v <= bound)))
        family.add_metric(list(key), counts, sum(samples))
    return family


class IndexCollector(Collector):
    def __init__(self, index: RunIndex, cluster: Callable[[], ClusterView] | None = None,
                 drift: Callable[[], dict[str, int]] | None = None) -> None:
        self.index = index
        self.cluster = cluster
        self.drift = drift
        self._cached: tuple[int, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        version = self.index.version
        if self._cached is None or self._cached[0] != version:  # the history's figures change with the index
            self._cached = (version, list(self._history()))
        yield from self._cached[1]
        index_runs = GaugeMetricFamily("tfo_index_runs", "Runs the dashboard's index holds")
        index_runs.add_metric([], self.index.total())
        index_ok = GaugeMetricFamily("tfo_index_up", "1 when the last look at the store worked")
        index_ok.add_metric([], 0 if self.index.error else 1)
        yield from (index_runs, index_ok)
        yield from self._cluster()
        yield from self._drift()

    def _history(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("tfo_runs", "Finished runs recorded in the store", labels=["action", "status"])
        deployments = CounterMetricFamily("tfo_deployments", "Deployments of finished runs, by how they ended",
                                          labels=["action", "status", "service", "account"])
        rollbacks = CounterMetricFamily("tfo_rollbacks", "Automatic rollbacks, by strategy and outcome",
                                        labels=["strategy", "status"])
        active = GaugeMetricFamily("tfo_runs_active", "Runs going on now, and those that stopped moving (stuck)",
                                   labels=["state"])
        active_deployments = GaugeMetricFamily("tfo_deployments_active", "Deployments of active runs, by phase",
                                               labels=["phase"])
        run_counts: dict[tuple[str, ...], int] = {}
        dep_counts: dict[tuple[str, ...], int] = {}
        rb_counts: dict[tuple[str, ...], int] = {}
        durations: dict[tuple[str, ...], list[float]] = {}
        waits: dict[tuple[str, ...], list[float]] = {}
        states = {"running": 0, "stuck": 0}
        phases: dict[str, int] = {}
        # Every label set an alert looks at exists from the start, at 0: Prometheus' increase() cannot see a
        # counter's first step when the series appears already at 1.
        for strategy in RollbackStrategy:
            for rb_status in RollbackStatus:
                rb_counts[(strategy.value, rb_status.value)] = 0
        for action in (Action.PLAN, Action.APPLY):
            for run_status in RunStatus:
                if run_status != RunStatus.RUNNING:
                    run_counts[(action.value, run_status.value)] = 0
        for run in self.index.all_runs():
            if not run.active:
                for d in run.deployments:  # each service and account seen: every outcome, at 0 to start with
                    for status in DEPLOYMENT_OUTCOMES:
                        dep_counts.setdefault((run.action, status, d.service, d.account), 0)
        for run in self.index.all_runs():
            if run.active:
                states[run.status] = states.get(run.status, 0) + 1
                for d in run.deployments:
                    if not d.finished:
                        phases[d.phase] = phases.get(d.phase, 0) + 1
                continue
            run_counts[(run.action, run.status)] = run_counts.get((run.action, run.status), 0) + 1
            for d in run.deployments:
                key = (run.action, d.status, d.service, d.account)
                dep_counts[key] = dep_counts.get(key, 0) + 1
                if d.duration_s:
                    durations.setdefault((run.action, d.service, d.account), []).append(d.duration_s)
                waits.setdefault((d.service, d.account), []).append(d.lease_wait_s)
                if d.rollback:
                    rk = (str(d.rollback.get("strategy", "")), str(d.rollback.get("status", "")))
                    rb_counts[rk] = rb_counts.get(rk, 0) + 1
        for family, counted in ((runs, run_counts), (deployments, dep_counts), (rollbacks, rb_counts)):
            for labels, n in sorted(counted.items()):
                family.add_metric(list(labels), n)
        for state, n in sorted(states.items()):
            active.add_metric([state], n)
        for phase, n in sorted(phases.items()):
            active_deployments.add_metric([phase], n)
        yield from (runs, deployments, rollbacks, active, active_deployments)
        yield _histogram("tfo_deployment_duration_seconds", "How long deployments took, by service and account",
                         ["action", "service", "account"], durations, DURATION_BUCKETS)
        yield _histogram("tfo_lease_wait_seconds", "How long deployments waited for their state's lease",
                         ["service", "account"], waits, LEASE_BUCKETS)

    def _cluster(self) -> Iterator[Metric]:
        if self.cluster is None:
            return
        view = self.cluster()
        up = GaugeMetricFamily("tfo_cluster_up", "1 when the broker answered")
        up.add_metric([], 0 if view.error else 1)
        queues = GaugeMetricFamily("tfo_celery_queue_length", "Messages waiting in each Celery queue",
                                   labels=["queue"])
        for queue, n in sorted(view.queues.items()):
            queues.add_metric([queue], n)
        workers = GaugeMetricFamily("tfo_workers_seen", "Workers that answered a ping")
        workers.add_metric([], len(view.workers))
        yield from (up, queues, workers)

    def _drift(self) -> Iterator[Metric]:
        if self.drift is None:
            return
        counts = self.drift()
        family = GaugeMetricFamily("tfo_drift_deployments", "Deployments by their drift state (drift records)",
                                   labels=["state"])
        for state, n in sorted(counts.items()):
            family.add_metric([state], n)
        yield family


class DriftCounts:
    """How many deployments drift, from the drift records of the whole store: one listing (with stamps) per
    refresh, and a read of only the records that changed. Refreshed off the scrape (the dashboard's
    refresher); a store that fails keeps the last counts."""

    def __init__(self, store: Store, parallel: int = 8) -> None:
        self.store = store
        self.parallel = parallel
        self._records: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = drift_counts([])

    def refresh(self) -> None:
        from orchestrator import drift, keys

        listed = {k.key: k.stamp for k in self.store.list_keys(keys.DRIFT) if k.key.endswith(".json")}
        changed = [k for k, stamp in listed.items() if self._records.get(k, ("",))[0] != stamp]

        def read(key: str) -> Any:
            try:
                return drift.DriftRecord.from_dict(self.store.get_json(key))
            except (KeyError, TypeError, ValueError):
                return None

        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="tfo-drift-count") as pool:
            fresh = dict(zip(changed, pool.map(read, changed), strict=True))
        with self._lock:
            self._records = {k: (listed[k], fresh[k] if k in fresh else self._records[k][1]) for k in listed}
            self.counts = drift_counts([r for _, r in self._records.values() if r is not None])

    def __call__(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def drift_counts(records: list[Any]) -> dict[str, int]:
    """drifted_high, drifted_low, in_sync: from drift records (orchestrator.drift.DriftRecord)."""
    out = {"drifted_high": 0, "drifted_low": 0, "in_sync": 0}
    for r in records:
        if r.drifted:
            out["drifted_high" if r.severity == "high" else "drifted_low"] += 1
        else:
            out["in_sync"] += 1
    return out
