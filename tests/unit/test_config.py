from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import DEFAULT_SERVICES, load_config, with_overrides
from orchestrator.errors import ConfigError


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(repo_root=tmp_path, environ={})
    assert cfg.module_dir == "terraform"
    assert cfg.path_template == "Accounts/{account}/{project}.tfvars"
    assert cfg.store.kind == "local" and cfg.rollback == "reapply" and cfg.max_workers == 5
    assert dict(cfg.services) == DEFAULT_SERVICES
    assert cfg.workdir_path == tmp_path.resolve() / ".tfo/work"
    assert cfg.cache_path == tmp_path.resolve() / ".tfo/cache"  # no home to keep it in


def test_cache_lives_in_the_users_cache_so_it_outlives_checkouts(tmp_path: Path) -> None:
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    assert load_config(repo_root=tmp_path, environ={"HOME": str(home)}).cache_path == home / ".cache/tfo"
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(xdg)}
    assert load_config(repo_root=tmp_path, environ=env).cache_path == xdg / "tfo"
    env["TFO_CACHE_DIR"] = "cache-here"
    assert load_config(repo_root=tmp_path, environ=env).cache_path == tmp_path.resolve() / "cache-here"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text("""
[tfo]
max_workers = 3
rollback = "state"
[tfo.services]
buckets = "s3"
[tfo.store]
kind = "s3"
bucket = "from-file"
[tfo.backend_config]
force_path_style = true
[tfo.accounts.prod-1]
role_arn = "arn:aws:iam::1:role/x"
""")
    env = {"TFO_STORE_BUCKET": "from-env", "TFO_MAX_WORKERS": "7", "TFO_CELERY_BROKER_URL": "redis://x",
           "TFO_LOCK_TIMEOUT_S": "2.5", "UNRELATED": "1"}
    cfg = load_config(repo_root=tmp_path, environ=env)
    assert cfg.store.bucket == "from-env" and cfg.max_workers == 7 and cfg.rollback == "state"
    assert cfg.lock_timeout_s == 2.5
    assert cfg.celery.broker_url == "redis://x"
    assert dict(cfg.services) == {"buckets": "s3"}  # replaces the built-in table
    assert cfg.backend_config == {"force_path_style": "true"}
    assert cfg.accounts["prod-1"].role_arn == "arn:aws:iam::1:role/x"
    assert with_overrides(cfg, max_workers=2, rollback=None).max_workers == 2


@pytest.mark.parametrize("text, message", [
    ("[tfo]\nrollback = 'sometimes'\n", "rollback"),
    ("[tfo]\nmax_workers = 'many'\n", "max_workers"),
    ("[tfo]\nno_such_key = 1\n", "unknown key 'no_such_key'"),
    ("[tfo.store]\nkind = 's3'\n", "store.bucket"),
    ("[tfo\n", "not valid TOML"),
    ("[other]\nx = 1\n", "unknown table"),
    ("[tfo]\npath_template = 'x/{project}.tfvars'\n", "{account}"),
])
def test_bad_config_is_a_user_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "tfo.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(repo_root=tmp_path, environ={})
    assert message in str(e.value)
    assert e.value.exit_code == 2


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TFO_MAX_WORKERS"):
        load_config(repo_root=tmp_path, environ={"TFO_MAX_WORKERS": "lots"})
