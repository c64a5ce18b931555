"""The benchmark profile's lane accounting (ops/bench/profile.py) on a made-up run."""

from __future__ import annotations

import pytest

from ops.bench.profile import Recording, Sample, analyze, in_flight, kind_of


def run_of(spans: dict[str, tuple[float, float]], wall: float) -> Recording:
    rec = Recording(started=0.0, ended=wall)
    events = []
    for dep, (start, end) in spans.items():
        events += [(0.0, f"[tfo     0.0s] {dep} queued"), (start, f"[tfo {start:7.1f}s] {dep} preparing"),
                   (start + 0.2, f"[tfo {start:7.1f}s] {dep} plan"), (end, f"[tfo {end:7.1f}s] {dep} succeeded")]
    rec.lines = sorted(events)
    rec.samples = [Sample(t / 10, 1.0 if 1.0 <= t / 10 < 3.0 else 0.5, 0.0, 0.0, 2) for t in range(60)]
    return rec


def test_in_flight_runs_from_the_first_phase_after_queued_to_the_terminal_one() -> None:
    rec = run_of({"a/x": (1.0, 3.0)}, 4.0)
    assert in_flight(rec) == {"a/x": (1.0, 3.0)}


def test_every_lane_second_is_accounted_for() -> None:
    # W=2: two deployments 1-3 s, a gap of 0.5 s with two queued, two more 3.5-5 s, exit at 6 s.
    rec = run_of({"a/1": (1.0, 3.0), "a/2": (1.0, 3.0), "a/3": (3.5, 5.0), "a/4": (3.5, 5.0)}, 6.0)
    p = analyze(rec, workers=2, bare_s=1.0, alone_s=1.5)
    lanes = p["lanes"]
    assert p["lane_s"] == 12.0
    assert lanes["bare work (N x bare)"] == 4.0
    assert lanes["tfo's own time per deployment, as measured alone"] == 2.0
    assert lanes["slow-down of deployments running W at a time"] == pytest.approx(1.0)
    assert lanes["idle: process start, discovery, bundle (before the first deployment)"] == 2.0
    assert lanes["idle: deployments waiting in the queue while a lane is free"] == pytest.approx(1.0, abs=0.11)
    assert lanes["idle: the last wave draining"] == pytest.approx(0.0, abs=0.11)
    assert lanes["idle: after the last deployment (finalize, run audit, reports, exit)"] == 2.0
    assert abs(lanes["unaccounted (sampling step)"]) < 0.2
    assert p["cpu_busy_all_lanes_full"] > p["cpu_busy"]  # the made-up CPU is busiest while both lanes run


def test_a_lone_last_deployment_leaves_the_other_lanes_draining() -> None:
    rec = run_of({"a/1": (0.0, 1.0), "a/2": (0.0, 3.0)}, 3.0)
    p = analyze(rec, workers=2, bare_s=1.0, alone_s=1.0)
    assert p["lanes"]["idle: the last wave draining"] == pytest.approx(2.0, abs=0.11)
    assert p["lanes"]["idle: deployments waiting in the queue while a lane is free"] == 0.0


def test_processes_are_grouped_by_what_they_are() -> None:
    assert kind_of("terraform-provi") == "provider"
    assert kind_of("terraform") == "terraform"
    assert kind_of("python") == "tfo"
