"""Shared test plumbing: a sample infra repo, the real tfo CLI as a process, the provider's world."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "infra-repo"
SECRET_TOKEN = "tok-Sens1tive-Var-9931"  # the module marks api_token sensitive
SECRET_PASSWORD = "Pa55-in-Tags-7781"  # a tag value named like a password: redacted by pattern


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terraform_binary() -> str | None:
    """Terraform from the demo extra (1.0.3) next to this interpreter, else whatever is on PATH."""
    beside = Path(sys.executable).parent / "terraform"
    if beside.exists():
        return str(beside)
    return shutil.which("terraform")


@dataclass
class Repo:
    root: Path
    world: Path
    env: dict[str, str]

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def config(self, extra: str = "", store: str = "") -> None:
        store = store or '[tfo.store]\nkind = "local"\npath = ".tfo/store"\n'
        self.write("tfo.toml", textwrap.dedent(f"""\
            [tfo]
            max_workers = 4
            lock_timeout_s = 60
            lease_ttl_s = 30
            {extra}
            """) + store)

    def tfo(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, env={**self.env, **(env or {})}, input=input)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})})

    def world_state(self) -> dict[str, Any]:
        """What really exists: resource name -> content, read from outside Terraform."""
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.world.glob("*.json"))}

    def journal(self) -> list[dict[str, Any]]:
        path = self.world / "journal.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1"}


def aws_client(kind: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(kind, endpoint_url=endpoint, region_name="us-east-1",  # type: ignore[call-overload]
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def configure_s3(repo: Repo, endpoint: str, extra: str = "", base_toml: str | None = None) -> tuple[str, str]:
    """A fresh versioned bucket and lock table on moto, and the repo's tfo.toml pointing at them.

    `endpoint` serves tfo and Terraform alike (moto itself, or a fault proxy in front of it).
    `base_toml`: the repository's own settings to keep (without a [tfo.store] table), instead of the
    sample's.
    """
    import secrets

    bucket = f"tfo-state-{secrets.token_hex(4)}"
    table = f"tfo-locks-{secrets.token_hex(4)}"
    s3 = aws_client("s3", endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    aws_client("dynamodb", endpoint).create_table(
        TableName=table, KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    repo.env.update(AWS_ENV)
    store = f"""
[tfo.store]
kind = "s3"
bucket = "{bucket}"
lock_table = "{table}"
region = "us-east-1"
endpoint_url = "{endpoint}"

[tfo.backend_config]
endpoint = "{endpoint}"
dynamodb_endpoint = "{endpoint}"
force_path_style = "true"
skip_credentials_validation = "true"
skip_metadata_api_check = "true"
skip_region_validation = "true"
"""
    if base_toml is None:
        repo.config(extra=extra, store=store)
    else:
        (repo.root / "tfo.toml").write_text(base_toml + store)
    return bucket, table


def make_repo(tmp: Path, mirror_config: Path, terraform: str, extra_env: dict[str, str] | None = None) -> Repo:
    root = tmp / "repo"
    shutil.copytree(EXAMPLE / "terraform", root / "terraform")
    world = tmp / "world"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CLI_CONFIG_FILE": str(mirror_config),
        "TFOTEST_WORLD": str(world),
        "TFO_TERRAFORM_ENV": "TFOTEST_WORLD",  # terraform sees an allowlist; the test provider needs this
        "TFO_TERRAFORM_BIN": terraform,
        "CI": "true",
        # tfo's cache of slow facts, per test rather than the user's (~/.cache/tfo)
        "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
        **(extra_env or {}),
    }
    env.pop("GITHUB_STEP_SUMMARY", None)
    repo = Repo(root, world, env)
    repo.config()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return repo


def write_sample(repo: Repo, *, failing: bool = False, delay: int = 0) -> None:
    """The sample: one file with two services (s3, kms), another with a third (iam) and a policy file.

    `failing` is the second apply: one bucket changed, one added, one removed, and one that fails after
    the others went through.
    """
    d = f", delay_seconds = {delay}" if delay else ""
    if not failing:
        buckets = f"""
            raw     = {{ versioning = true{d} }}
            curated = {{ versioning = true{d} }}
        """
    else:
        buckets = f"""
            raw     = {{ versioning = false{d} }}
            staging = {{ versioning = true{d} }}
            broken  = {{ fail = true, delay_seconds = 2 }}
        """
    repo.write("Accounts/acct-a/data-lake.tfvars", f"""\
        region = "us-west-2"
        tags = {{
          team        = "data"
          db_password = "{SECRET_PASSWORD}"
        }}
        api_token = "{SECRET_TOKEN}"
        s3_buckets = {{{buckets}}}
        kms_keys = {{
          lake = {{ rotation = true }}
        }}
        """)
    repo.write("Accounts/acct-b/platform.tfvars", """\
        iam_roles = {
          deployer = { policy_file = "policies/deployer.json" }
        }
        """)
    repo.write("Accounts/acct-b/policies/deployer.json", '{"Statement": [{"Effect": "Allow"}]}\n')


FIRST_APPLY_WORLD = {
    "s3.acct-a.us-west-2.data-lake.raw",
    "s3.acct-a.us-west-2.data-lake.curated",
    "kms.acct-a.us-west-2.data-lake.lake",
    "iam.acct-b.us-east-1.platform.deployer",
}
