"""A corpus of secrets through plan, apply, failure and rollback on real workers: none may leak.

Every place a person or a tool reads is searched for every secret: the console of each command, the
Markdown and JSON reports, $GITHUB_STEP_SUMMARY, the worker logs, every value in Redis (task results,
chord state, queues), the store's plain-text run records (summaries, cards, progress), whatever the
workspaces keep, and every page and API answer of the dashboard. As a control,
`tfo audit show --unredacted` must show them: the secrets really went through the system.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster import REDIS_PASSWORD, RedisServer, Workers
from tests.dashboard_harness import Dashboard
from tests.helpers import SECRET_PASSWORD, SECRET_TOKEN, Repo

pytestmark = pytest.mark.integration

# Each value is unique, so any occurrence anywhere is a leak of exactly that secret.
CORPUS = {
    "sensitive variable (api_token)": SECRET_TOKEN,
    "password-named tag": SECRET_PASSWORD,
    "AWS access key id": "AKIAQ7XK3M9P2LZT8WNB",
    "AWS secret access key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9pLmK2vN",
    "GitHub token": "ghp_Zx81mQa0LpWr5TyUi3OkNb7VcXe2DfGh4JsA",
    "Slack token": "xoxb-8812-4471-QwErTyUiOpAsDf",
    "password in a URL": "Url-Pa55-4412",
    "bearer token": "eyJhbGciOiJIUzI1NiJ9.s3cr3tPayload9",
    "private key body": "MIIEowIBAAKCAQEA7v3Xq9LeakMe0ifYouCanReadThis",
    "client secret": "cs-7Hh2-Kk90-Secret",
}
# tfo's own secrets, which no tfvars file holds: never shown anywhere, not even in the audit.
OWN_SECRETS = {"Redis password (broker URL)": REDIS_PASSWORD}


def _tfvars(failing: bool) -> str:
    broken = 'broken = { fail = true }' if failing else ""
    return f"""\
region = "us-west-2"
api_token = "{SECRET_TOKEN}"
tags = {{
  team          = "data"
  db_password   = "{SECRET_PASSWORD}"
  deploy_key_id = "{CORPUS['AWS access key id']}"
  signing       = "{CORPUS['AWS secret access key']}"
  ci            = "{CORPUS['GitHub token']}"
  chat          = "{CORPUS['Slack token']}"
  dsn           = "postgres://app:{CORPUS['password in a URL']}@db.internal:5432/app"
  header        = "Bearer {CORPUS['bearer token']}"
  tls           = "-----BEGIN RSA PRIVATE KEY-----\\n{CORPUS['private key body']}\\n-----END RSA PRIVATE KEY-----"
  client_secret = "{CORPUS['client secret']}"
}}
s3_buckets = {{
  raw = {{ versioning = {str(not failing).lower()} }}
  {broken}
}}
kms_keys = {{
  lake = {{ rotation = true }}
}}
"""


@pytest.fixture
def cluster(celery_repo: tuple[Repo, Workers]) -> tuple[Repo, Workers]:
    repo, workers = celery_repo
    workers.start("w1")
    workers.start("w2")
    return repo, workers


def _redis_values(url: str) -> str:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(url)
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            value: object = client.get(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        else:
            value = b""
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


def test_no_secret_leaks_through_plan_apply_failure_and_rollback(cluster: tuple[Repo, Workers],
                                                                 redis: RedisServer, tmp_path: Path) -> None:
    repo, workers = cluster
    summary = tmp_path / "step-summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    seen: dict[str, str] = {}

    def run(label: str, *args: str, expect: int) -> None:
        r = repo.tfo(*args, env=env, timeout=300)
        assert r.returncode == expect, (label, r.stdout, r.stderr)
        seen[f"{label}: console"] = r.stdout + r.stderr

    def reports(label: str) -> list[str]:
        md, js = tmp_path / f"{label}.md", tmp_path / f"{label}.json"
        return ["--markdown-out", str(md), "--json-out", str(js)]

    repo.write("Accounts/acct-a/data-lake.tfvars", _tfvars(failing=False))
    run("apply", "apply", *reports("apply"), expect=0)
    repo.write("Accounts/acct-a/data-lake.tfvars", _tfvars(failing=True))
    run("plan", "plan", *reports("plan"), expect=0)
    run("failure+rollback", "apply", *reports("failure"), expect=1)
    failed = json.loads((tmp_path / "failure.json").read_text())
    s3 = {d["id"]: d for d in failed["deployments"]}["s3/acct-a/us-west-2/data-lake"]
    assert s3["status"] == "rolled_back", s3  # the failure and rollback paths really ran
    assert "failed on purpose" in s3["error"]  # the provider's error, which quotes the tags, is shown
    run("runs show", "runs", "show", failed["run_id"], expect=1)
    run("audit show", "audit", "show", failed["run_id"], expect=0)

    for f in tmp_path.glob("*.md"):
        seen[f"Markdown {f.name}"] = f.read_text()
    for f in tmp_path.glob("*.json"):
        seen[f"JSON report {f.name}"] = f.read_text()
    seen["$GITHUB_STEP_SUMMARY"] = summary.read_text()
    for name in ("w1", "w2"):
        seen[f"worker log {name}"] = workers.log(name)
    seen["Redis (task results, chords, queues)"] = _redis_values(redis.url)
    store = repo.root / ".tfo" / "store" / "runs"
    for f in store.glob("*.json"):
        seen[f"store run summary {f.name}"] = f.read_text()
    for f in store.glob("*/results.json"):
        seen[f"store run results {f.parent.name}"] = f.read_text()
    for f in [*store.glob("*/card.json"), *store.glob("*/progress/*.json")]:
        seen[f"store live record {f.relative_to(store)}"] = f.read_text()
    assert any("progress/" in k for k in seen), "no progress records were written"
    # Everything the dashboard serves about these runs: its pages' data, every run, deployment, metric.
    dash = Dashboard(repo, tmp_path / "dashboard.log")
    try:
        runs = json.loads(dash.get("/api/runs")[1])["runs"]
        assert failed["run_id"] in {r["run_id"] for r in runs}
        paths = ["/", "/api/overview", "/api/runs", "/metrics", "/healthz"]
        paths += [f"/api/runs/{r['run_id']}" for r in runs]
        paths += [f"/api/deployments/{d['id']}" for d in failed["deployments"]]
        for path in paths:
            code, body, _ = dash.get(path)
            assert code == 200, (path, code, body[:300])
            seen[f"dashboard {path}"] = body.decode()
        assert "failed on purpose" in seen[f"dashboard /api/runs/{failed['run_id']}"]  # the error is there
    finally:
        dash.stop()
    for f in (repo.root / ".tfo" / "work").rglob("*.log"):
        seen[f"workspace log {f}"] = f.read_text(errors="replace")

    leaks = [(where, what) for where, text in seen.items()
             for what, secret in (CORPUS | OWN_SECRETS).items() if secret in text]
    assert leaks == [], leaks
    # the reports are not empty shells: they carry the plan and the error
    assert "tfotest_thing.bucket" in (tmp_path / "plan.md").read_text()
    assert "[REDACTED]" in seen["failure+rollback: console"] + (tmp_path / "failure.md").read_text()

    # Control: the encrypted audit holds the full output, secrets included.
    control = repo.tfo("audit", "show", failed["run_id"], "--unredacted")
    assert control.returncode == 0, control.stderr
    shown = {what for what, secret in CORPUS.items() if secret in control.stdout}
    # api_token is masked by Terraform itself (sensitive = true) in its own output, so it may not appear.
    assert set(CORPUS) - {"sensitive variable (api_token)"} <= shown, set(CORPUS) - shown
    assert REDIS_PASSWORD not in control.stdout
