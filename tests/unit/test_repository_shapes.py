"""The shapes real repositories have: shared modules, layered tfvars, flexible layouts, selection by
the module call graph. (Terraform runs on these in tests/integration/test_real_repositories.py.)"""

from __future__ import annotations

import io
import json
import re
import tarfile
import textwrap
from pathlib import Path

import pytest

from orchestrator.bundle import build_bundle, extract_bundle
from orchestrator.config import load_config
from orchestrator.discovery import discover
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.models import DeploymentSpec
from orchestrator.sharding import build_deployments

MODULES_REPO = {
    "tfo.toml": """
        [tfo]
        path_template = "live/{account}/{region}/{project}.tfvars"
        layers = ["common.tfvars"]
        [tfo.services]
        s3_buckets = "s3"
        kms_keys = "kms"
        [tfo.modules]
        s3 = "stacks/s3"
        kms = "stacks/kms"
    """,
    "stacks/s3/main.tf": """
        module "naming" {
          source = "../../modules/naming"
        }
        module "bucket" {
          source = "../../modules/bucket"
        }
        module "vpc" {
          source  = "terraform-aws-modules/vpc/aws"
          version = "5.0.0"
        }
        locals {
          policy = file("${path.module}/../../shared/policies/bucket.json")
        }
    """,
    "stacks/s3/templates/lifecycle.tpl": "rule",
    "stacks/s3/terraform.tfstate": "{}",
    "stacks/s3/dev.tfvars": 's3_buckets = { stray = {} }\n',
    "stacks/kms/main.tf": 'module "naming" {\n  source = "../../modules/naming"\n}\n',
    "modules/naming/main.tf": 'variable "x" {\n  default = 1\n}\n',
    "modules/bucket/main.tf": 'module "tags" {\n  source = "./tags"\n}\n',
    "modules/bucket/tags/main.tf": 'output "t" {\n  value = 1\n}\n',
    "modules/unused/main.tf": "# nobody calls me\n",
    "shared/policies/bucket.json": "{}",
    "shared/policies/other.json": "{}",
    "live/common.tfvars": 'tags = { owner = "platform" }\nregion_default = "x"\n',
    "live/acct-a/common.tfvars": 'tags = { owner = "team-a" }\n',
    "live/acct-a/eu-west-1/lake.tfvars": 's3_buckets = { raw = {} }\nkms_keys = { k = {} }\n',
    "live/acct-b/us-east-1/web.tfvars": 's3_buckets = { site = {} }\n',
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))


def deployments(root: Path, **selectors: str) -> dict[str, DeploymentSpec]:
    cfg = load_config(repo_root=root, environ={})
    return {s.id: s for s in build_deployments(cfg, discover(cfg, **selectors)).specs}  # type: ignore[arg-type]


def bundle_names(root: Path, spec: DeploymentSpec) -> set[str]:
    cfg = load_config(repo_root=root, environ={})
    with tarfile.open(fileobj=io.BytesIO(build_bundle(cfg, spec))) as tar:
        return set(tar.getnames())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(tmp_path, MODULES_REPO)
    return tmp_path


def test_a_bundle_holds_the_root_module_and_every_local_module_it_calls(repo: Path) -> None:
    specs = deployments(repo)
    assert set(specs) == {"s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}
    assert bundle_names(repo, specs["s3/acct-a/eu-west-1/lake"]) == {
        "stacks/s3/main.tf", "stacks/s3/templates/lifecycle.tpl",  # the root module, its subdirectories
        "modules/naming/main.tf", "modules/bucket/main.tf", "modules/bucket/tags/main.tf",  # called, transitively
        "shared/policies/bucket.json",  # read through path.module, outside the module
        ".tfo/vars/00-common.tfvars", ".tfo/vars/01-common.tfvars", ".tfo/vars/02-lake.tfvars", ".tfo/spec.json",
    }  # not: stacks/s3/dev.tfvars (another deployment's), the state file, modules/unused, shared/policies/other.json
    assert bundle_names(repo, specs["kms/acct-a/eu-west-1/lake"]) == {
        "stacks/kms/main.tf", "modules/naming/main.tf",
        ".tfo/vars/00-common.tfvars", ".tfo/vars/01-common.tfvars", ".tfo/vars/02-lake.tfvars", ".tfo/spec.json",
    }


def test_the_workspace_runs_terraform_in_the_root_module_with_var_files_in_order(repo: Path, tmp_path: Path) -> None:
    spec = deployments(repo)["s3/acct-a/eu-west-1/lake"]
    cfg = load_config(repo_root=repo, environ={})
    ws = extract_bundle(build_bundle(cfg, spec), tmp_path / "ws")
    assert ws.cwd == tmp_path / "ws" / "stacks/s3"
    assert ws.var_files == ("../../.tfo/vars/00-common.tfvars", "../../.tfo/vars/01-common.tfvars",
                            "../../.tfo/vars/02-lake.tfvars")
    assert [(ws.cwd / v).read_text() for v in ws.var_files] == [
        'tags = { owner = "platform" }\nregion_default = "x"\n',
        'tags = { owner = "team-a" }\n',
        "s3_buckets = { raw = {} }\n",  # the kms variable is not in the s3 deployment
    ]
    assert (ws.cwd / "../../modules/bucket/tags/main.tf").is_file()  # `terraform init` finds ../../modules


def test_layers_are_shared_variables_and_the_file_wins(repo: Path) -> None:
    spec = deployments(repo)["s3/acct-a/eu-west-1/lake"]
    assert spec.layers == ("live/common.tfvars", "live/acct-a/common.tfvars")
    assert spec.variables == {"tags": {"owner": "team-a"}, "region_default": "x", "s3_buckets": {"raw": {}}}
    web = deployments(repo)["s3/acct-b/us-east-1/web"]
    assert web.variables["tags"] == {"owner": "platform"}


@pytest.mark.parametrize("changed, selected", [
    ("modules/naming/main.tf", {"s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}),
    ("modules/bucket/tags/main.tf", {"s3/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}),
    ("modules/bucket/new-file.tf", {"s3/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}),  # added or deleted
    ("stacks/kms/main.tf", {"kms/acct-a/eu-west-1/lake"}),  # not the s3 deployments of the same file
    ("stacks/s3/templates/lifecycle.tpl", {"s3/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}),
    ("shared/policies/bucket.json", {"s3/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}),
    ("live/acct-a/common.tfvars", {"s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake"}),
    ("live/common.tfvars", {"s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake", "s3/acct-b/us-east-1/web"}),
    ("modules/unused/main.tf", set()),
    ("shared/policies/other.json", set()),
    ("stacks/s3/dev.tfvars", set()),
])
def test_a_change_selects_exactly_the_deployments_that_need_it(repo: Path, changed: str, selected: set[str]) -> None:
    cfg = load_config(repo_root=repo, environ={})
    chosen = build_deployments(cfg, discover(cfg, changed_files=changed + "\n"))
    assert {s.id for s in chosen.specs} == selected
    assert bool(chosen.skipped) == (not selected)


def test_a_referenced_file_selects_the_deployment_that_names_it(tmp_path: Path) -> None:
    write(tmp_path, {"terraform/main.tf": "# m\n",
                     "Accounts/a/p.tfvars": 'iam_roles = { r = { policy_file = "r.json" } }\n',
                     "Accounts/a/r.json": "{}", "Accounts/b/q.tfvars": "s3_buckets = {}\n"})
    assert set(deployments(tmp_path, changed_files="Accounts/a/r.json\n")) == {"iam/a/us-east-1/p"}


def test_symlinks_out_of_the_repository_are_refused(repo: Path, tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("id_rsa")
    (repo / "stacks/s3/key.pem").symlink_to(secret)
    with pytest.raises(ValidationError, match=re.escape("stacks/s3/key.pem: resolves outside the repository")):
        deployments(repo)


def test_a_module_source_that_leaves_the_repository_or_does_not_exist(repo: Path) -> None:
    (repo / "stacks/kms/main.tf").write_text('module "a" {\n  source = "../../../outside"\n}\n'
                                             'module "b" {\n  source = "../missing"\n}\n')
    with pytest.raises(ValidationError) as e:
        deployments(repo)
    text = str(e.value)
    assert "module source '../../../outside' (../outside) resolves outside the repository" in text
    assert "calls module '../missing' (stacks/missing), which has no .tf files" in text


def test_auto_loaded_tfvars_in_a_module_are_a_warning(repo: Path) -> None:
    (repo / "stacks/kms/terraform.tfvars").write_text('x = 1\n')
    cfg = load_config(repo_root=repo, environ={})
    chosen = build_deployments(cfg, discover(cfg))
    assert any(w.path == "stacks/kms/terraform.tfvars" and "per-service filtering does not apply" in w.message
               for w in chosen.warnings)


LAYOUTS = {
    "optional project and **": (
        '[tfo]\npath_template = "envs/**/{account}.tfvars"\nshard_by = "file"\n',
        {"envs/prod/eu/acct-1.tfvars": 'region = "eu-west-1"\nx = 1\n', "envs/acct-2.tfvars": "x = 2\n"},
        {"acct-1/eu-west-1": "acct-1/eu-west-1/terraform.tfstate",
         "acct-2/us-east-1": "acct-2/us-east-1/terraform.tfstate"},
    ),
    "tfvars.json, region from configured variables": (
        '[tfo]\npath_template = "Accounts/{account}/{project}.tfvars.json"\n'
        'region_variables = ["region", "aws_region", "location"]\n',
        {"Accounts/a/p.tfvars.json": '{"s3_buckets": {"b": {}}, "aws_region": "ap-south-1"}',
         "Accounts/a/q.tfvars.json": '{"kms_keys": {}, "location": "westeurope", "//": "a JSON comment"}',
         "Accounts/a/r.tfvars": "s3_buckets = {}\n"},  # not JSON: not matched by this template
        {"s3/a/ap-south-1/p": "s3/a/ap-south-1/p/terraform.tfstate",
         "kms/a/westeurope/q": "kms/a/westeurope/q/terraform.tfstate"},
    ),
    "module directory chosen by path": (
        '[tfo]\npath_template = "environments/{account}/env.tfvars"\nmodule_dir = "environments/{account}"\n'
        'shard_by = "file"\n',
        {"environments/dev/env.tfvars": "x = 1\n", "environments/dev/main.tf": "# dev\n",
         "environments/prod/env.tfvars": "x = 2\n", "environments/prod/main.tf": "# prod\n"},
        {"dev/us-east-1": "dev/us-east-1/terraform.tfstate", "prod/us-east-1": "prod/us-east-1/terraform.tfstate"},
    ),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layouts(tmp_path: Path, name: str) -> None:
    toml, files, expected = LAYOUTS[name]
    write(tmp_path, {"terraform/main.tf": "# root\n", "tfo.toml": toml, **files})
    specs = deployments(tmp_path)
    assert {i: s.state_key for i, s in specs.items()} == expected


def test_module_dir_by_path_uses_each_environments_own_module(tmp_path: Path) -> None:
    toml, files, _ = LAYOUTS["module directory chosen by path"]
    write(tmp_path, {"tfo.toml": toml, **files})
    specs = deployments(tmp_path)
    assert specs["dev/us-east-1"].module_dir == "environments/dev"
    assert bundle_names(tmp_path, specs["prod/us-east-1"]) == {
        "environments/prod/main.tf", ".tfo/vars/00-env.tfvars", ".tfo/spec.json"}  # not dev's, not its own tfvars


@pytest.mark.parametrize("template, message", [
    ("Accounts/{account}/{account}.tfvars", "appears more than once"),
    ("/abs/{account}/{project}.tfvars", "relative to the repository root"),
    ("../up/{account}.tfvars", "must not contain '..'"),
    ("Accounts/{acount}/{project}.tfvars", "unknown placeholder"),
    ("Accounts/{project}.tfvars", "must contain {account}"),
    ("Accounts/{account}/{project}.yaml", "must end in .tfvars"),
    ("Accounts/x**/{account}.tfvars", "whole path segment"),
    ("Accounts/*/{account}.tfvars", "glob characters"),
])
def test_bad_path_templates_are_config_errors(tmp_path: Path, template: str, message: str) -> None:
    (tmp_path / "tfo.toml").write_text(f'[tfo]\npath_template = "{template}"\n')
    with pytest.raises(ConfigError, match=message) as e:
        load_config(repo_root=tmp_path, environ={})
    assert e.value.exit_code == 2


def test_two_files_that_would_share_a_state_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"terraform/main.tf": "# m\n", "tfo.toml": '[tfo]\npath_template = "{account}/**/x.tfvars"\n'
                     'shard_by = "file"\n', "a/one/x.tfvars": "v = 1\n", "a/two/x.tfvars": "v = 2\n"})
    with pytest.raises(ValidationError, match="is also defined by"):
        deployments(tmp_path)


def test_layers_are_not_deployments_of_their_own(repo: Path) -> None:
    cfg = load_config(repo_root=repo, environ={})
    found = discover(cfg)
    assert "live/acct-a/common.tfvars" not in {f.path for f in found.files}
    assert json.loads(json.dumps([f.path for f in found.files])) == ["live/acct-a/eu-west-1/lake.tfvars",
                                                                     "live/acct-b/us-east-1/web.tfvars"]


def test_discover_json_lists_the_problems_and_exits_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    (repo / "live/acct-b/us-east-1/web.tfvars").write_text('s3_buckets = { site = {} }\n\ns3_buckets = {}\n')
    code = main(["-C", str(repo), "discover", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["problems"] == [{"path": "live/acct-b/us-east-1/web.tfvars", "line": 3,
                                "message": out["problems"][0]["message"]}]
    assert "Attribute redefined" in out["problems"][0]["message"]
    assert out["deployments"] == []


def test_the_region_variables_default_keeps_state_keys_where_they_were(tmp_path: Path) -> None:
    """Only `region` by default: reading `aws_region` too would move existing deployments to new states."""
    write(tmp_path, {"terraform/main.tf": "# m\n",
                     "Accounts/a/p.tfvars": 's3_buckets = {}\naws_region = "eu-west-1"\n'})
    assert set(deployments(tmp_path)) == {"s3/a/us-east-1/p"}


@pytest.mark.parametrize("value, reason", [
    ("../../../.git/config", ".git/ (git's"),
    ("../../../.tfo/work/other/.tfo/vars/00-x.tfvars", ".tfo/ (git's"),
    ("../../../state/terraform.tfstate", "state or plan file"),
    ("../../link.json", ".git/ (git's"),  # a symlink into .git, checked where it points
])
def test_referenced_files_may_not_be_private_data(repo: Path, value: str, reason: str) -> None:
    (repo / ".git").mkdir()
    (repo / ".git/config").write_text("[http] extraheader = AUTHORIZATION: basic c2VjcmV0\n")
    (repo / ".tfo/work/other/.tfo/vars").mkdir(parents=True)
    (repo / ".tfo/work/other/.tfo/vars/00-x.tfvars").write_text("token = 1\n")
    (repo / "state").mkdir()
    (repo / "state/terraform.tfstate").write_text("{}")
    (repo / "live/link.json").symlink_to(repo / ".git/config")
    (repo / "live/acct-b/us-east-1/web.tfvars").write_text(f's3_buckets = {{}}\nweb_file = "{value}"\n')
    with pytest.raises(ValidationError, match=re.escape(reason)):
        deployments(repo)


def test_a_module_may_not_read_or_call_private_data(repo: Path) -> None:
    (repo / ".terraform/modules/x").mkdir(parents=True)
    (repo / ".terraform/modules/x/main.tf").write_text("# cached module\n")
    (repo / "stacks/kms/main.tf").write_text('module "a" {\n  source = "../../.terraform/modules/x"\n}\n'
                                             'locals {\n  k = file("${path.module}/../../.tfo/store/.tfo-key")\n}\n')
    with pytest.raises(ValidationError) as e:
        deployments(repo)
    assert "(.terraform/modules/x) is inside .terraform/" in str(e.value)
    assert "reads '../../.tfo/store/.tfo-key' through path.module: .tfo/store/.tfo-key is inside .tfo/" in str(e.value)


def test_a_deleted_or_renamed_layer_selects_the_deployments_beneath_it(repo: Path) -> None:
    (repo / "live/acct-a/common.tfvars").unlink()
    assert set(deployments(repo, changed_files="D\tlive/acct-a/common.tfvars\n")) == {
        "s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake"}
    assert set(deployments(repo, changed_files="R100\tlive/acct-a/common.tfvars\tlive/acct-a/old.tfvars\n")) == {
        "s3/acct-a/eu-west-1/lake", "kms/acct-a/eu-west-1/lake"}


def test_reads_of_directories_and_globs_select_on_new_files(repo: Path) -> None:
    (repo / "shared/configs/deep").mkdir(parents=True)
    (repo / "shared/configs/a.json").write_text("{}")
    (repo / "shared/configs/deep/b.json").write_text("{}")
    (repo / "stacks/kms/main.tf").write_text(
        'locals {\n  all = fileset("${path.module}/../../shared", "configs/**/*.json")\n'
        '  dir = "${path.module}/../../shared/policies"\n}\n')
    assert set(deployments(repo, changed_files="shared/configs/new.json\n")) == {"kms/acct-a/eu-west-1/lake"}
    assert set(deployments(repo, changed_files="shared/policies/new.json\n")) >= {"kms/acct-a/eu-west-1/lake"}
    spec = deployments(repo)["kms/acct-a/eu-west-1/lake"]
    names = bundle_names(repo, spec)
    assert {"shared/configs/a.json", "shared/configs/deep/b.json"} <= names  # `**/` spans zero directories too


def test_symlinked_directories_ship_with_the_same_filters(repo: Path) -> None:
    (repo / "shared/cfg").mkdir(parents=True)
    (repo / "shared/cfg/a.txt").write_text("a")
    (repo / "shared/cfg/prod.tfvars").write_text("x = 1\n")
    (repo / "shared/cfg/terraform.tfstate").write_text("{}")
    (repo / "stacks/kms/cfg").symlink_to(repo / "shared/cfg")
    names = bundle_names(repo, deployments(repo)["kms/acct-a/eu-west-1/lake"])
    assert "stacks/kms/cfg/a.txt" in names
    assert not {"stacks/kms/cfg/prod.tfvars", "stacks/kms/cfg/terraform.tfstate"} & names
