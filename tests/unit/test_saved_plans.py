"""Saved plans: what a plan file says it was made against, durations, keys and config."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from orchestrator import keys
from orchestrator.config import load_config
from orchestrator.deploy import FROM_PLAN, PIPELINES, ClaimSavedPlan, LoadSavedPlan, SavePlan, pipeline, planned_against
from orchestrator.errors import ConfigError
from orchestrator.models import Action, RunOptions, duration_s


def plan_zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_a_plan_file_says_which_state_it_was_made_against() -> None:
    state = {"version": 4, "serial": 7, "lineage": "3363c83a-b945", "resources": []}
    assert planned_against(plan_zip(tfplan=b"x", tfstate=json.dumps(state).encode())) == (7, "3363c83a-b945")
    first = {"version": 4, "serial": 0, "lineage": ""}  # before the first apply
    assert planned_against(plan_zip(tfstate=json.dumps(first).encode())) == (0, "")
    assert planned_against(plan_zip(tfplan=b"x")) is None
    assert planned_against(plan_zip(tfstate=b"not json")) is None
    assert planned_against(plan_zip(tfstate=b'{"serial": "7"}')) is None
    assert planned_against(b"not a zip") is None


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("12h", 43200), ("1d12h", 129600), ("90s", 90),
                                               ("30m", 1800), ("2w", 1209600), ("3600", 3600)])
def test_durations(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "7 d", "7dd", "-1d", "1.5h", "d7"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        duration_s(text)


def test_a_bad_plan_max_age_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.policy]\nplan_max_age = "soon"\n')
    with pytest.raises(ConfigError, match=r"plan_max_age: 'soon' is not a duration") as e:
        load_config(repo_root=tmp_path, environ={})
    assert e.value.exit_code == 2
    (tmp_path / "tfo.toml").write_text('[tfo.policy]\nplan_max_age = "36h"\n')
    assert load_config(repo_root=tmp_path, environ={}).policy.plan_max_age_s == 36 * 3600
    assert load_config(repo_root=tmp_path / "none", environ={}).policy.plan_max_age_s == 7 * 86400


def test_saved_plans_are_encrypted_at_rest_and_kept_under_their_run() -> None:
    for part in ("tfplan", "json", "applied.json"):
        key = keys.saved_plan("20261128T010203Z-abcdef", "s3/acct-a/us-west-2/lake", part)
        assert key == f"runs/20261128T010203Z-abcdef/plans/s3__acct-a__us-west-2__lake.{part}"
        assert keys.encrypted_at_rest(key)


def test_a_plan_run_saves_its_plans_and_an_apply_from_them_never_plans_again() -> None:
    names = [s.name for s in PIPELINES[Action.PLAN]]
    assert names.index("save-plan") < names.index("policy")  # a blocked plan is kept: a waiver may apply it
    from_plan = pipeline(RunOptions(Action.APPLY, from_plan="20261128T010203Z-abcdef"))
    assert from_plan is FROM_PLAN and "plan" not in [s.name for s in from_plan]
    order = [type(s) for s in from_plan]
    assert order.index(LoadSavedPlan) < order.index(ClaimSavedPlan) < [s.name for s in from_plan].index("backup")
    assert pipeline(RunOptions(Action.APPLY)) is PIPELINES[Action.APPLY]
    assert SavePlan not in map(type, PIPELINES[Action.APPLY])


def test_from_plan_needs_a_finished_plan_run_whose_deployments_were_planned(tmp_path: Path) -> None:
    from orchestrator import service
    from orchestrator.errors import UserError
    from orchestrator.models import RunSpec
    from orchestrator.store.local import LocalStore
    from tests.unit.test_report_bundle import spec

    store = LocalStore(tmp_path / "store")
    run_id = "20261128T010203Z-abcdef"
    ok, bad = spec(0), spec(1)
    run = RunSpec(run_id, RunOptions(Action.PLAN), (ok, bad), "2026-11-28T01:02:03+00:00")
    store.put_json(keys.run_spec(run_id), run.to_dict())
    with pytest.raises(UserError, match="has not finished"):
        service.planned_deployments(store, run_id)
    store.put_json(keys.run_results(run_id), [{"spec": {"id": ok.id}, "status": "succeeded"},
                                              {"spec": {"id": bad.id}, "status": "failed"}])
    with pytest.raises(UserError, match=r"not planned successfully: s3/acct/us-east-1/p1 \(failed\)"):
        service.planned_deployments(store, run_id)
    assert [s.id for s in service.planned_deployments(store, run_id, {ok.id}).deployments] == [ok.id]
    with pytest.raises(UserError, match="not a run id"):
        service.planned_deployments(store, "../../x")
