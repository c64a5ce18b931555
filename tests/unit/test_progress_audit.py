from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from orchestrator import audit, keys
from orchestrator.errors import StoreError
from orchestrator.models import Action, RunOptions, RunSpec
from orchestrator.progress import Progress
from orchestrator.redaction import Redactor
from orchestrator.store.local import LocalStore


def test_plain_lines_for_ci_are_redacted() -> None:
    out = io.StringIO()
    p = Progress(out, live=False, redactor=Redactor(["tok-12345"]))
    p("s3/a/r/p", "failed", "error with tok-12345 and password=hunter22")
    line = out.getvalue()
    assert "s3/a/r/p failed" in line and "tok-12345" not in line and "hunter22" not in line
    assert "\x1b[" not in line


def test_terminal_view_stays_compact_whatever_the_run_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import progress

    monkeypatch.setattr(progress, "REFRESH_S", 0.0)  # draw on every event: the worst case for output size
    out = io.StringIO()
    p = Progress(out, live=True, max_rows=5)
    ids = [f"s3/acct-{i:03d}/us-east-1/p" for i in range(400)]
    for phase in ("queued", "init", "plan", "apply"):
        for dep in ids:
            p(dep, phase, "")
    for dep in ids[:-3]:
        p(dep, "succeeded", "")
    for dep in ids[-3:-1]:
        p(dep, "failed", "boom")
    frame = out.getvalue().rsplit("\x1b[", 1)[0]
    p.close()
    last = out.getvalue()[-2000:]
    assert "399/400 done: 397 ok, 2 failed, 1 running" in last
    assert ids[-1] in last and ids[-2] in last and "boom" in last  # running and failed rows are named
    assert ids[0] not in last  # finished ones are counted, not listed
    # one frame is a few lines, whatever the size; the old table redrew 400 rows per event (~74 MB)
    assert len(out.getvalue()) < 4_000 * 2_200 and frame


def test_terminal_view_redraws_at_most_a_few_times_a_second() -> None:
    out = io.StringIO()
    p = Progress(out, live=True)
    for i in range(2000):
        p(f"s3/a/r/p{i}", "queued", "")
    p.close()
    assert len(out.getvalue()) < 50_000  # two or three frames, not two thousand


class BrokenStore(LocalStore):
    def put(self, *args: object, **kwargs: object) -> None:
        raise StoreError("s3://bucket/audit unreachable")


def test_audit_upload_failure_keeps_the_record_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit.time, "sleep", lambda s: None)  # no backoff waits in a unit test
    run = RunSpec("20260102T030405Z-abcdef", RunOptions(Action.APPLY), (), "2026-01-02T03:04:05+00:00")
    key = keys.audit_run(run.run_id, run.started_at)
    assert key == "audit/year=2026/month=01/day=02/run_id=20260102T030405Z-abcdef/run.json"
    stored, error = audit.write(BrokenStore(tmp_path / "s"), key, {"run_id": run.run_id, "x": 1},
                                   tmp_path / "work" / "w")
    assert stored == "" and "unreachable" in error and "kept locally" in error
    local = tmp_path / "work" / "w" / "audit-pending" / key
    assert json.loads(local.read_text())["x"] == 1
    assert oct(local.stat().st_mode & 0o777) == "0o600"
    # the next successful write from this host's workdir uploads it and removes the local copy
    store = LocalStore(tmp_path / "s")
    other = keys.audit_run("20260102T040000Z-bbbbbb")
    assert audit.write(store, other, {"run_id": "20260102T040000Z-bbbbbb"}, tmp_path / "work" / "w2") == (other, "")
    assert not local.exists()
    assert store.get_json(key) == {"run_id": run.run_id, "x": 1}
