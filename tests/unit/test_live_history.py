"""A run as it happens (orchestrator/live.py) and the dashboard's index of every run (orchestrator/history.py),
on a real local store: the records the executors write, read back as a person sees them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import keys, live
from orchestrator.history import CLOCK_MARGIN_S, RunIndex, figures, overview
from orchestrator.models import Action, DeploymentSpec, RollbackStrategy, RunOptions, RunSpec
from orchestrator.store.local import LocalStore

RUN = "20261208T100000Z-aaaaaa"


def _spec(name: str) -> DeploymentSpec:
    return DeploymentSpec(id=f"s3/acct-a/us-east-1/{name}", service="s3", account="acct-a", region="us-east-1",
                          project=name, state_key=f"s3/acct-a/us-east-1/{name}/terraform.tfstate",
                          tfvars_path="x.tfvars", module_dir="terraform", variables={"secret": "v4lue-never-shown"})


def _run(run_id: str = RUN, *names: str) -> RunSpec:
    return RunSpec(run_id=run_id, options=RunOptions(Action.APPLY, RollbackStrategy.REAPPLY),
                   deployments=tuple(_spec(n) for n in names or ("one", "two")),
                   started_at=f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T{run_id[9:11]}:{run_id[11:13]}:"
                              f"{run_id[13:15]}+00:00", actor="alice", git_sha="c0ffee" * 6)


def _summary(run: RunSpec, statuses: dict[str, str], took: float = 10.0, each: float = 8.0) -> dict[str, Any]:
    started = time.mktime(time.strptime(run.run_id[:15], "%Y%m%dT%H%M%S")) - time.timezone
    from datetime import UTC, datetime
    status = "succeeded" if set(statuses.values()) == {"succeeded"} else "failed"
    return {"run_id": run.run_id, "action": "apply", "status": status, "started_at": run.started_at,
            "finished_at": datetime.fromtimestamp(started + took, UTC).isoformat(),
            "deployments": [{"id": s.id, "service": "s3", "account": "acct-a", "region": "us-east-1",
                             "project": s.project, "state_key": s.state_key, "status": statuses[s.project],
                             "duration_s": each, "host": "w1@h", "plan": {"add": 1, "change": 0, "destroy": 0},
                             "error": "boom password=hunter2-secret" if statuses[s.project] != "succeeded" else None,
                             "rollback": {"strategy": "reapply", "status": "succeeded", "matches_target": True}
                             if statuses[s.project] == "rolled_back" else None, "lease_wait_s": 1.5}
                            for s in run.deployments]}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_a_recorder_writes_each_deployment_s_phases_in_the_background_and_at_close(store: LocalStore) -> None:
    recorder = live.ProgressRecorder(store, RUN, "w1@h", interval=0.05)
    dep = _spec("one").id
    recorder(dep, "queued")  # queued is what the card says: never written
    recorder(dep, "init")
    recorder(dep, "plan", "first line\nsecond line password=hunter2-secret")
    deadline = time.monotonic() + 5
    while live.read_progress(store, RUN, dep) is None:
        assert time.monotonic() < deadline, "the background flush never wrote"
        time.sleep(0.02)
    recorder(dep, "plan", "first line")  # the same again: nothing new
    recorder(dep, "failed", "password=hunter2-secret went wrong")
    recorder.close()
    record = live.read_progress(store, RUN, dep)
    assert record is not None
    assert [m.phase for m in record.phases] == ["init", "plan", "failed"]
    assert record.phases[1].detail == "first line"  # one line only
    assert "hunter2" not in json.dumps(record.to_dict())  # redacted by pattern
    assert {m.host for m in record.phases} == {"w1@h"}
    # a rollback on another host (finalize) continues the same record
    later = live.ProgressRecorder(store, RUN, "w2@h", interval=10)
    later(dep, "rollback", "reapply")
    later(dep, "rolled_back")
    later.close()
    record = live.read_progress(store, RUN, dep)
    assert record is not None and [m.phase for m in record.phases] == ["init", "plan", "failed", "rollback",
                                                                       "rolled_back"]
    assert record.last is not None and record.last.host == "w2@h"
    assert not store.get(keys.progress(RUN, dep)).startswith(b"gAAAA")  # plain text: ids and phases only


def test_a_failing_store_is_retried_and_never_raises(tmp_path: Path) -> None:
    class Flaky(LocalStore):
        fail = 2

        def put(self, key: str, data: bytes, **kw: Any) -> None:
            if key.startswith(keys.RUNS) and "/progress/" in key and self.fail:
                self.fail -= 1
                raise OSError("store down")
            super().put(key, data, **kw)

    store = Flaky(tmp_path / "store")
    recorder = live.ProgressRecorder(store, RUN, "h", interval=0.02)
    recorder(_spec("one").id, "init")
    time.sleep(0.3)
    recorder.close()
    assert store.fail == 0 and live.read_progress(store, RUN, _spec("one").id) is not None


def test_a_local_run_s_records_come_from_the_executor(tmp_path: Path, store: LocalStore) -> None:
    """The card when the run starts; the terminal's events reach the store too (tee)."""
    seen: list[tuple[str, str]] = []
    run = _run(RUN, "one")
    live.write_card(store, run, "local", "laptop")
    card = store.get_json(keys.run_card(RUN))
    assert card["deployments"][0]["id"] == _spec("one").id and card["executor"] == "local"
    assert "v4lue-never-shown" not in json.dumps(card)  # never variables
    recorder = live.ProgressRecorder(store, RUN, "laptop")
    sink = live.tee(lambda d, p, x: seen.append((d, p)), lambda d, p, x: 1 / 0, recorder)
    sink(_spec("one").id, "apply", "")
    recorder.close()
    assert seen == [(_spec("one").id, "apply")]  # a failing sink does not stop the others
    assert live.read_progress(store, RUN, _spec("one").id) is not None


def test_the_index_follows_a_run_from_its_card_to_its_summary(store: LocalStore) -> None:
    from datetime import UTC, datetime
    now = [datetime(2026, 12, 8, 10, 5, tzinfo=UTC).timestamp()]  # five minutes into the run
    index = RunIndex(store, stuck_after_s=600, clock=lambda: now[0])
    assert index.refresh() is False and index.loaded and index.total() == 0
    run = _run(RUN)
    live.write_card(store, run, "celery", "producer")
    assert index.refresh() is True
    (active,) = index.active()
    assert active.status == "running" and [d.phase for d in active.deployments] == ["queued", "queued"]
    recorder = live.ProgressRecorder(store, RUN, "w1@h", clock=lambda: now[0])
    recorder(_spec("one").id, "apply")
    recorder.close()
    assert index.refresh() is True
    one = index.run(RUN).deployments[0]  # type: ignore[union-attr]
    assert (one.phase, one.host, one.finished) == ("apply", "w1@h", False)
    assert index.refresh() is False  # nothing moved: nothing read again, no change announced
    now[0] += 700  # nothing moves for longer than stuck_after
    assert index.refresh() is True and index.run(RUN).status == "stuck"  # type: ignore[union-attr]
    store.put_json(keys.run_summary(RUN), _summary(run, {"one": "succeeded", "two": "rolled_back"}))
    version = index.version
    assert index.refresh() is True and index.version == version + 1
    finished = index.run(RUN)
    assert finished is not None and finished.status == "failed" and not index.active()
    assert finished.actor == "alice"  # from the card
    two = finished.deployments[1]
    assert two.rollback == {"strategy": "reapply", "status": "succeeded", "matches_target": True}
    assert "hunter2" not in two.error and two.lease_wait_s == 1.5
    assert [r.run_id for r in index.deployment_runs(_spec("two").id)] == [RUN]


def test_later_runs_are_found_by_one_listing_and_late_clocks_too(store: LocalStore) -> None:
    runs = [_run(f"20261208T10{m:02d}00Z-{m:06x}") for m in range(5)]
    for r in runs:
        store.put_json(keys.run_summary(r.run_id), _summary(r, {"one": "succeeded", "two": "succeeded"}))
    index = RunIndex(store)
    index.refresh()
    assert [r.run_id for r in index.recent(limit=3)] == [r.run_id for r in reversed(runs)][:3]
    # a host whose clock lags made a run that sorts before the newest one, within the margin
    lagging = _run("20261208T100130Z-bbbbbb")
    store.put_json(keys.run_summary(lagging.run_id), _summary(lagging, {"one": "succeeded", "two": "succeeded"}))
    assert CLOCK_MARGIN_S >= 180
    assert index.refresh() is True and index.run(lagging.run_id) is not None
    assert [r.run_id for r in index.recent(limit=10)][:4] == [runs[4].run_id, runs[3].run_id, runs[2].run_id,
                                                              lagging.run_id]
    assert [r.run_id for r in index.recent(limit=2, before=runs[2].run_id)] == [lagging.run_id, runs[1].run_id]


def test_figures_count_today_and_the_time_parallel_runs_saved(store: LocalStore) -> None:
    a, b = _run("20261208T090000Z-000001"), _run("20261201T090000Z-000002")  # today, a week ago
    store.put_json(keys.run_summary(a.run_id), _summary(a, {"one": "succeeded", "two": "rolled_back"}, 10, 8))
    store.put_json(keys.run_summary(b.run_id), _summary(b, {"one": "succeeded", "two": "failed"}, 5, 4))
    index = RunIndex(store)
    index.refresh()
    from datetime import UTC, datetime
    now = datetime(2026, 12, 8, 12, tzinfo=UTC).timestamp()
    page = overview(index, now)
    assert page["today"] == {"runs": 1, "deployments": 2, "succeeded": 1, "failed": 0, "rolled_back": 1,
                             "average_duration_s": 8.0, "time_saved_s": 6.0}  # 8 + 8 one after another, in 10
    week = figures(index.all_runs(), now - 8 * 86400)
    assert (week["runs"], week["deployments"], week["failed"], week["rolled_back"], week["time_saved_s"]) == (
        2, 4, 1, 1, 9.0)
    assert page["recent"][0]["run_id"] == a.run_id and "deployments" not in page["recent"][0]


def test_the_index_says_when_the_store_fails_and_keeps_what_it_had(store: LocalStore) -> None:
    r = _run(RUN)
    store.put_json(keys.run_summary(RUN), _summary(r, {"one": "succeeded", "two": "succeeded"}))
    index = RunIndex(store)
    index.refresh()

    def broken(prefix: str, start_after: str = "") -> list[str]:
        raise OSError("the store is gone")

    store.list_children = broken  # type: ignore[method-assign]
    assert index.refresh() is False
    assert "the store is gone" in index.error and index.total() == 1


def test_a_waiter_wakes_when_the_index_changes(store: LocalStore) -> None:
    index = RunIndex(store)
    index.refresh()
    woke: list[int] = []
    t = threading.Thread(target=lambda: woke.append(index.wait_for_change(index.version, 10)))
    t.start()
    time.sleep(0.1)
    live.write_card(store, _run(RUN), "local", "h")
    index.refresh()
    t.join(5)
    assert woke == [1]
    assert index.wait_for_change(1, 0.05) == 1  # nothing new: back after the timeout


def test_listing_keys_and_children_of_the_local_store(store: LocalStore) -> None:
    store.put_json("runs/a.json", {})
    store.put_json("runs/a/card.json", {})
    store.put_json("runs/a/progress/x.json", {"v": 1})
    store.put_json("runs/b/progress/y.json", {})
    assert store.list_children("runs/") == ["a.json", "a/", "b/"]
    assert store.list_children("runs/", start_after="runs/a/") == ["b/"]
    assert store.list_children("nothing/") == []
    listed = store.list_keys("runs/a/progress/")
    assert [k.key for k in listed] == ["runs/a/progress/x.json"]  # no meta files
    before = listed[0].stamp
    time.sleep(0.01)
    store.put_json("runs/a/progress/x.json", {"v": 22})
    assert store.list_keys("runs/a/progress/")[0].stamp != before


def test_a_run_that_cannot_be_read_is_tried_again_and_never_dropped(store: LocalStore) -> None:
    runs = [_run(f"20261208T10{m:02d}00Z-{m:06x}") for m in range(4)]
    for r in runs:
        store.put_json(keys.run_summary(r.run_id), _summary(r, {"one": "succeeded", "two": "succeeded"}))
    broken = runs[1].run_id
    real_get = store.get_json
    failing = {"on": True}

    def get_json(key: str) -> Any:
        if failing["on"] and key == keys.run_summary(broken):
            raise OSError("SlowDown")
        return real_get(key)

    store.get_json = get_json  # type: ignore[method-assign]
    now = [time.time()]
    index = RunIndex(store, clock=lambda: now[0])
    index.refresh()
    assert index.total() == 3 and index.run(broken) is None
    assert "could not be read yet" in index.partial and "SlowDown" in index.partial
    failing["on"] = False
    now[0] += 31  # its time to try again
    assert index.refresh() is True and index.run(broken) is not None and index.partial == ""


def test_a_run_older_than_the_listing_margin_is_found_by_the_full_listing(store: LocalStore) -> None:
    newest = _run("20261208T120000Z-aaaaaa")
    store.put_json(keys.run_summary(newest.run_id), _summary(newest, {"one": "succeeded", "two": "succeeded"}))
    from datetime import UTC, datetime

    now = [datetime(2026, 12, 8, 12, 30, tzinfo=UTC).timestamp()]
    index = RunIndex(store, clock=lambda: now[0])
    index.refresh()
    late = _run("20261208T090000Z-bbbbbb")  # made three hours earlier, recorded only now (a spooled job)
    live.write_card(store, late, "celery", "webhook")
    index.refresh()
    assert index.run(late.run_id) is None  # the quick listing starts after the newest run, less its margin
    now[0] += 121
    index.refresh()
    assert index.run(late.run_id) is not None and [r.run_id for r in index.active()] == [late.run_id]


def test_a_long_apply_beats_and_a_run_nobody_finishes_is_abandoned(store: LocalStore) -> None:
    from datetime import UTC, datetime

    now = [datetime(2026, 12, 8, 10, 1, tzinfo=UTC).timestamp()]
    run = _run(RUN)
    live.write_card(store, run, "local", "laptop")
    recorder = live.ProgressRecorder(store, RUN, "laptop", interval=3600, heartbeat_s=300, clock=lambda: now[0])
    recorder(_spec("one").id, "apply")
    recorder.flush()
    index = RunIndex(store, stuck_after_s=600, abandoned_after_s=3600, clock=lambda: now[0])
    index.refresh()
    for _ in range(4):  # 40 minutes of a silent apply: its process beats every 5 minutes
        now[0] += 600
        recorder._beat()
        recorder.flush()
        index.refresh()
        assert index.run(RUN).status == "running"  # type: ignore[union-attr]
    recorder.close()
    now[0] += 700  # the process died: no beat any more
    index.refresh()
    assert index.run(RUN).status == "stuck"  # type: ignore[union-attr]
    now[0] += 3600
    index.refresh()
    assert index.run(RUN).status == "abandoned" and index.active() == []  # type: ignore[union-attr]


def test_a_long_record_keeps_its_first_phase(store: LocalStore) -> None:
    recorder = live.ProgressRecorder(store, RUN, "h", interval=3600)
    dep = _spec("one").id
    for i in range(live.MAX_PHASES + 10):
        recorder(dep, f"step-{i}")
    recorder.close()
    record = live.read_progress(store, RUN, dep)
    assert record is not None and len(record.phases) == live.MAX_PHASES
    assert record.phases[0].phase == "step-0" and record.phases[-1].phase == f"step-{live.MAX_PHASES + 9}"
