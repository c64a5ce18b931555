"""docker-compose.yml cannot run here (no Docker engine): check its structure against the package."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from cli.main import cli
from orchestrator.config import CeleryConfig, StoreConfig, TfoConfig, WebhookConfig, load_config
from orchestrator.models import DriftConfig

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_profiles() -> None:
    services = compose()["services"]
    assert {"redis", "worker", "flower", "beat", "s3"} <= set(services)
    assert services["s3"]["profiles"] == ["dev"]
    for name in ("worker", "flower", "beat"):
        assert "profiles" not in services[name]


def test_worker_is_scalable_and_stops_gracefully() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    grace = int(str(worker["stop_grace_period"]).rstrip("s"))
    assert grace > CeleryConfig().time_limit_s


def test_redis_has_password_aof_and_noeviction() -> None:
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--requirepass" in command
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_flower_requires_basic_auth() -> None:
    flower = compose()["services"]["flower"]
    assert flower["command"][0] == "flower"
    assert "TFO_FLOWER_BASIC_AUTH" in flower["environment"]
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_the_dashboard_requires_basic_auth_and_reads_the_workers_store() -> None:
    services = compose()["services"]
    dashboard = services["dashboard"]
    assert dashboard["command"][0] == "dashboard" and "TFO_DASHBOARD_BASIC_AUTH" in dashboard["environment"]
    assert all(p.startswith("127.0.0.1:") for p in dashboard["ports"])
    assert dashboard["environment"]["TFO_STORE_BUCKET"] == services["worker"]["environment"]["TFO_STORE_BUCKET"]


def test_commands_exist_in_the_cli() -> None:
    services = compose()["services"]
    for name in ("worker", "flower", "dashboard"):
        assert services[name]["command"][0] in cli.commands, name
    beat = services["beat"]
    assert "entrypoint" not in beat  # the image's: tfo
    assert beat["command"][:3] == ["-C", "/repo", "beat"] and "beat" in cli.commands
    assert any(v.endswith(":/repo") for v in beat["volumes"])  # the repository it drifts
    # every beat container keeps its own schedule file, outside the shared volume
    schedule_file = beat["command"][beat["command"].index("--schedule-file") + 1]
    assert not any(schedule_file.startswith(v.rsplit(":", 1)[1]) for v in beat["volumes"])
    schedule = re.fullmatch(r"\$\{TFO_DRIFT_SCHEDULE:-(.+)\}", beat["environment"]["TFO_DRIFT_SCHEDULE"])
    assert schedule is not None
    from orchestrator import schedule as cron

    assert cron.parse(schedule.group(1)).hours == frozenset(range(0, 24, 6))


def test_every_tfo_variable_is_one_the_config_reads(tmp_path: Path) -> None:
    env_names: set[str] = set()
    for service in compose()["services"].values():
        env = service.get("environment") or {}
        env_names |= {k for k in env if k.startswith("TFO_")}
    assert env_names, "the services are configured through TFO_* variables"
    known = {f"TFO_{f.name.upper()}" for f in fields(TfoConfig)}
    known |= {f"TFO_STORE_{f.name.upper()}" for f in fields(StoreConfig)}
    known |= {f"TFO_CELERY_{f.name.upper()}" for f in fields(CeleryConfig)}
    known |= {f"TFO_DRIFT_{f.name.upper()}" for f in fields(DriftConfig)}
    known |= {f"TFO_WEBHOOK_{f.name.upper()}" for f in fields(WebhookConfig)}
    known.add("TFO_ALERTS_SLACK_WEBHOOK_URL")
    known.add("TFO_FLOWER_BASIC_AUTH")  # read by `tfo flower`
    known.add("TFO_DASHBOARD_BASIC_AUTH")  # read by `tfo dashboard`
    assert env_names <= known, env_names - known
    # and they really change the config
    env = {"TFO_STORE_KIND": "s3", "TFO_STORE_BUCKET": "b", "TFO_CELERY_BROKER_URL": "redis://r/0",
           "TFO_WORKDIR": "/w", "TFO_PLUGIN_CACHE_DIR": "/c", "TFO_DRIFT_SCHEDULE": "0 */6 * * *",
           "TFO_ALERTS_SLACK_WEBHOOK_URL": "https://hooks.example/x"}
    cfg = load_config(repo_root=tmp_path, environ=env)
    assert (cfg.store.kind, cfg.store.bucket, cfg.celery.broker_url, cfg.workdir, cfg.plugin_cache_dir) == (
        "s3", "b", "redis://r/0", "/w", "/c")
    assert (cfg.drift.schedule, cfg.alerts.slack_webhook_url) == ("0 */6 * * *", "https://hooks.example/x")


def test_dockerfile_installs_the_package_and_runs_tfo() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in text  # built with the compiled reader
    assert re.search(r"COPY pyproject\.toml setup\.py", text) and "gcc" in text
    assert re.search(r"pip install .*'tfo-\*\.whl'\)\[flower\]\"", text)
    assert 'ENTRYPOINT ["tfo"]' in text
    assert "USER 10001" in text and "useradd --create-home --uid 10001 tfo" in text  # never root
