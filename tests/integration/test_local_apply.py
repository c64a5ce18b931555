"""End to end on the embedded default: real terraform, the real Python provider, the local store."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FIRST_APPLY_WORLD, SECRET_PASSWORD, SECRET_TOKEN, Repo, write_sample

pytestmark = pytest.mark.integration


def test_discover_json_gives_three_sharded_deployments(repo: Repo) -> None:
    write_sample(repo)
    r = repo.tfo("discover", "--json")
    assert r.returncode == 0, r.stderr
    found = {d["id"]: d for d in json.loads(r.stdout)["deployments"]}
    assert set(found) == {"s3/acct-a/us-west-2/data-lake", "kms/acct-a/us-west-2/data-lake",
                          "iam/acct-b/us-east-1/platform"}
    assert found["s3/acct-a/us-west-2/data-lake"]["state_key"] == "s3/acct-a/us-west-2/data-lake/terraform.tfstate"
    assert found["kms/acct-a/us-west-2/data-lake"]["state_key"] == "kms/acct-a/us-west-2/data-lake/terraform.tfstate"
    assert found["iam/acct-b/us-east-1/platform"]["state_key"] == "iam/acct-b/us-east-1/platform/terraform.tfstate"
    # each shard holds its own service's variables plus the shared ones, never another service's
    assert "kms_keys" not in found["s3/acct-a/us-west-2/data-lake"]["variables"]
    assert "s3_buckets" not in found["kms/acct-a/us-west-2/data-lake"]["variables"]
    assert "tags" in found["kms/acct-a/us-west-2/data-lake"]["variables"]
    assert found["iam/acct-b/us-east-1/platform"]["referenced_files"] == ["Accounts/acct-b/policies/deployer.json"]


def _store(repo: Repo) -> Path:
    return repo.root / ".tfo" / "store"


def _decrypt(repo: Repo, key: str) -> bytes:
    from orchestrator.store.local import LocalStore

    return LocalStore(_store(repo)).get(key)


def test_apply_then_failing_apply_is_rolled_back(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    first = repo.tfo("apply", "--json-out", str(tmp_path / "first.json"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    after_first = repo.world_state()
    report = json.loads((tmp_path / "first.json").read_text())
    assert report["status"] == "succeeded"
    assert {d["status"] for d in report["deployments"]} == {"succeeded"}
    # state sharded per service, in the store's key layout
    for d in report["deployments"]:
        state = json.loads((_store(repo) / d["state_key"]).read_text())
        assert {r["type"] for r in state["resources"]} == {"tfotest_thing"}

    write_sample(repo, failing=True)
    md = tmp_path / "second.md"
    second = repo.tfo("apply", "--json-out", str(tmp_path / "second.json"), "--markdown-out", str(md))
    assert second.returncode == 1, second.stdout + second.stderr
    report = json.loads((tmp_path / "second.json").read_text())
    by_id = {d["id"]: d for d in report["deployments"]}
    s3 = by_id["s3/acct-a/us-west-2/data-lake"]
    assert s3["status"] == "rolled_back"
    assert s3["rollback"]["strategy"] == "reapply"
    assert s3["rollback"]["matches_target"] is True
    assert "failed on purpose" in s3["error"]
    # the partial apply really changed the world (created staging, deleted curated) before failing
    events = {(e["event"], e["name"].rsplit(".", 1)[-1]) for e in repo.journal()}
    assert ("done", "staging") in events and ("fail", "broken") in events
    # ... and the rollback converged the world back to exactly what the first apply made
    assert repo.world_state() == after_first

    # the pre-apply backup exists, encrypted at rest, and holds the first apply's state
    backup_key = s3["backup_key"]
    raw = (_store(repo) / backup_key).read_bytes()
    assert b"tfotest_thing" not in raw  # not plaintext
    backed_up = json.loads(_decrypt(repo, backup_key))
    assert {i["index_key"] for r in backed_up["resources"] for i in r["instances"]} == {"raw", "curated"}

    # the audit holds the full output, secrets included; console and Markdown hold none
    audit_text = _decrypt(repo, s3["audit_key"]).decode()
    assert "failed on purpose" in audit_text
    assert SECRET_PASSWORD in audit_text and SECRET_TOKEN in audit_text
    shown = second.stdout + second.stderr + md.read_text() + (tmp_path / "second.json").read_text()
    assert "failed on purpose" in shown
    assert SECRET_PASSWORD not in shown and SECRET_TOKEN not in shown
    assert "[REDACTED]" in shown
    run_audit = json.loads(_decrypt(repo, report["audit_key"]))
    assert run_audit["kind"] == "run" and run_audit["status"] == "failed"

    # backups list and runs show read the record back
    listed = repo.tfo("backups", "list", "s3/acct-a/us-west-2/data-lake", "--json")
    assert listed.returncode == 0, listed.stderr
    assert backup_key in {b["key"] for b in json.loads(listed.stdout)}
    shown_run = repo.tfo("runs", "show", report["run_id"])
    assert shown_run.returncode == 1 and '"rolled_back"' in shown_run.stdout
    assert SECRET_PASSWORD not in shown_run.stdout


def test_state_rollback_restores_backup_and_reports_untracked(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    write_sample(repo, failing=True)
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--rollback", "state", "--json-out", str(out), "Accounts/acct-a/data-lake.tfvars")
    assert r.returncode == 1, r.stdout + r.stderr
    s3 = {d["id"]: d for d in json.loads(out.read_text())["deployments"]}["s3/acct-a/us-west-2/data-lake"]
    assert s3["status"] == "rolled_back"
    assert s3["rollback"]["strategy"] == "state"
    # staging was created by the failed apply: the restored state no longer tracks it, and says so
    assert any("staging" in a for a in s3["rollback"]["untracked"])
    state = json.loads((_store(repo) / s3["state_key"]).read_text())
    assert {i["index_key"] for r in state["resources"] for i in r["instances"]} == {"raw", "curated"}
    # the world does not match (curated was deleted for real): the verify plan records that honestly
    assert s3["rollback"]["matches_target"] is False


def test_atomic_rolls_back_every_deployment(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    before = repo.world_state()
    write_sample(repo, failing=True)
    # also change the kms shard, which will succeed and must then be undone
    p = repo.root / "Accounts/acct-a/data-lake.tfvars"
    p.write_text(p.read_text().replace("lake = { rotation = true }", "lake = { rotation = false }"))
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--atomic", "--json-out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    by_id = {d["id"]: d for d in json.loads(out.read_text())["deployments"]}
    assert by_id["s3/acct-a/us-west-2/data-lake"]["status"] == "rolled_back"
    assert by_id["kms/acct-a/us-west-2/data-lake"]["status"] == "rolled_back"
    assert by_id["iam/acct-b/us-east-1/platform"]["status"] == "no_changes"
    assert repo.world_state() == before


def _applied_then_a_protected_destroy(repo: Repo) -> tuple[dict[str, Any], Path]:
    """The sample applied, destroys of its resources protected, and a change that removes a bucket."""
    write_sample(repo)
    assert repo.tfo("apply").returncode == 0
    before = repo.world_state()
    repo.config('\n[tfo.policy]\nprotect_destroy = ["tfotest_*"]\n')
    lake = repo.root / "Accounts/acct-a/data-lake.tfvars"
    lake.write_text("\n".join(ln for ln in lake.read_text().splitlines() if "curated" not in ln) + "\n")
    return before, lake


def test_atomic_applies_nothing_when_a_plan_is_refused_by_policy(repo: Repo, tmp_path: Path) -> None:
    """Every deployment is planned and judged before any applies: a blocked one leaves the others untouched."""
    before, lake = _applied_then_a_protected_destroy(repo)
    lake.write_text(lake.read_text().replace("lake = { rotation = true }", "lake = { rotation = false }"))
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--atomic", "--json-out", str(out))
    assert r.returncode == 4, r.stdout + r.stderr
    assert "nothing applied" in r.stderr
    by_service = {d["service"]: d["status"] for d in json.loads(out.read_text())["deployments"]}
    assert by_service == {"s3": "blocked", "kms": "succeeded", "iam": "no_changes"}  # kms planned, not applied
    assert repo.world_state() == before  # the kms change, which passed, was not applied either
    assert list((_store(repo) / "locks").glob("*.lease")) == []
    # with the waiver the same atomic apply goes through, from the plans it made
    waived = repo.tfo("apply", "--atomic", "--allow-destroy", "--json-out", str(out))
    assert waived.returncode == 0, waived.stdout + waived.stderr
    report = json.loads(out.read_text())
    assert {d["status"] for d in report["deployments"] if d["service"] != "iam"} == {"succeeded"}
    assert "plans of run" in waived.stderr
    assert "s3.acct-a.us-west-2.data-lake.curated" not in repo.world_state()
    assert repo.world_state()["kms.acct-a.us-west-2.data-lake.lake"] != before["kms.acct-a.us-west-2.data-lake.lake"]


def test_first_apply_failing_destroys_what_it_created(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo, failing=True)
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out), "Accounts/acct-a/data-lake.tfvars")
    assert r.returncode == 1
    s3 = {d["id"]: d for d in json.loads(out.read_text())["deployments"]}["s3/acct-a/us-west-2/data-lake"]
    assert s3["status"] == "rolled_back" and s3["rollback"]["target"] == "destroy"
    assert not any(n.startswith("s3.") for n in repo.world_state())
    assert any(n.startswith("kms.") for n in repo.world_state())


def test_plan_reports_changes_and_exits_zero(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    out = tmp_path / "plan.json"
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    r = repo.tfo("plan", "--json-out", str(out), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 0, r.stderr
    plans = {d["id"]: d["plan"] for d in json.loads(out.read_text())["deployments"]}
    assert plans["s3/acct-a/us-west-2/data-lake"] == {"add": 2, "change": 0, "destroy": 0}
    assert repo.world_state() == {}  # plan changes nothing
    # in GitHub Actions the Markdown report is appended to the step summary, redacted
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "## tfo plan: succeeded" in text
    assert "| `s3/acct-a/us-west-2/data-lake` | ✅ succeeded | 2 | 0 | 0 |" in text
    assert SECRET_PASSWORD not in text and SECRET_TOKEN not in text


def test_manual_rollback_restores_a_chosen_backup_and_audit_show_redacts(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    assert repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars").returncode == 0
    p = repo.root / "Accounts/acct-a/data-lake.tfvars"
    p.write_text(p.read_text().replace("curated = { versioning = true }", ""))
    out = tmp_path / "r.json"
    assert repo.tfo("apply", "--json-out", str(out), "Accounts/acct-a/data-lake.tfvars").returncode == 0
    report = json.loads(out.read_text())
    s3 = {d["id"]: d for d in report["deployments"]}["s3/acct-a/us-west-2/data-lake"]
    state_path = _store(repo) / s3["state_key"]
    assert "curated" not in state_path.read_text()

    r = repo.tfo("rollback", "s3/acct-a/us-west-2/data-lake", "--to", s3["backup_key"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "curated" in state_path.read_text()  # the state from before the second apply
    assert "saved as backups/" in r.stdout  # and the state it replaced was backed up first
    listed = json.loads(repo.tfo("backups", "list", "s3/acct-a/us-west-2/data-lake", "--json").stdout)
    assert len(listed) == 3
    assert not list((_store(repo) / "locks").glob("*.lease"))

    bad = repo.tfo("rollback", "s3/acct-a/us-west-2/data-lake", "--to", "backups/not-one-of-ours")
    assert bad.returncode == 2 and "not a backup" in bad.stderr

    shown = repo.tfo("audit", "show", report["run_id"])
    assert shown.returncode == 0, shown.stderr
    records = json.loads(shown.stdout)
    kinds = {r["record"]["kind"] for r in records}
    assert kinds == {"run", "deploy"}
    assert all(r["record"]["terraform_version"] for r in records)
    assert all(r["encrypted"] == "fernet" for r in records)
    assert SECRET_TOKEN not in shown.stdout and SECRET_PASSWORD not in shown.stdout
    full = repo.tfo("audit", "show", "--unredacted", report["run_id"])
    assert SECRET_TOKEN in full.stdout


def test_policy_blocks_a_protected_destroy_and_too_many_changes_until_waived(repo: Repo, tmp_path: Path) -> None:
    before, lake = _applied_then_a_protected_destroy(repo)

    plan = repo.tfo("plan", "--json-out", str(tmp_path / "plan.json"))
    assert plan.returncode == 4, plan.stdout + plan.stderr  # the reviewer sees the verdict before any apply
    blocked = repo.tfo("apply", "--json-out", str(tmp_path / "blocked.json"))
    assert blocked.returncode == 4, blocked.stdout + blocked.stderr
    assert "policy: protect_destroy" in blocked.stdout
    report = json.loads((tmp_path / "blocked.json").read_text())
    assert report["status"] == "blocked"
    s3 = next(d for d in report["deployments"] if d["service"] == "s3")
    assert s3["status"] == "blocked" and s3["backup_key"] is None  # refused before the backup and the apply
    assert s3["policy"][0]["rule"] == "protect_destroy"
    assert s3["policy"][0]["resources"] == ['tfotest_thing.bucket["curated"]']
    assert {d["status"] for d in report["deployments"] if d["service"] != "s3"} == {"no_changes"}
    assert repo.world_state() == before
    assert list((_store(repo) / "locks").glob("*.lease")) == []
    # the audit keeps what was judged, not the plan document (it holds every value in the clear)
    records = json.loads(repo.tfo("audit", "show", report["run_id"], "--unredacted").stdout)
    judged = [st for r in records for st in r["record"].get("steps", []) if st["step"] == "policy"]
    assert judged and all("prior_state" not in st["output"] for st in judged)
    addresses = {c["address"] for st in judged for c in json.loads(st["output"])["resource_changes"]}
    assert 'tfotest_thing.bucket["curated"]' in addresses
    shown = repo.tfo("runs", "show", report["run_id"])
    assert shown.returncode == 4 and '"blocked"' in shown.stdout

    waived = repo.tfo("apply", "--allow-destroy", "--json-out", str(tmp_path / "waived.json"))
    assert waived.returncode == 0, waived.stdout + waived.stderr
    assert "s3.acct-a.us-west-2.data-lake.curated" not in repo.world_state()
    run_id = json.loads((tmp_path / "waived.json").read_text())["run_id"]
    audit = json.loads(repo.tfo("audit", "show", run_id).stdout)
    assert all(r["record"]["allow_destroy"] is True for r in audit)  # the waiver is on record

    repo.config('\n[tfo.policy]\nmax_changes = 1\n')
    lake.write_text(lake.read_text().replace("raw ", "one = { versioning = true }\n  two = {}\n  raw "))
    many = repo.tfo("apply")
    assert many.returncode == 4 and "max_changes" in many.stdout, many.stdout + many.stderr
    approved = repo.tfo("apply", "--approved-by", "alice")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert {"s3.acct-a.us-west-2.data-lake.one", "s3.acct-a.us-west-2.data-lake.two"} <= set(repo.world_state())


def test_a_saved_plan_is_applied_exactly_once_and_a_stale_one_is_refused(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    plan = repo.tfo("plan", "--json-out", str(tmp_path / "plan.json"))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    planned = json.loads((tmp_path / "plan.json").read_text())["run_id"]
    saved = [p for p in (_store(repo) / "runs" / planned / "plans").iterdir() if ".tfo-meta" not in p.name]
    assert sorted(p.suffix for p in saved) == [".json"] * 3 + [".tfplan"] * 3  # 3 deployments
    assert not any(p.read_bytes().startswith(b"PK") for p in saved)  # plan files (zip) only encrypted at rest
    # The reviewed plan is applied, not the working tree: the tfvars changed again since.
    lake = repo.root / "Accounts/acct-a/data-lake.tfvars"
    lake.write_text(lake.read_text().replace("raw ", "extra = {}\n  raw "))

    applied = repo.tfo("apply", "--from-plan", planned, "--json-out", str(tmp_path / "applied.json"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
    report = json.loads((tmp_path / "applied.json").read_text())
    assert {d["status"] for d in report["deployments"]} == {"succeeded"}
    assert all(d["backup_key"] for d in report["deployments"])  # the same backup before apply as ever
    audit = json.loads(repo.tfo("audit", "show", report["run_id"]).stdout)
    assert {r["record"]["from_plan"] for r in audit} == {planned}

    again = repo.tfo("apply", "--from-plan", planned, "--json-out", str(tmp_path / "again.json"))
    assert again.returncode == 1, again.stdout + again.stderr
    report = json.loads((tmp_path / "again.json").read_text())
    assert {d["status"] for d in report["deployments"]} == {"stale"}
    assert all("applied already" in d["error"] and "plan again" in d["error"] for d in report["deployments"])
    assert list((_store(repo) / "locks").glob("*.lease")) == []

    # A plan the state moved away from: planned, then another apply got there first.
    second = repo.tfo("plan", "--json-out", str(tmp_path / "second.json"))
    assert second.returncode == 0, second.stdout + second.stderr
    second_id = json.loads((tmp_path / "second.json").read_text())["run_id"]
    assert repo.tfo("apply", "Accounts/acct-a/data-lake.tfvars").returncode == 0
    world = repo.world_state()
    moved = repo.tfo("apply", "--from-plan", second_id, "--json-out", str(tmp_path / "moved.json"))
    assert moved.returncode == 1, moved.stdout + moved.stderr
    by_service = {d["service"]: d for d in json.loads((tmp_path / "moved.json").read_text())["deployments"]}
    assert by_service["s3"]["status"] == "stale" and "the state moved since the plan" in by_service["s3"]["error"]
    assert by_service["s3"]["backup_key"] is None
    assert by_service["iam"]["status"] == "no_changes"  # its state did not move, and it planned nothing
    assert repo.world_state() == world

    # Too old, and selectors narrow a saved run down.
    repo.config('\n[tfo.policy]\nplan_max_age = "1s"\n')
    lake.write_text(lake.read_text().replace("extra = {}", "later = {}"))
    third = repo.tfo("plan", "--json-out", str(tmp_path / "third.json"))
    assert third.returncode == 0, third.stdout + third.stderr
    third_id = json.loads((tmp_path / "third.json").read_text())["run_id"]
    time.sleep(1.5)
    old = repo.tfo("apply", "--from-plan", third_id, "Accounts/acct-a/data-lake.tfvars",
                   "--json-out", str(tmp_path / "old.json"))
    assert old.returncode == 1, old.stdout + old.stderr
    deployments = json.loads((tmp_path / "old.json").read_text())["deployments"]
    assert {d["service"] for d in deployments} == {"s3", "kms"}  # only that file's
    assert all(d["status"] == "stale" and "plan_max_age is 1s" in d["error"] for d in deployments)


def test_from_plan_refuses_what_is_not_a_plan_of_it(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    bogus = repo.tfo("apply", "--from-plan", "../../etc")
    assert bogus.returncode == 2 and "not a run id" in bogus.stderr, bogus.stderr
    missing = repo.tfo("apply", "--from-plan", "20260101T000000Z-abcdef")
    assert missing.returncode == 2 and "no such run" in missing.stderr, missing.stderr
    assert repo.tfo("apply", "--json-out", str(tmp_path / "a.json"), "Accounts/acct-b/platform.tfvars").returncode == 0
    apply_id = json.loads((tmp_path / "a.json").read_text())["run_id"]
    not_plan = repo.tfo("apply", "--from-plan", apply_id)
    assert not_plan.returncode == 2 and "not a plan" in not_plan.stderr, not_plan.stderr
    assert repo.tfo("plan", "--json-out", str(tmp_path / "p.json"), "Accounts/acct-b/platform.tfvars").returncode == 0
    plan_id = json.loads((tmp_path / "p.json").read_text())["run_id"]
    other = repo.tfo("apply", "--from-plan", plan_id, "Accounts/acct-a/data-lake.tfvars")
    assert other.returncode == 2 and "not planned by that run" in other.stderr, other.stderr


def test_custom_python_and_command_rules_judge_real_plans(repo: Repo, tmp_path: Path) -> None:
    rules = tmp_path / "rules.py"
    rules.write_text(
        "def no_forbidden(plan, deployment):\n"
        "    for rc in plan['resource_changes']:\n"
        "        if rc['change']['actions'] == ['create'] and rc['index'] == 'forbidden':\n"
        "            yield {'message': deployment['id'] + ': forbidden is not a bucket name',\n"
        "                   'resources': [rc['address']]}\n")
    check = tmp_path / "check.py"  # a stand-in for conftest: the plan document's path, the exit code the verdict
    check.write_text(
        "import json, sys\n"
        "plan = json.load(open(sys.argv[-1]))\n"
        "n = sum(1 for rc in plan['resource_changes'] if rc['change']['actions'] != ['no-op'])\n"
        "print(f'{n} changes; the limit is 2')\n"
        "sys.exit(1 if n > 2 else 0)\n")
    repo.config(f'\n[tfo.policy]\npython = ["{rules}:no_forbidden"]\n'
                f'commands = ["{sys.executable} {check} {{plan}}"]\n')
    write_sample(repo)
    lake = repo.root / "Accounts/acct-a/data-lake.tfvars"
    lake.write_text(lake.read_text().replace("raw ", "forbidden = {}\n  raw "))
    out = tmp_path / "r.json"
    r = repo.tfo("apply", "--json-out", str(out))
    assert r.returncode == 4, r.stdout + r.stderr
    by_service = {d["service"]: d for d in json.loads(out.read_text())["deployments"]}
    s3 = by_service["s3"]
    assert s3["status"] == "blocked"
    assert sorted(v["rule"] for v in s3["policy"]) == [f"command:{Path(sys.executable).name}", "python:no_forbidden"]
    python_rule = next(v for v in s3["policy"] if v["rule"] == "python:no_forbidden")
    assert python_rule["resources"] == ['tfotest_thing.bucket["forbidden"]']
    command_rule = next(v for v in s3["policy"] if v["rule"].startswith("command:"))
    assert "3 changes; the limit is 2" in command_rule["message"]
    assert by_service["kms"]["status"] == "succeeded" and by_service["iam"]["status"] == "succeeded"
    assert "s3.acct-a.us-west-2.data-lake.raw" not in repo.world_state()
    lake.write_text(lake.read_text().replace("forbidden = {}\n  ", ""))
    # and Checkov on the same real plans: none of its checks is about this provider's resources
    checkov = Path(__file__).resolve().parents[2] / ".venv-checkov/bin/checkov"
    assert checkov.is_file(), "run `make checkov`"
    toml = repo.root / "tfo.toml"
    rules = toml.read_text()
    toml.write_text(rules.replace("[tfo.policy]\n", '[tfo.policy]\ncheckov = true\ncheckov_bin = "/nowhere/checkov"\n'))
    absent = repo.tfo("apply")
    assert absent.returncode == 4 and "checkov ('/nowhere/checkov') was not found" in absent.stdout, absent.stdout
    toml.write_text(rules.replace("[tfo.policy]\n", f'[tfo.policy]\ncheckov = true\ncheckov_bin = "{checkov}"\n'))
    ok = repo.tfo("apply")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert set(repo.world_state()) == FIRST_APPLY_WORLD
