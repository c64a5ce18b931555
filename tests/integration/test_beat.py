"""`tfo beat`: drift detection on its schedule, through a real Redis, real workers and real Celery beat; two
beats started (as if by mistake) still make one drift run per firing, and alert once per transition."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import Workers, stop_group
from tests.helpers import FIRST_APPLY_WORLD, Repo, write_sample
from tests.slack_stub import SlackStub

pytestmark = pytest.mark.integration
LAKE = "s3/acct-a/us-west-2/data-lake"
STORE = Path(".tfo") / "store"


def _start_beat(repo: Repo, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "beat", "-n", f"{name}@%h", "--schedule-file",
         str(log_dir / f"{name}.schedule")],
        cwd=repo.root, env=repo.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _drift_runs(repo: Repo) -> list[str]:
    """The ids of the drift (detection) runs recorded in the store."""
    out = []
    for p in (repo.root / STORE / "runs").glob("*.json"):
        if json.loads(p.read_text()).get("action") == "drift":
            out.append(p.stem)
    return sorted(out)


def test_beat_runs_drift_on_schedule_once_per_firing_and_remediates(celery_repo: tuple[Repo, Workers],
                                                                      tmp_path: Path) -> None:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo)
    assert repo.tfo("apply", timeout=180).returncode == 0
    (repo.world / "s3.acct-a.us-west-2.data-lake.raw.json").unlink()  # behind Terraform's back

    no_schedule = repo.tfo("beat")
    assert no_schedule.returncode == 2 and "needs [tfo.drift] schedule" in no_schedule.stderr

    slack = SlackStub()
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + '\n[tfo.drift]\nschedule = "* * * * *"\nremediate = "high"\n')
    repo.env["TFO_ALERTS_SLACK_WEBHOOK_URL"] = slack.url
    beats = [_start_beat(repo, "beat1", tmp_path), _start_beat(repo, "beat2", tmp_path)]
    logs = [tmp_path / "beat1.log", tmp_path / "beat2.log"]

    def said() -> str:
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())

    try:
        # The first firing (within a minute): one beat's consumer runs it; the other firing's message is
        # skipped, whichever consumer gets it.
        deadline = time.monotonic() + 200
        while not (re.search(r"drift for (\S+): exit", said()) and "skipped" in said()):
            assert all(b.poll() is None for b in beats), said()[-4000:]
            assert time.monotonic() < deadline, said()[-4000:]
            time.sleep(1)
        slot = re.search(r"drift for (\S+): exit (\d+)", said())
        assert slot is not None and slot.group(2) == "0", said()[-4000:]  # drift found and remediated
        text = said()
        assert len(re.findall(rf"drift for {re.escape(slot.group(1))}: run \S+, drift of 3", text)) == 1
        assert len(re.findall(rf"drift for {re.escape(slot.group(1))}: run \S+, apply of 1", text)) == 1
        assert re.search(rf"drift for {re.escape(slot.group(1))} skipped: (the firing of|another drift run)", text)
    finally:
        for b in beats:
            stop_group(b)
        slack.server.shutdown()

    assert set(repo.world_state()) == FIRST_APPLY_WORLD  # remediated by the scheduled run
    backups = list((repo.root / STORE / "backups").rglob("*data-lake*"))
    assert len(backups) >= 2, backups  # the first apply's backup, and remediation's before it wrote the state
    # Every firing ran once: as many drift runs in the store as firings run (a later firing, if the beats
    # lived into the next minute, found everything in sync).
    firings = set(re.findall(r"drift for (\S+): exit", said()))
    assert len(_drift_runs(repo)) == len(firings)
    # One alert per transition, not per beat: started drifting, remediated.
    assert len(slack.messages) == 2, slack.messages
    assert "started drifting (severity high)" in slack.messages[0] and "was remediated" in slack.messages[1]
    history = repo.tfo("drift", "history", LAKE, "--json")
    (record,) = json.loads(history.stdout)
    assert [e["event"] for e in record["events"]] == ["drifted", "remediated"]
    scheduled = json.loads((repo.root / STORE / "drift-runs" / "scheduled.json").read_text())
    assert scheduled["exit_code"] == 0 and scheduled["finished"] > scheduled["started"]
    assert list((repo.root / STORE / "locks").glob("*.lease")) == []  # the drift lease was released


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_scheduled_drift_reads_the_apply_branch_head_not_the_working_tree(celery_repo: tuple[Repo, Workers],
                                                                           tmp_path: Path) -> None:
    """With [tfo.webhook] repositories (the GitOps loop), a firing drifts what is on the apply branch, from a
    mirror of the beat's own: a merged change not yet applied is pending (refused for remediation), an
    edit in the beat host's working tree is nothing. The firing is run in-process here (beat itself is
    the test above); its runs go to real workers."""
    from orchestrator.config import load_config
    from workers.beat import run_scheduled_drift

    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    write_sample(repo)
    assert repo.tfo("apply", timeout=180).returncode == 0
    # the repository as pushed: a bare remote of this tree (tfo's own .tfo/ ignored)
    (repo.root / ".gitignore").write_text(".tfo/\n")
    _git(tmp_path, "init", "-q", "-b", "main", str(repo.root))
    _git(repo.root, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "base", "--allow-empty")
    _git(repo.root, "add", "-A")
    _git(repo.root, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "infra")
    _git(repo.root, "branch", "-M", "main")
    remote = tmp_path / "infra.git"
    _git(tmp_path, "clone", "-q", "--bare", str(repo.root), str(remote))
    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text() + f"""
[tfo.webhook]
repository = "org/infra"
remote_url = "{remote}"
mirror_dir = "{tmp_path}/mirror"

[tfo.drift]
schedule = "0 */6 * * *"
remediate = "high"
""")
    cfg = load_config(toml, repo_root=repo.root, environ=repo.env)
    lake_file = repo.root / "Accounts/acct-a/data-lake.tfvars"
    original = lake_file.read_text()
    changed = original.replace("curated = { versioning = true }", "curated = { versioning = false }")
    assert changed != original

    # 1. An edit in the working tree is not what the beat drifts: the drift is remediated from main's head.
    lake_file.write_text(changed)
    (repo.world / "s3.acct-a.us-west-2.data-lake.raw.json").unlink()
    from datetime import UTC, datetime

    first = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
    answer = run_scheduled_drift(cfg, now=first)["repositories"]["org/infra"]
    assert answer["exit_code"] == 0, answer
    assert answer["counts"] == {"in_sync": 2, "drifted": 1, "remediated": 1} and len(answer["runs"]) == 2
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    again = run_scheduled_drift(cfg, now=first)["repositories"]["org/infra"]  # the same firing, a second beat
    assert "the firing of 2026-11-28T12:00:00+00:00 was run by" in again["skipped"]

    # 2. Merged, not applied: drift on that deployment is a pending change, reported and not remediated.
    _git(repo.root, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "curated unversioned")
    _git(repo.root, "push", "-q", str(remote), "main")
    (repo.world / "s3.acct-a.us-west-2.data-lake.raw.json").unlink()
    answer = run_scheduled_drift(cfg, now=datetime(2026, 11, 28, 18, 1, tzinfo=UTC))["repositories"]["org/infra"]
    assert answer["exit_code"] == 5, answer
    assert answer["not_remediated"] == {LAKE: "its configuration in the working tree is not the one last applied: "
                                              "a pending change, not drift; apply (or revert) it, then run drift again"}
    assert "s3.acct-a.us-west-2.data-lake.raw" not in repo.world_state()
    assert list((tmp_path / "beat-checkouts").glob("*")) == []  # the checkout went with its run
