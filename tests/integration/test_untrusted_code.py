"""A plan runs the repository's code: a module that reads terraform's own environment (plainly and in
base64, which redaction cannot see) must find none of tfo's secrets, through the CLI; the webhook ->
worker path is in test_webhook.py."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.helpers import Repo, write_sample

pytestmark = pytest.mark.integration

PROBE_OUTPUTS = """
output "probe_environ" {
  value = file("/proc/self/environ")
}

output "probe_environ_b64" {
  value = filebase64("/proc/self/environ")
}
"""

# tfo's own secrets, as an operator would have them in the environment of `tfo` (CI) or a worker
TFO_SECRETS = {
    "GITHUB_TOKEN": "ghp_Probe0SecretToken0123456789abcdefABCD",
    "TFO_WEBHOOK_SECRET": "probe-webhook-secret-7781",
    "TFO_GITHUB_APP_KEY": "-----BEGIN RSA PRIVATE KEY-----probe-app-key-5521",
    "TFO_CELERY_BROKER_URL": "redis://:probe-broker-pass-3390@127.0.0.1:1/0",
    "TFO_FLOWER_BASIC_AUTH": "ops:probe-flower-pass-6612",
}
# and what a CI runner or host has besides, which terraform has no need for
UNRELATED = {"DATABASE_URL": "postgres://app:probe-db-pass-1204@db/app", "SLACK_WEBHOOK_URL": "https://probe-slack"}


def add_probe(module_dir: Path) -> None:
    main = module_dir / "main.tf"
    main.write_text(main.read_text() + PROBE_OUTPUTS)


def probe_environ(text: str) -> dict[str, str]:
    """The environment terraform saw, decoded from the base64 output in a plan's text (or its audit)."""
    match = re.search(r'probe_environ_b64\s*=\s*\\?"([A-Za-z0-9+/=]+)', text)  # in JSON, the quote is escaped
    assert match, text[text.find("probe_environ_b64") - 300:][:900]
    pairs = base64.b64decode(match.group(1)).split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_a_plan_cannot_read_tfo_secrets_from_its_environment(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    add_probe(repo.root / "terraform")
    key = Fernet.generate_key().decode()
    env = {**TFO_SECRETS, **UNRELATED, "TFO_STORE_ENCRYPTION_KEY": key}
    secrets = {**TFO_SECRETS, "TFO_STORE_ENCRYPTION_KEY": key}
    md, js = tmp_path / "plan.md", tmp_path / "plan.json"
    r = repo.tfo("plan", "--executor", "local", "--markdown-out", str(md), "--json-out", str(js), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = json.loads(js.read_text())["run_id"]
    audit = repo.tfo("audit", "show", run_id, "--unredacted", env=env)
    assert audit.returncode == 0, audit.stderr

    seen = probe_environ(audit.stdout)
    assert seen["TFOTEST_WORLD"] == str(repo.world)  # the probe ran, and what terraform needs is there
    assert seen["TF_IN_AUTOMATION"] == "1" and "PATH" in seen and "TF_CLI_CONFIG_FILE" in seen
    assert set(seen) & (set(secrets) | set(UNRELATED)) == set()
    everything = "\n".join([r.stdout, r.stderr, md.read_text(), js.read_text(), audit.stdout])
    leaked = [name for name, value in {**secrets, **UNRELATED}.items()
              if value in everything or base64.b64encode(value.encode()).decode()[:-4] in everything]
    assert leaked == []
    assert "probe_environ" in md.read_text()  # the report does show the outputs that were read
