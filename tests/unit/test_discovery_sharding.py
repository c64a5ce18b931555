from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.config import TfoConfig, load_config
from orchestrator.discovery import discover, read_changed_files, template_regex
from orchestrator.errors import ValidationError
from orchestrator.sharding import build_deployments


def make(tmp_path: Path, files: dict[str, str], toml: str = "") -> TfoConfig:
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform" / "main.tf").write_text('variable "api_token" {\n  sensitive = true\n}\n')
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if toml:
        (tmp_path / "tfo.toml").write_text(toml)
    return load_config(repo_root=tmp_path, environ={})


def test_template_regex_captures_names() -> None:
    rx = template_regex("env/{region}/{account}/{project}.tfvars")
    m = rx.fullmatch("env/eu-west-1/prod/app.tfvars")
    assert m and m.groupdict() == {"region": "eu-west-1", "account": "prod", "project": "app"}
    assert rx.fullmatch("env/eu-west-1/prod/sub/app.tfvars") is None


def test_one_file_two_services_shards_with_shared_variables(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/acct-a/lake.tfvars": 'region = "eu-west-1"\ntags = { t = "x" }\napi_token = "abcd1234"\n'
                                       "s3_buckets = { a = {} }\nkms_keys = { k = {} }\n",
        "Accounts/acct-b/plat.tfvars": "iam_roles = {}\n",
    })
    specs = {s.id: s for s in build_deployments(cfg, discover(cfg)).specs}
    assert set(specs) == {"s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake", "iam/acct-b/us-east-1/plat"}
    s3 = specs["s3/acct-a/eu-west-1/lake"]
    assert s3.state_key == "s3/acct-a/eu-west-1/lake/terraform.tfstate"
    assert set(s3.variables) == {"region", "tags", "api_token", "s3_buckets"}
    assert s3.sensitive_variables == ("api_token",)
    assert specs["iam/acct-b/us-east-1/plat"].region == "us-east-1"  # default region


def test_region_from_template_wins(tmp_path: Path) -> None:
    cfg = make(tmp_path, {"live/ap-south-1/acct/proj.tfvars": 's3_buckets = {}\nregion = "ignored-1"\n'},
               '[tfo]\npath_template = "live/{region}/{account}/{project}.tfvars"\n')
    (spec,) = build_deployments(cfg, discover(cfg)).specs
    assert spec.id == "s3/acct/ap-south-1/proj"


def test_referenced_files_are_found_by_key_and_rewritten_in_the_var_file(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/a/p.tfvars": 'iam_roles = { r = { policy_file = "policies/r.json", '
                               'arn = "arn:aws:iam::1:x.json", index = "index.html", doc = "/index.html" } }\n',
        "Accounts/a/policies/r.json": "{}",
    })
    (spec,) = build_deployments(cfg, discover(cfg)).specs
    assert spec.referenced_files == ("Accounts/a/policies/r.json",)
    # what tfo knows is what is written; Terraform gets the path from its working directory (terraform/)
    assert spec.variables["iam_roles"]["r"]["policy_file"] == "policies/r.json"
    ((name, text),) = spec.var_files
    assert name == ".tfo/vars/00-p.tfvars"
    assert text == ('iam_roles = { r = { policy_file = "../Accounts/a/policies/r.json", '
                    'arn = "arn:aws:iam::1:x.json", index = "index.html", doc = "/index.html" } }\n')


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/a/missing.tfvars": 'iam_roles = { r = { policy_file = "nope.json" } }\n',
        "Accounts/a/escape.tfvars": 'iam_roles = { r = { policy_file = "../../../etc/x.json" } }\n',
        "Accounts/a/abs.tfvars": 'iam_roles = { r = { policy_file = "/etc/x.json" } }\n',
        "Accounts/a/noservice.tfvars": 'tags = {}\n',
        "Accounts/a/badregion.tfvars": 's3_buckets = {}\nregion = "../x"\n',
        "Accounts/a/ok.tfvars": "s3_buckets = {}\n",
    })
    with pytest.raises(ValidationError) as e:
        build_deployments(cfg, discover(cfg))
    text = str(e.value)
    for expected in ("missing.tfvars", "does not exist", "escape.tfvars", "outside the repository",
                     "abs.tfvars", "absolute path", "noservice.tfvars", "no known service",
                     "badregion.tfvars", "region"):
        assert expected in text
    assert "ok.tfvars" not in text
    assert e.value.exit_code == 2


@pytest.mark.parametrize("account", ["acct a", "acct\x1b[31m", "ácct", "-lead", "a" * 64])
def test_hostile_names_are_refused(tmp_path: Path, account: str) -> None:
    cfg = make(tmp_path, {f"Accounts/{account}/p.tfvars": "s3_buckets = {}\n"})
    found = discover(cfg)
    assert found.files == ()
    assert found.problems, "a hostile name must be a problem, not silently skipped"
    with pytest.raises(ValidationError):
        build_deployments(cfg, found)


def test_paths_outside_the_repo_are_problems(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    cfg = make(repo, {"Accounts/a/p.tfvars": "s3_buckets = {}\n"})
    outside = tmp_path / "evil.tfvars"
    outside.write_text("s3_buckets = {}\n")
    (repo / "Accounts/a/link.tfvars").symlink_to(outside)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        found = discover(cfg, paths=[str(outside), "Accounts/a/link.tfvars", "Accounts/../../evil.tfvars"])
    finally:
        os.chdir(cwd)
    assert found.files == ()
    assert len(found.problems) == 3


def test_changed_files_list_with_status_column_and_noise() -> None:
    pairs = read_changed_files("M\tAccounts/a/p.tfvars\nD\tAccounts/a/gone.tfvars\nREADME.md\n\n# comment\n")
    assert pairs[0] == ("M", "Accounts/a/p.tfvars")
    assert pairs[1] == ("D", "Accounts/a/gone.tfvars")
    assert ("M", "README.md") in pairs


def test_changed_files_selects_and_skips(tmp_path: Path) -> None:
    cfg = make(tmp_path, {"Accounts/a/p.tfvars": "s3_buckets = {}\n", "Accounts/b/q.tfvars": "kms_keys = {}\n",
                          "docs/x.md": "x"})
    found = discover(cfg, changed_files="Accounts/a/p.tfvars\ndocs/x.md\nAccounts/c/gone.tfvars\nother/x.tfvars\n")
    assert [f.path for f in found.files] == ["Accounts/a/p.tfvars"]
    reasons = {s.path: s.reason for s in found.skipped}
    assert "deleted" in reasons["Accounts/c/gone.tfvars"]
    chosen = build_deployments(cfg, found)
    assert [s.id for s in chosen.specs] == ["s3/a/us-east-1/p"]
    assert {s.path for s in chosen.skipped} == {"docs/x.md", "other/x.tfvars"}
    assert all("not an input of any deployment" in s.reason for s in chosen.skipped)
    module_change = build_deployments(cfg, discover(cfg, changed_files="terraform/main.tf\n"))
    assert {s.id for s in module_change.specs} == {"s3/a/us-east-1/p", "kms/b/us-east-1/q"}


def test_a_namespace_prefixes_state_keys_and_last_good_but_not_ids_or_bundles(tmp_path: Path) -> None:
    import gzip
    import io
    import tarfile
    from dataclasses import replace

    from orchestrator import keys
    from orchestrator.bundle import build_bundle

    cfg = make(tmp_path, {"Accounts/acct-a/lake.tfvars": "s3_buckets = { a = {} }\n"})
    plain = build_deployments(cfg, discover(cfg)).specs[0]
    spaced = build_deployments(replace(cfg, namespace="repos/o/r"), discover(cfg)).specs[0]
    assert plain.id == spaced.id == "s3/acct-a/us-east-1/lake"
    assert plain.state_key == "s3/acct-a/us-east-1/lake/terraform.tfstate" and plain.namespace == ""
    assert spaced.state_key == "repos/o/r/s3/acct-a/us-east-1/lake/terraform.tfstate"
    assert keys.last_good(spaced.id, spaced.namespace) == "last-good/repos/o/r/s3/acct-a/us-east-1/lake.json"
    assert keys.last_good(plain.id, plain.namespace) == "last-good/s3/acct-a/us-east-1/lake.json"  # as before
    # without a namespace a bundle is byte for byte what it was before namespaces existed
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(build_bundle(cfg, plain)))) as tar:
        meta = tar.extractfile(".tfo/spec.json").read()  # type: ignore[union-attr]
    assert b"namespace" not in meta


@pytest.mark.parametrize("namespace", ["../x", "/abs", "a//b", "audit/x", "a b"])
def test_a_bad_namespace_is_a_config_error(tmp_path: Path, namespace: str) -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="namespace"):
        load_config(repo_root=tmp_path, environ={"TFO_NAMESPACE": namespace})
