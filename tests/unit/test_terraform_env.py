"""What terraform may see of tfo's environment (a plan runs the repository's code)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import procs
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.terraform import TerraformClient, TerraformCommand
from orchestrator.terraform_env import terraform_environment

ENVIRON = {
    "PATH": "/usr/bin", "HOME": "/home/tfo", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
    "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "SSL_CERT_FILE": "/etc/ssl/ca.pem",
    "TF_VAR_region": "us-east-1", "TF_CLI_CONFIG_FILE": "/etc/tfo/terraformrc", "TF_PLUGIN_CACHE_DIR": "/var/cache",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret", "AWS_REGION": "us-east-1",
    "ARM_CLIENT_SECRET": "arm-secret", "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp.json",
    # tfo's own: never for terraform
    "GITHUB_TOKEN": "ghp_token", "GH_TOKEN": "ghp_token2", "TFO_WEBHOOK_SECRET": "hook-secret",
    "TFO_GITHUB_APP_KEY": "-----BEGIN RSA PRIVATE KEY-----", "TFO_CELERY_BROKER_URL": "redis://:pw@redis:6379/0",
    "TFO_STORE_ENCRYPTION_KEY": "fernet-key", "TFO_FLOWER_BASIC_AUTH": "ops:pw", "MY_APP_TOKEN": "custom-token",
    # everything else a host or CI runner has: not needed, not passed
    "SSH_AUTH_SOCK": "/tmp/agent", "DATABASE_URL": "postgres://u:p@db/x", "SLACK_WEBHOOK": "https://hooks/x",
    "CI_JOB_TOKEN": "ci-token", "PYTHONPATH": "/opt/tfo",
}


def test_only_the_allowlist_reaches_terraform() -> None:
    env = terraform_environment(ENVIRON)
    assert set(env) == {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "HTTPS_PROXY", "no_proxy", "SSL_CERT_FILE",
                        "SSH_AUTH_SOCK",
                        "TF_VAR_region", "TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR", "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "ARM_CLIENT_SECRET", "GOOGLE_APPLICATION_CREDENTIALS"}
    assert env["TF_VAR_region"] == "us-east-1"


def test_operator_additions_never_include_tfo_secrets() -> None:
    env = terraform_environment(ENVIRON, extra=("CI_*", "PYTHONPATH", "*"),
                                secret_names=("GITHUB_TOKEN", "MY_APP_TOKEN", "TFO_WEBHOOK_SECRET"))
    assert {"CI_JOB_TOKEN", "PYTHONPATH", "GH_TOKEN", "DATABASE_URL"} <= set(env)  # "*" is the operator's choice
    leaked = {k for k in env if k.startswith("TFO_") or k in ("GITHUB_TOKEN", "MY_APP_TOKEN")}
    assert leaked == set()
    # the GitHub provider's token may be passed when tfo's own token is another variable
    assert "GITHUB_TOKEN" in terraform_environment(ENVIRON, extra=("GITHUB_TOKEN",), secret_names=("TFO_GH",))


def test_git_gets_the_basics_and_none_of_tfo_secrets() -> None:
    from orchestrator.terraform_env import git_environment

    env = git_environment(ENVIRON)
    assert {"PATH", "HOME", "HTTPS_PROXY", "SSL_CERT_FILE", "SSH_AUTH_SOCK"} <= set(env)
    assert not {"GITHUB_TOKEN", "TFO_WEBHOOK_SECRET", "TFO_CELERY_BROKER_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)


def test_naming_a_tfo_secret_in_terraform_env_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo]\nterraform_env = ["PYTHONPATH", "GITHUB_TOKEN"]\n')
    with pytest.raises(ConfigError, match="terraform_env names GITHUB_TOKEN"):
        load_config(repo_root=tmp_path, environ={})
    (tmp_path / "tfo.toml").write_text('[tfo]\nterraform_env = ["DEPLOY_KEY"]\n'
                                       '[tfo.github]\ntoken_env = "DEPLOY_KEY"\n')
    with pytest.raises(ConfigError, match="DEPLOY_KEY"):
        load_config(repo_root=tmp_path, environ={})
    cfg = load_config(repo_root=tmp_path, environ={"TFO_TERRAFORM_ENV": "A_VAR,B_*"})
    assert cfg.terraform_env == ("A_VAR", "B_*")


def test_the_client_runs_terraform_with_the_filtered_environment(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENVIRON.items():
        if k != "PATH":
            monkeypatch.setenv(k, v)
    binary = tmp_path / "terraform"
    binary.write_text("#!/bin/sh\nenv\n")
    binary.chmod(0o755)
    result = TerraformClient(str(binary)).run(TerraformCommand("plan", (), tmp_path))
    seen = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert seen["TF_IN_AUTOMATION"] == "1" and seen["AWS_REGION"] == "us-east-1"
    for name in ("GITHUB_TOKEN", "TFO_WEBHOOK_SECRET", "TFO_CELERY_BROKER_URL", "TFO_STORE_ENCRYPTION_KEY",
                 "TFO_GITHUB_APP_KEY", "TFO_FLOWER_BASIC_AUTH", "DATABASE_URL", "SLACK_WEBHOOK"):
        assert name not in seen


PROBE = textwrap.dedent("""\
    import sys
    try:
        with open(f"/proc/{sys.argv[1]}/environ", "rb") as f:
            print("READ" if b"TFO_PROBE_SECRET=s3cr3t" in f.read() else "EMPTY")
    except OSError as e:
        print("DENIED", e.errno)
""")
HOLDER = textwrap.dedent("""\
    import sys, time
    if sys.argv[1] == "private":
        from procs import keep_private
        assert keep_private()
    print("ready", flush=True)
    time.sleep(30)
""")


def _runs(python: str, who: dict[str, Any]) -> bool:
    try:
        return subprocess.run([python, "-c", "pass"], cwd="/", capture_output=True, check=False, **who).returncode == 0
    except OSError:
        return False


@pytest.fixture
def as_user(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """(python, a directory holding procs.py, how to run as an ordinary user) for both sides of the probe.

    Root may read any process's environment, so as root both sides run as `nobody`, with an interpreter
    and a copy of orchestrator/procs.py that nobody can read.
    """
    shared = Path(tempfile.mkdtemp(prefix="tfo-procs-"))
    shared.chmod(0o755)
    shutil.copy(Path(procs.__file__), shared / "procs.py")
    (shared / "procs.py").chmod(0o644)
    who: dict[str, Any] = {}
    python = sys.executable
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        who = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        runnable = [p for p in (sys.executable, shutil.which("python3"), "/usr/bin/python3") if p and _runs(p, who)]
        assert runnable, "no python interpreter that an ordinary user can run"
        python = runnable[0]
    yield python, shared, who
    shutil.rmtree(shared)


@pytest.mark.parametrize(("mode", "expected"), [("private", "DENIED"), ("plain", "READ")])
def test_a_same_user_process_cannot_read_tfo_s_environment(
        mode: str, expected: str, as_user: tuple[str, Path, dict[str, Any]]) -> None:
    python, shared, who = as_user
    holder = subprocess.Popen([python, "-c", HOLDER, mode], cwd="/", stdout=subprocess.PIPE, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(shared), "TFO_PROBE_SECRET": "s3cr3t"},
                              **who)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        probe = subprocess.run([python, "-c", PROBE, str(holder.pid)], env={"PATH": "/usr/bin:/bin"}, cwd="/",
                               capture_output=True, text=True, timeout=30, check=False, **who)
        assert probe.stdout.split(" ")[0].strip() == expected, (probe.stdout, probe.stderr)
    finally:
        holder.kill()
        holder.wait()
