"""Drift: what a refresh-only plan document says, severities, and the exit codes of `tfo drift`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.commands.drift import exit_code, remediable
from orchestrator.cancel import CancelToken
from orchestrator.config import load_config
from orchestrator.deploy import outside_changes
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
    token = CancelToken()
    in_sync = _drift_run((Status.IN_SYNC, ""), (Status.UNMANAGED, ""))
    assert in_sync.status == RunStatus.SUCCEEDED and exit_code(in_sync, None, token) == 0
    drifted = _drift_run((Status.DRIFTED, "low"), (Status.DRIFTED, "high"), (Status.IN_SYNC, ""))
    assert drifted.status == RunStatus.DRIFTED and exit_code(drifted, None, token) == 5
    assert [s.id for s in remediable(drifted, "high")] == [spec(1).id]
    assert [s.id for s in remediable(drifted, "all")] == [spec(0).id, spec(1).id]
    both = run_result([DeploymentResult(spec(i), Action.APPLY, Status.SUCCEEDED) for i in (0, 1)])
    assert exit_code(drifted, both, token) == 0  # every drift remediated
    one = run_result([DeploymentResult(spec(1), Action.APPLY, Status.SUCCEEDED)])
    assert exit_code(drifted, one, token) == 5  # the low one is left
    failed = run_result([DeploymentResult(spec(1), Action.APPLY, Status.ROLLED_BACK)])
    assert exit_code(drifted, failed, token) == 1
    error = _drift_run((Status.ERROR, ""), (Status.IN_SYNC, ""))
    assert error.status == RunStatus.FAILED and exit_code(error, None, token) == 1


def test_drift_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.drift]\nremediate = "some"\n')
    with pytest.raises(ConfigError, match=r"drift\.remediate"):
        load_config(repo_root=tmp_path, environ={})
    env: dict[str, Any] = {"TFO_DRIFT_REMEDIATE": "high"}
    (tmp_path / "tfo.toml").write_text('[tfo.drift]\ncritical_types = ["aws_kms_key"]\n')
    cfg = load_config(repo_root=tmp_path, environ=env)
    assert (cfg.drift.remediate, cfg.drift.critical_types) == ("high", ("aws_kms_key",))
