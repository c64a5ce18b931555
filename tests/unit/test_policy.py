"""The built-in policy rules on plan documents shaped as `terraform show -json` prints them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.models import Action, RunOptions
from orchestrator.policy import AccountPolicy, PolicyConfig, changed_resources, custom_rules, evaluate, sensitive_values
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


# --- custom rules ----------------------------------------------------------------------------------
RULE = '''
def no_iam_roles(plan, deployment):
    found = [rc["address"] for rc in plan["resource_changes"] if rc["type"] == "aws_iam_role"
             and rc["change"]["actions"] != ["no-op"]]
    if found:
        yield {"message": f"{deployment['account']}: no IAM roles from this repository", "resources": found}

def says(plan, deployment):
    return "one message"

def fine(plan, deployment):
    return None

def broken(plan, deployment):
    raise KeyError("tags")

def odd(plan, deployment):
    return [42]
'''


def _rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.py"
    path.write_text(RULE)
    return path


def test_a_python_rule_returns_violations_and_a_broken_one_refuses(tmp_path: Path) -> None:
    path = _rules(tmp_path)

    def judge(*fns: str) -> tuple[Any, ...]:
        return custom_rules("{}", PLAN, spec(), PolicyConfig(python=tuple(f"{path}:{f}" for f in fns)), tmp_path)

    [v] = judge("no_iam_roles")
    assert (v.rule, v.resources) == ("python:no_iam_roles", ("aws_iam_role.ci",)) and "no IAM roles" in v.message
    assert [v.message for v in judge("says")] == ["one message"]
    assert judge("fine") == ()
    [broken] = judge("broken")
    assert "could not judge this plan: KeyError" in broken.message  # fail closed
    assert "not a message" in judge("odd")[0].message
    assert "could not judge" in judge("missing")[0].message
    assert custom_rules("{}", PLAN, spec(), PolicyConfig(python=("json:loads",)), tmp_path)[0].rule == "python:loads"


def test_a_command_rule_gets_the_plan_in_a_file_and_its_exit_code_is_the_verdict(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(
        "import json, os, stat, sys\n"
        "path = sys.argv[1]\n"
        "assert stat.S_IMODE(os.stat(path).st_mode) == 0o600\n"
        "plan = json.load(open(path))\n"
        "print('env', sorted(k for k in os.environ if k.startswith('TFO_')), os.environ.get('SECRET_X'))\n"
        "sys.exit(1 if plan.get('deny') else 0)\n")
    os.environ["SECRET_X"] = "hunter2"  # tfo's environment is not the command's
    try:
        policy = PolicyConfig(commands=(f"{sys.executable} {script} {{plan}}",))
        assert custom_rules('{"deny": false}', {}, spec(), policy, tmp_path) == ()
        [v] = custom_rules('{"deny": true}', {}, spec(), policy, tmp_path)
    finally:
        del os.environ["SECRET_X"]
    assert v.rule.startswith("command:python") and v.message.startswith("refused (exit 1)")
    assert "TFO_DEPLOYMENT_ID" in v.message and "hunter2" not in v.message and "None" in v.message
    assert not (tmp_path / "tfo-plan.json").exists()
    appended = PolicyConfig(commands=(f"{sys.executable} {script}",))  # no {plan}: the path comes last
    assert len(custom_rules('{"deny": true}', {}, spec(), appended, tmp_path)) == 1
    [missing] = custom_rules("{}", {}, spec(), PolicyConfig(commands=("no-such-policy-tool --x",)), tmp_path)
    assert "was not found" in missing.message


def test_custom_rules_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    for bad, words in [('python = ["rules.py:check"]', "absolute path"), ('python = ["nofunction"]', "MODULE:FUNCTION"),
                       ("commands = [\"conftest 'unclosed\"]", "quotation"), ('commands = [""]', "empty command")]:
        (tmp_path / "tfo.toml").write_text(f"[tfo.policy]\n{bad}\n")
        with pytest.raises(ConfigError, match=words):
            load_config(repo_root=tmp_path, environ={})
    (tmp_path / "tfo.toml").write_text(f'[tfo.policy]\npython = ["{tmp_path}/r.py:check"]\ncommands = ["opa eval"]\n')
    policy = load_config(repo_root=tmp_path, environ={}).policy
    assert policy.active and policy.python == (f"{tmp_path}/r.py:check",) and policy.commands == ("opa eval",)


def checkov_bin() -> str:
    """The real checkov, in its own environment (`make checkov`; TFO_TEST_CHECKOV to use another)."""
    found = os.environ.get("TFO_TEST_CHECKOV") or str(Path(__file__).resolve().parents[2] / ".venv-checkov/bin/checkov")
    if not Path(found).is_file():
        pytest.fail(f"checkov not found at {found}: run `make checkov`")
    return found


PUBLIC_BUCKET = Path(__file__).resolve().parents[1] / "fixtures" / "plans" / "public-bucket.json"


def test_checkov_failed_checks_block_and_can_be_chosen_or_skipped(tmp_path: Path) -> None:
    text = PUBLIC_BUCKET.read_text()
    plan = json.loads(text)

    def scan(**kw: Any) -> tuple[Any, ...]:
        return custom_rules(text, plan, spec(), PolicyConfig(checkov=True, checkov_bin=checkov_bin(), **kw), tmp_path)

    everything = scan()
    assert len(everything) >= 3 and all(v.rule.startswith("checkov:CKV") for v in everything)
    assert all(v.resources == ("aws_s3_bucket.logs",) for v in everything)
    one = scan(checkov_checks=("CKV2_AWS_6",))
    assert [v.rule for v in one] == ["checkov:CKV2_AWS_6"] and "Public Access block" in one[0].message
    rest = scan(checkov_skip_checks=("CKV2_AWS_6",))
    assert "checkov:CKV2_AWS_6" not in {v.rule for v in rest} and len(rest) == len(everything) - 1
    # without a Prisma Cloud key checkov reports no severities: a failed check of unknown severity still blocks
    assert len(scan(checkov_severity="CRITICAL")) == len(everything)
    assert not (tmp_path / "tfo-plan.json").exists()
    [missing] = custom_rules(text, plan, spec(), PolicyConfig(checkov=True, checkov_bin="/nonexistent/checkov"),
                             tmp_path)
    assert missing.rule == "checkov" and "was not found" in missing.message
    clean = {"format_version": "0.2", "resource_changes": [], "planned_values": {"root_module": {}}}
    assert custom_rules(json.dumps(clean), clean, spec(), PolicyConfig(checkov=True, checkov_bin=checkov_bin()),
                        tmp_path) == ()


def test_checkov_settings_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    for bad, words in [('checkov_severity = "SEVERE"', "expected one of LOW"),
                       ('checkov_checks = ["CKV_AWS_20; rm -rf /"]', "ids like CKV_AWS_20")]:
        (tmp_path / "tfo.toml").write_text(f"[tfo.policy]\ncheckov = true\n{bad}\n")
        with pytest.raises(ConfigError, match=words):
            load_config(repo_root=tmp_path, environ={})


def test_the_repository_s_files_never_judge_it(tmp_path: Path) -> None:
    """Rules run in a directory of their own: a .checkov.yaml or conftest.toml in the module is not read."""
    workdir = tmp_path / "ws" / "terraform"
    workdir.mkdir(parents=True)
    (workdir / ".checkov.yaml").write_text("skip-check:\n  - CKV_AWS*\n  - CKV2_AWS*\n")
    text = PUBLIC_BUCKET.read_text()
    found = custom_rules(text, json.loads(text), spec(), PolicyConfig(checkov=True, checkov_bin=checkov_bin()),
                         workdir)
    assert len(found) >= 3
    script = tmp_path / "cwd.py"
    script.write_text("import os, sys\nprint(os.getcwd())\nsys.exit(1)\n")
    [v] = custom_rules("{}", {}, spec(), PolicyConfig(commands=(f"{sys.executable} {script}",)), workdir)
    assert str(workdir) not in v.message and "tfo-policy-" in v.message
    assert not list((tmp_path / "ws").glob("tfo-policy-*"))  # removed afterwards
    (tmp_path / "tfo.toml").write_text('[tfo.policy]\ncommands = ["scripts/check {plan}"]\n')
    with pytest.raises(ConfigError, match="never one relative to the repository"):
        load_config(repo_root=tmp_path, environ={})


def test_values_a_plan_marks_sensitive_are_collected_for_redaction() -> None:
    plan = {
        "resource_changes": [{"change": {"before": None, "after": {"name": "db", "password": "hunter2-generated",
                                                                   "tags": {"k": "v-secret-tag"}},
                                         "after_sensitive": {"password": True, "tags": {"k": True}}}}],
        "output_changes": {"pw": {"after": "out-secret-1", "after_sensitive": True},
                           "plain": {"after": "visible", "after_sensitive": False}},
        "prior_state": {"values": {"root_module": {"child_modules": [{"resources": [
            {"values": {"result": "Zq9-random-password", "id": "none"}, "sensitive_values": {"result": True}}]}]},
            "outputs": {"token": {"sensitive": True, "value": "state-output-token"}}}},
    }
    assert sensitive_values(plan) == {"hunter2-generated", "v-secret-tag", "out-secret-1", "Zq9-random-password",
                                      "state-output-token"}
