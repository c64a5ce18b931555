"""The built-in policy rules on plan documents shaped as `terraform show -json` prints them."""

from __future__ import annotations

from typing import Any

from orchestrator.models import Action, RunOptions
from orchestrator.policy import AccountPolicy, PolicyConfig, changed_resources, evaluate
from tests.unit.test_report_bundle import spec


def _plan(*changes: tuple[str, str, list[str]], mode: str = "managed") -> dict[str, Any]:
    return {"format_version": "0.2", "resource_changes": [
        {"address": address, "mode": mode, "type": kind, "name": address.split(".")[-1],
         "change": {"actions": actions}} for address, kind, actions in changes]}


PLAN = _plan(("aws_kms_key.main", "aws_kms_key", ["delete", "create"]),  # a replacement destroys the key
             ("aws_s3_bucket.logs", "aws_s3_bucket", ["delete"]),
             ("aws_s3_bucket.data", "aws_s3_bucket", ["update"]),
             ("aws_iam_role.ci", "aws_iam_role", ["create"]),
             ("aws_iam_role.old", "aws_iam_role", ["no-op"]))
APPLY = RunOptions(Action.APPLY)


def test_only_real_changes_of_managed_resources_count() -> None:
    assert [a for a, _, _ in changed_resources(PLAN)] == ["aws_kms_key.main", "aws_s3_bucket.logs",
                                                          "aws_s3_bucket.data", "aws_iam_role.ci"]
    assert changed_resources(_plan(("data.x.y", "x", ["read"]), mode="data")) == []
    assert changed_resources({}) == []


def test_protect_destroy_refuses_deletes_and_replacements_of_matching_types_unless_allowed() -> None:
    policy = PolicyConfig(protect_destroy=("aws_kms_*", "aws_s3_bucket"))
    [v] = evaluate(PLAN, spec(), policy, APPLY)
    assert v.rule == "protect_destroy" and v.resources == ("aws_kms_key.main", "aws_s3_bucket.logs")
    assert "--allow-destroy" in v.message
    assert evaluate(PLAN, spec(), policy, RunOptions(Action.APPLY, allow_destroy=True)) == ()
    assert evaluate(PLAN, spec(), PolicyConfig(protect_destroy=("aws_iam_role",)), APPLY) == ()  # only creates
    assert evaluate(PLAN, spec(), PolicyConfig(protect_destroy=("*",)), APPLY)[0].resources[0] == "aws_kms_key.main"
    assert evaluate(PLAN, spec(), PolicyConfig(), APPLY) == ()  # off by default


def test_max_changes_needs_an_approval() -> None:
    policy = PolicyConfig(max_changes=3)
    [v] = evaluate(PLAN, spec(), policy, APPLY)
    assert v.rule == "max_changes" and "4 resource changes" in v.message and len(v.resources) == 4
    assert evaluate(PLAN, spec(), policy, RunOptions(Action.APPLY, approved_by=("alice",))) == ()
    assert evaluate(PLAN, spec(), PolicyConfig(max_changes=4), APPLY) == ()


def test_an_account_can_require_approvals_for_any_change() -> None:
    policy = PolicyConfig(accounts={"acct": AccountPolicy(require_approvals=2)})
    [v] = evaluate(PLAN, spec(), policy, RunOptions(Action.APPLY, approved_by=("alice",)))
    assert v.rule == "require_approvals" and "needs 2 approval(s)" in v.message and "has 1" in v.message
    assert evaluate(PLAN, spec(), policy, RunOptions(Action.APPLY, approved_by=("alice", "bob"))) == ()
    assert evaluate(_plan(), spec(), policy, APPLY) == ()  # nothing changes: nothing to approve
    assert evaluate(PLAN, spec(account="other"), policy, APPLY) == ()


def test_the_rules_travel_with_the_run_so_every_worker_judges_it_alike() -> None:
    from orchestrator.models import RunSpec

    policy = PolicyConfig(protect_destroy=("aws_*",), max_changes=5,
                          accounts={"prod": AccountPolicy(require_approvals=2)})
    run = RunSpec("r1", RunOptions(Action.APPLY, allow_destroy=True, approved_by=("alice",)), (spec(),),
                  "2026-01-01T00:00:00+00:00", policy=policy)
    back = RunSpec.from_dict(run.to_dict())
    assert back == run and back.policy.accounts["prod"].require_approvals == 2
    assert RunSpec.from_dict({k: v for k, v in run.to_dict().items() if k != "policy"}).policy == PolicyConfig()


def test_the_same_approver_twice_is_one_approval_and_bad_policy_tables_are_config_errors(tmp_path: Any) -> None:
    import pytest

    from orchestrator.config import load_config
    from orchestrator.errors import ConfigError

    policy = PolicyConfig(accounts={"acct": AccountPolicy(require_approvals=2)})
    assert evaluate(PLAN, spec(), policy, RunOptions(Action.APPLY, approved_by=("alice", "Alice ", ""))) != ()
    for text in ('[tfo]\npolicy = "x"\n', "[tfo.policy]\naccounts = 3\n", "[tfo.policy]\nmax_changes = -1\n",
                 "[tfo.policy]\nunknown = 1\n"):
        (tmp_path / "tfo.toml").write_text(text)
        with pytest.raises(ConfigError):
            load_config(repo_root=tmp_path, environ={})
