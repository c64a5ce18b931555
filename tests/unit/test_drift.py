"""Drift: what a refresh-only plan document says, severities, and the exit codes of `tfo drift`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_config
from orchestrator.deploy import outside_changes
from orchestrator.drift_run import DriftOutcome, remediable
from orchestrator.errors import ConfigError
from orchestrator.models import Action, DeploymentResult, DriftedResource, RunResult, RunStatus, Status
from tests.unit.test_report_bundle import run_result, spec

REFRESH_ONLY = {"resource_drift": [
    {"address": 'tfotest_thing.bucket["curated"]', "mode": "managed", "type": "tfotest_thing",
     "change": {"actions": ["update"], "before": {"content": "a", "id": "x", "fail": False},
                "after": {"content": "b", "id": "x", "fail": False}}},
    {"address": 'tfotest_thing.bucket["raw"]', "mode": "managed", "type": "tfotest_thing",
     "change": {"actions": ["delete"], "before": {"content": "a"}, "after": None}},
    {"address": "data.x.y", "mode": "data", "type": "x", "change": {"actions": ["update"]}},
]}


def test_outside_changes_name_the_attributes_never_the_values() -> None:
    found = outside_changes(REFRESH_ONLY)
    assert found == [DriftedResource('tfotest_thing.bucket["curated"]', "tfotest_thing", "updated", ("content",)),
                     DriftedResource('tfotest_thing.bucket["raw"]', "tfotest_thing", "deleted")]
    assert str(found[0]) == 'tfotest_thing.bucket["curated"]: updated (content)'
    assert outside_changes({}) == []


def _drift_run(*results: tuple[Status, str]) -> RunResult:
    return run_result([DeploymentResult(spec(i), Action.DRIFT, status, severity=severity)
                       for i, (status, severity) in enumerate(results)])


def test_exit_codes_and_what_is_remediated() -> None:
    in_sync = _drift_run((Status.IN_SYNC, ""), (Status.UNMANAGED, ""))
    assert in_sync.status == RunStatus.SUCCEEDED and DriftOutcome(in_sync).exit_code() == 0
    drifted = _drift_run((Status.DRIFTED, "low"), (Status.DRIFTED, "high"), (Status.IN_SYNC, ""))
    assert drifted.status == RunStatus.DRIFTED and DriftOutcome(drifted).exit_code() == 5
    assert [s.id for s in remediable(drifted, "high")] == [spec(1).id]
    assert [s.id for s in remediable(drifted, "all")] == [spec(0).id, spec(1).id]
    both = run_result([DeploymentResult(spec(i), Action.APPLY, Status.SUCCEEDED) for i in (0, 1)])
    assert DriftOutcome(drifted, both).exit_code() == 0  # every drift remediated
    assert DriftOutcome(drifted, both).counts() == {"drifted": 2, "in_sync": 1, "remediated": 2}
    one = run_result([DeploymentResult(spec(1), Action.APPLY, Status.SUCCEEDED)])
    assert DriftOutcome(drifted, one).exit_code() == 5  # the low one is left
    failed = run_result([DeploymentResult(spec(1), Action.APPLY, Status.ROLLED_BACK)])
    assert DriftOutcome(drifted, failed).exit_code() == 1
    error = _drift_run((Status.ERROR, ""), (Status.IN_SYNC, ""))
    assert error.status == RunStatus.FAILED and DriftOutcome(error).exit_code() == 1


def test_drift_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.drift]\nremediate = "some"\n')
    with pytest.raises(ConfigError, match=r"drift\.remediate"):
        load_config(repo_root=tmp_path, environ={})
    env: dict[str, Any] = {"TFO_DRIFT_REMEDIATE": "high"}
    (tmp_path / "tfo.toml").write_text('[tfo.drift]\ncritical_types = ["aws_kms_key"]\n')
    cfg = load_config(repo_root=tmp_path, environ=env)
    assert (cfg.drift.remediate, cfg.drift.critical_types) == ("high", ("aws_kms_key",))
    (tmp_path / "tfo.toml").write_text('[tfo.drift]\nschedule = "0 */6 * *"\n')
    with pytest.raises(ConfigError, match=r"tfo\.toml: drift\.schedule = '0 \*/6 \* \*': expected five fields"):
        load_config(repo_root=tmp_path, environ={})


def test_one_drift_run_per_namespace_and_one_per_firing(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from orchestrator import drift_run
    from orchestrator.locks import FileLeaseBackend, LeaseManager
    from orchestrator.store import open_store

    leases = LeaseManager(FileLeaseBackend(tmp_path / "locks"), ttl_s=30)
    try:
        with drift_run.exclusive(leases, "", "beat-1", 0) as first:
            assert first.acquired
            with drift_run.exclusive(leases, "", "beat-2", 0.2) as second:
                assert not second.acquired and second.holder is not None and second.holder.owner == "beat-1"
            with drift_run.exclusive(leases, "team-b", "beat-2", 0) as other_namespace:
                assert other_namespace.acquired
        with drift_run.exclusive(leases, "", "beat-2", 0) as after:
            assert after.acquired  # released on the way out
    finally:
        leases.close()

    store = open_store(load_config(repo_root=tmp_path, environ={}))
    noon, six = datetime(2026, 11, 28, 12, tzinfo=UTC), datetime(2026, 11, 28, 18, tzinfo=UTC)
    assert drift_run.slot_taken(store, "", noon) is None
    taken = drift_run.take_slot(store, "", noon, "beat-1", "host-a")
    assert drift_run.slot_taken(store, "", noon) == taken
    assert drift_run.slot_taken(store, "team-b", noon) is None  # namespaces have their own firings
    drift_run.finish_slot(store, "", taken, 5, {"drifted": 1})
    assert drift_run.slot_taken(store, "", six) is None  # the next firing is free
    done = drift_run.slot_taken(store, "", noon)
    assert done is not None and (done.exit_code, dict(done.counts)) == (5, {"drifted": 1}) and done.finished


def test_a_checkout_cannot_override_where_things_live_what_is_remediated_or_where_alerts_go(tmp_path: Path) -> None:
    from orchestrator.config import checkout_config

    server_root, checkout = tmp_path / "server", tmp_path / "checkout"
    server_root.mkdir()
    checkout.mkdir()
    (server_root / "tfo.toml").write_text(
        '[tfo]\nrollback = "state"\n[tfo.store]\nkind = "local"\npath = "store"\n'
        '[tfo.drift]\nschedule = "0 */6 * * *"\nremediate = "high"\ncritical_types = ["aws_kms_key"]\n'
        '[tfo.alerts]\ngithub_repo = "acme/infra"\n')
    (checkout / "tfo.toml").write_text(
        '[tfo]\nnamespace = "repos/other/repo"\nrollback = "none"\n'
        '[tfo.store]\nkind = "s3"\nbucket = "attacker"\n'
        '[tfo.drift]\nschedule = "* * * * *"\nremediate = "all"\ncritical_types = ["aws_iam_*"]\n'
        '[tfo.alerts]\ngithub_repo = "attacker/x"\nslack_webhook_url = "https://attacker.example/hook"\n')
    server = load_config(server_root / "tfo.toml", repo_root=server_root, environ={})
    cfg, pinned = checkout_config(server, checkout, "repos/acme/infra")
    assert pinned == "repos/other/repo" and cfg.namespace == "repos/acme/infra"
    assert (cfg.store.kind, cfg.store.path) == ("local", str(server_root / "store"))
    assert (cfg.drift.schedule, cfg.drift.remediate) == ("0 */6 * * *", "high")
    assert cfg.drift.critical_types == ("aws_kms_key", "aws_iam_*")  # a repository may only add
    assert (cfg.alerts.github_repo, cfg.alerts.slack_webhook_url) == ("acme/infra", "")
    assert cfg.repo_root == checkout and cfg.rollback == "none"  # the repository's own choice of rollback


def test_a_firing_that_fails_for_one_repository_still_drifts_the_others_and_records_each(tmp_path: Path) -> None:
    """Unreachable remotes (no broker is needed to get that far): each repository's firing is answered with
    its error, recorded finished with exit 3, and its drift lease released; the same firing is then skipped."""
    from datetime import UTC, datetime

    from orchestrator import drift_run
    from orchestrator.store import open_store
    from workers.beat import run_scheduled_drift

    (tmp_path / "tfo.toml").write_text(f'''[tfo.store]
kind = "local"
path = "store"

[tfo.drift]
schedule = "0 */6 * * *"

[tfo.webhook]
repository = "o/r"
remote_url = "{tmp_path}/missing.git"

[tfo.webhook.repositories."o/second"]
remote_url = "{tmp_path}/also-missing.git"
''')
    cfg = load_config(repo_root=tmp_path, environ={})
    now = datetime(2026, 11, 28, 13, 5, tzinfo=UTC)
    answers = run_scheduled_drift(cfg, now=now)["repositories"]
    assert set(answers) == {"o/r", "o/second"}
    store = open_store(cfg)
    for name, namespace in (("o/r", ""), ("o/second", "repos/o/second")):
        a = answers[name]
        assert a["exit_code"] == 3 and a["error"].startswith("GitError: ") and a["namespace"] == namespace, a
        record = drift_run.slot_taken(store, namespace, datetime(2026, 11, 28, 12, tzinfo=UTC))
        assert record is not None and record.exit_code == 3 and record.finished
    assert list((tmp_path / "store" / "locks").glob("*.lease")) == []
    again = run_scheduled_drift(cfg, now=now)["repositories"]
    assert all("was run by drift-beat-" in a["skipped"] for a in again.values()), again
