"""The ops kit cannot run here (no GitHub, systemd or AWS): check it says what it must."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import hcl2
import yaml

from orchestrator.config import CeleryConfig, user_cache_dir

OPS = Path(__file__).resolve().parents[2] / "ops"


def test_workflow_plans_prs_and_applies_merges_with_oidc() -> None:
    wf = yaml.safe_load((OPS / "github/tfo.yml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the bare key `on` as true
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    assert wf["jobs"]["tfo"]["permissions"]["id-token"] == "write"
    steps = wf["jobs"]["tfo"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "tfo plan --git-diff" in runs and "tfo apply --git-diff" in runs
    assert any("configure-aws-credentials" in s.get("uses", "") and "role-to-assume" in s["with"] for s in steps)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    # the runner starts warm: the cached path is where tfo keeps its cache by default
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    default = user_cache_dir({"HOME": "/home/runner"}, Path("/repo"))
    assert Path(cache["with"]["path"].replace("~", "/home/runner")) == default


def test_systemd_units_stop_gracefully_signalling_only_the_main_process() -> None:
    for name in ("tfo-worker@.service", "tfo-flower.service", "tfo-webhook.service", "tfo-dashboard.service"):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read_string((OPS / "systemd" / name).read_text())
        service = unit["Service"]
        assert service["KillMode"] == "mixed", name
        assert service["ExecStart"].startswith("/opt/tfo/venv/bin/tfo "), name
        assert service["User"] == "tfo"
    worker = configparser.ConfigParser(strict=False, interpolation=None)
    worker.read_string((OPS / "systemd/tfo-worker@.service").read_text())
    assert int(worker["Service"]["TimeoutStopSec"]) > CeleryConfig().time_limit_s


def test_worker_policy_is_least_privilege() -> None:
    policy = json.loads((OPS / "iam/worker-policy.json").read_text())
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert not any(a.endswith("*") for a in actions), "no wildcard actions"
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    resources = [r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                           else s["Resource"])]
    assert "*" not in resources
    assert {"dynamodb:PutItem", "s3:PutObject", "kms:GenerateDataKey", "sts:AssumeRole"} <= set(actions)


def test_bootstrap_makes_a_safe_state_bucket_and_lock_table() -> None:
    tf = hcl2.loads((OPS / "bootstrap/main.tf").read_text())
    resources = {name.strip('"'): body for block in tf["resource"] for kind, named in block.items()
                 for name, body in named.items() if kind.strip('"').startswith(("aws_s3", "aws_dynamodb"))}
    types = {kind.strip('"') for block in tf["resource"] for kind in block}
    assert {"aws_s3_bucket_versioning", "aws_s3_bucket_server_side_encryption_configuration",
            "aws_s3_bucket_public_access_block", "aws_s3_bucket_lifecycle_configuration",
            "aws_dynamodb_table"} <= types
    text = (OPS / "bootstrap/main.tf").read_text()
    assert 'filter { prefix = "audit/" }' in text and "default = 90" in text
    assert 'hash_key     = "LockID"' in text
    assert resources
