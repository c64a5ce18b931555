"""Drift detection and remediation with the real terraform and the project's provider, whose resources are
files: deleted or edited behind Terraform's back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FIRST_APPLY_WORLD, Repo, write_sample
from tests.slack_stub import SlackStub

pytestmark = pytest.mark.integration

LAKE = "s3/acct-a/us-west-2/data-lake"


def _tamper(repo: Repo) -> None:
    (repo.world / "s3.acct-a.us-west-2.data-lake.raw.json").unlink()
    curated = repo.world / "s3.acct-a.us-west-2.data-lake.curated.json"
    doc = json.loads(curated.read_text())
    content = json.loads(doc["content"])
    content["versioning"] = False
    doc["content"] = json.dumps(content)
    curated.write_text(json.dumps(doc))


def _states(repo: Repo) -> dict[str, bytes]:
    root = repo.root / ".tfo" / "store"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("*/*/*/*/terraform.tfstate")}


def _drift(repo: Repo, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "drift.json"
    r = repo.tfo("drift", "--json-out", str(out), *args)
    return r.returncode, json.loads(out.read_text()) if out.exists() else {}, r.stdout + r.stderr


def test_drift_is_found_exactly_changes_nothing_and_is_remediated(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    code, report, out = _drift(repo, tmp_path)
    assert code == 0, out
    assert {d["id"]: d["status"] for d in report["deployments"]} == {
        LAKE: "in_sync", "kms/acct-a/us-west-2/data-lake": "in_sync", "iam/acct-b/us-east-1/platform": "in_sync"}

    _tamper(repo)
    world, states = repo.world_state(), _states(repo)
    backups = set((repo.root / ".tfo/store").glob("backups/**/*"))
    code, report, out = _drift(repo, tmp_path)
    assert code == 5, out
    by_id = {d["id"]: d for d in report["deployments"]}
    lake = by_id[LAKE]
    assert (lake["status"], lake["severity"]) == ("drifted", "high")  # a deletion outside Terraform
    found = {d["address"]: (d["change"], d["attributes"]) for d in lake["drift"]}
    assert found == {'tfotest_thing.bucket["raw"]': ("deleted", []),
                     'tfotest_thing.bucket["curated"]': ("updated", ["content"])}
    assert {d["status"] for i, d in by_id.items() if i != LAKE} == {"in_sync"}
    assert report["status"] == "drifted" and report["remediation"] is None
    # detection changed nothing: no apply, no state written, no lease, no backup
    assert repo.world_state() == world and _states(repo) == states
    assert list((repo.root / ".tfo/store/locks").glob("*.lease")) == []
    assert set((repo.root / ".tfo/store").glob("backups/**/*")) == backups
    assert "Pa55-in-Tags" not in out  # values are not reported

    code, report, out = _drift(repo, tmp_path, "--remediate")
    assert code == 0, out
    fixed = report["remediation"]["deployments"]
    assert [(d["id"], d["status"]) for d in fixed] == [(LAKE, "succeeded")] and fixed[0]["backup_key"]
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    curated = json.loads(repo.world_state()["s3.acct-a.us-west-2.data-lake.curated"]["content"])
    assert curated["versioning"] is True
    assert _drift(repo, tmp_path)[0] == 0


def test_a_pending_change_is_not_remediated_and_never_applied_deployments_are_unmanaged(repo: Repo,
                                                                                        tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    _tamper(repo)
    lake = repo.root / "Accounts/acct-a/data-lake.tfvars"
    lake.write_text(lake.read_text().replace("curated = { versioning = true }", "curated = { versioning = false }"))
    repo.write("Accounts/acct-c/new.tfvars", 's3_buckets = {\n  fresh = {}\n}\n')
    world = repo.world_state()
    code, report, out = _drift(repo, tmp_path, "--remediate")
    assert code == 5, out
    by_id = {d["id"]: d["status"] for d in report["deployments"]}
    assert by_id[LAKE] == "drifted" and by_id["s3/acct-c/us-east-1/new"] == "unmanaged"
    assert report["remediation"] is None
    assert report["not_remediated"] == [{"id": LAKE, "reason": report["not_remediated"][0]["reason"]}]
    assert "pending change" in report["not_remediated"][0]["reason"]
    assert repo.world_state() == world


def test_remediate_high_leaves_low_severity_drift_alone(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    curated = repo.world / "s3.acct-a.us-west-2.data-lake.curated.json"
    doc = json.loads(curated.read_text())
    doc["content"] = doc["content"].replace('"versioning":true', '"versioning":false')
    curated.write_text(json.dumps(doc))
    repo.config('\n[tfo.drift]\nremediate = "high"\n')
    code, report, out = _drift(repo, tmp_path)
    assert code == 5 and report["remediation"] is None, out
    assert next(d for d in report["deployments"] if d["id"] == LAKE)["severity"] == "low"
    repo.config('\n[tfo.drift]\nremediate = "high"\ncritical_types = ["tfotest_*"]\n')
    code, report, out = _drift(repo, tmp_path)
    assert code == 0, out
    assert next(d for d in report["deployments"] if d["id"] == LAKE)["severity"] == "high"
    assert [d["status"] for d in report["remediation"]["deployments"]] == ["succeeded"]


def test_alerts_and_history_follow_transitions_only(repo: Repo, tmp_path: Path) -> None:
    from tests.github_stub import GitHubStub

    slack, github = SlackStub(), GitHubStub()
    api = github.start()
    try:
        repo.config(f'\n[tfo.alerts]\ngithub_repo = "org/infra"\n\n[tfo.github]\napi_url = "{api}"\n')
        repo.env.update({"GITHUB_TOKEN": "ghp_stubtoken0123456789abcdefghijklmnopqr",
                         "TFO_ALERTS_SLACK_WEBHOOK_URL": slack.url})  # the URL is a secret: not in the file
        write_sample(repo)
        assert repo.tfo("apply").returncode == 0
        assert _drift(repo, tmp_path)[0] == 0
        assert slack.messages == [] and github.issues == {}  # in sync: nothing to say
        _tamper(repo)
        assert _drift(repo, tmp_path)[0] == 5
        assert len(slack.messages) == 1 and f"`{LAKE}` started drifting (severity high)" in slack.messages[0]
        assert 'tfotest_thing.bucket["raw"]: deleted' in slack.messages[0]
        (issue,) = github.issues.values()
        assert (issue["title"], issue["state"]) == (f"Drift: {LAKE}", "open")
        assert _drift(repo, tmp_path)[0] == 5
        assert len(slack.messages) == 1 and len(github.issues) == 1  # still drifted: no new alert
        assert _drift(repo, tmp_path, "--remediate")[0] == 0
        assert len(slack.messages) == 2 and "was remediated" in slack.messages[1]
        assert issue["state"] == "closed"
        assert "Pa55-in-Tags" not in "".join(slack.messages) + json.dumps(github.issues)

        shown = repo.tfo("drift", "history", LAKE, "--json")
        assert shown.returncode == 0, shown.stderr
        (record,) = json.loads(shown.stdout)
        assert [e["event"] for e in record["events"]] == ["drifted", "remediated"] and not record["drifted"]
        text = repo.tfo("drift", "history")
        assert text.returncode == 0 and f"{LAKE}: in sync" in text.stdout and "remediated" in text.stdout
        assert repo.tfo("drift", "history", "../../etc").returncode == 2
    finally:
        github.stop()
        slack.server.shutdown()


def test_a_remediation_that_fails_is_rolled_back_and_stays_drifted(repo: Repo, tmp_path: Path) -> None:
    repo.config('rollback = "state"')
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    applied = _states(repo)
    _tamper(repo)
    # A fault in the world, not in the configuration (which would be a pending change): the provider
    # cannot write the deleted bucket back, so re-applying fails after it restored `curated`.
    blocker = repo.world / "s3.acct-a.us-west-2.data-lake.raw.tmp"
    blocker.mkdir()
    code, report, out = _drift(repo, tmp_path, "--remediate")
    assert code == 1, out
    (failed,) = report["remediation"]["deployments"]
    assert (failed["id"], failed["status"]) == (LAKE, "rolled_back"), out
    assert failed["backup_key"] and failed["rollback"]["strategy"] == "state"
    assert failed["rollback"]["status"] == "succeeded", failed["rollback"]
    assert _states(repo) == applied  # the state as it was before the remediation, from its backup
    assert list((repo.root / ".tfo/store/locks").glob("*.lease")) == []
    (record,) = json.loads(repo.tfo("drift", "history", LAKE, "--json").stdout)
    assert record["drifted"] and [e["event"] for e in record["events"]] == ["drifted"]  # not remediated

    blocker.rmdir()
    code, report, out = _drift(repo, tmp_path, "--remediate")
    assert code == 0, out
    assert set(repo.world_state()) == FIRST_APPLY_WORLD


def test_a_drift_run_by_hand_waits_for_the_one_in_progress(repo: Repo, tmp_path: Path) -> None:
    import signal
    import threading
    import time

    from orchestrator import keys
    from orchestrator.locks import FileLeaseBackend, LeaseManager

    toml = repo.root / "tfo.toml"
    toml.write_text(toml.read_text().replace("lock_timeout_s = 60", "lock_timeout_s = 2"))
    write_sample(repo)
    leases = LeaseManager(FileLeaseBackend(repo.root / ".tfo/store/locks"), ttl_s=30)
    try:
        assert leases.acquire(keys.drift_lock(), "drift-beat-elsewhere", 0).acquired  # a scheduled run, say
        start = time.monotonic()
        code, _, out = _drift(repo, tmp_path)
        assert code == 3 and time.monotonic() - start >= 2, out  # waited lock_timeout_s, then said who holds it
        assert "another drift run holds namespace (default): run drift-beat-elsewhere" in out
        waiting = repo.popen("drift")  # Ctrl-C while waiting: interrupted, not "could not run"
        time.sleep(1.0)
        waiting.send_signal(signal.SIGINT)
        assert waiting.wait(timeout=30) == 130, waiting.communicate()
        toml.write_text(toml.read_text().replace("lock_timeout_s = 2", "lock_timeout_s = 30"))
        threading.Timer(2.0, leases.release, (keys.drift_lock(), "drift-beat-elsewhere")).start()
        start = time.monotonic()
        code, report, out = _drift(repo, tmp_path)  # goes ahead once the other run ends
        assert code == 0 and {d["status"] for d in report["deployments"]} == {"unmanaged"}, out
        assert time.monotonic() - start >= 2
    finally:
        leases.close()
