from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.models import DeploymentSpec
from workers.app import DEFAULT_QUEUE, celery_settings, queue_for


def spec() -> DeploymentSpec:
    return DeploymentSpec("s3/acct-a/eu-west-1/p", "s3", "acct-a", "eu-west-1", "p",
                          "s3/acct-a/eu-west-1/p/terraform.tfstate", "x.tfvars", "terraform", {})


@pytest.mark.parametrize("route_by, queue", [("", DEFAULT_QUEUE), ("account", "tfo.acct-a"),
                                              ("region", "tfo.eu-west-1")])
def test_routing_by_account_or_region(tmp_path: Path, route_by: str, queue: str) -> None:
    cfg = load_config(repo_root=tmp_path, environ={"TFO_CELERY_ROUTE_BY": route_by})
    assert queue_for(cfg, spec()) == queue


def test_long_task_safety_settings(tmp_path: Path) -> None:
    cfg = load_config(repo_root=tmp_path, environ={})
    s = celery_settings(cfg)
    assert s["accept_content"] == ["json"] and s["task_serializer"] == "json"
    assert s["task_acks_late"] and s["task_reject_on_worker_lost"]
    assert s["worker_prefetch_multiplier"] == 1
    assert s["task_soft_time_limit"] < s["task_time_limit"] < s["broker_transport_options"]["visibility_timeout"]
    assert s["result_backend_transport_options"]["visibility_timeout"] == s["broker_transport_options"][
        "visibility_timeout"]
    assert s["worker_cancel_long_running_tasks_on_connection_loss"]
    assert s["worker_send_task_events"] and s["task_send_sent_event"]
    assert s["result_expires"].days >= 1


def test_time_limits_must_be_ordered(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="visibility_timeout_s"):
        load_config(repo_root=tmp_path, environ={"TFO_CELERY_VISIBILITY_TIMEOUT_S": "60"})
