"""Real repository shapes through real Terraform: examples/modules-repo (root modules per service calling
shared modules by relative path, a file read outside the module, CRLF and heredoc tfvars, layered common
tfvars) on the local and the s3 store; and the tfvars corpus through `tfo apply` against bare
`terraform apply` of the same files: Terraform must see the same values either way."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tfvars import parse_tfvars
from tests.helpers import ROOT, Repo, aws_client, configure_s3
from tests.referee import Referee, referee_module

pytestmark = pytest.mark.integration

MODULES_REPO = ROOT / "examples" / "modules-repo"
CORPUS = ROOT / "tests" / "fixtures" / "tfvars-corpus" / "valid"
EXPECTED_WORLD = {"s3.acct-a.us-west-2.lake.raw", "s3.acct-a.us-west-2.lake.curated",
                  "kms.acct-a.us-west-2.lake.lake", "s3.acct-b.eu-west-1.web.site"}


def git(repo: Repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo.root), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def modules_repo(repo: Repo) -> Repo:
    shutil.rmtree(repo.root / "terraform")
    (repo.root / "tfo.toml").unlink()
    shutil.copytree(MODULES_REPO, repo.root, dirs_exist_ok=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "modules repo")
    return repo


def discover_ids(repo: Repo, changed: str) -> set[str]:
    r = repo.tfo("discover", "--json", "--changed-files", "-", input=changed + "\n")
    assert r.returncode == 0, r.stderr
    return {d["id"] for d in json.loads(r.stdout)["deployments"]}


def check_world(repo: Repo) -> None:
    world = repo.world_state()
    assert set(world) == EXPECTED_WORLD
    lake_bucket = json.loads(world["s3.acct-a.us-west-2.lake.raw"]["content"])
    # layers: acct-a's common.tfvars replaced the repository-wide tags; owner came from the top layer
    assert lake_bucket["tags"] == {"managed_by": "tfo", "cost_center": "cc-1234", "owner": "platform-team"}
    # read by stacks/s3 through path.module from outside its directory
    assert lake_bucket["lifecycle"] == {"rules": [{"id": "expire-noncurrent", "days": 90}]}
    web = json.loads(world["s3.acct-b.eu-west-1.web.site"]["content"])
    assert web["tags"] == {"managed_by": "tfo", "owner": "web-team"}  # the deployment's file wins
    # the CRLF heredoc reached the resource as Terraform reads it from the file: with its \r\n
    policy = world["kms.acct-a.us-west-2.lake.lake"]["content"]
    assert policy.startswith('{\r\n  "Version": "2012-10-17",\r\n')


def test_modules_repo_applies_and_selects_by_the_module_call_graph(repo: Repo) -> None:
    modules_repo(repo)
    first = repo.tfo("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    check_world(repo)

    assert discover_ids(repo, "modules/naming/main.tf") == {"s3/acct-a/us-west-2/lake", "kms/acct-a/us-west-2/lake",
                                                            "s3/acct-b/eu-west-1/web"}
    assert discover_ids(repo, "stacks/kms/main.tf") == {"kms/acct-a/us-west-2/lake"}
    assert discover_ids(repo, "modules/bucket/main.tf") == {"s3/acct-a/us-west-2/lake", "s3/acct-b/eu-west-1/web"}
    assert discover_ids(repo, "shared/policies/lifecycle.json") == {"s3/acct-a/us-west-2/lake",
                                                                    "s3/acct-b/eu-west-1/web"}
    assert discover_ids(repo, "live/acct-a/common.tfvars") == {"s3/acct-a/us-west-2/lake", "kms/acct-a/us-west-2/lake"}

    # a push that changes only the shared bucket module applies exactly the deployments that call it
    base = git(repo, "rev-parse", "HEAD")
    module = repo.root / "modules/bucket/main.tf"
    module.write_text(module.read_text().replace("versioning = lookup(var.settings, \"versioning\", false)",
                                                 "versioning = lookup(var.settings, \"versioning\", false)\n"
                                                 "    module_version = 2"))
    git(repo, "commit", "-qam", "bucket module v2")
    out = repo.root.parent / "second.json"
    second = repo.tfo("apply", "--git-diff", f"{base}..HEAD", "--json-out", str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    report = {d["id"]: d for d in json.loads(out.read_text())["deployments"]}
    assert set(report) == {"s3/acct-a/us-west-2/lake", "s3/acct-b/eu-west-1/web"}
    assert report["s3/acct-a/us-west-2/lake"]["plan"] == {"add": 0, "change": 2, "destroy": 0}
    assert all(json.loads(v["content"]).get("module_version") == 2
               for k, v in repo.world_state().items() if k.startswith("s3."))


def test_modules_repo_applies_on_the_s3_store(repo: Repo, moto_endpoint: str) -> None:
    modules_repo(repo)
    base = re.sub(r"\[tfo\.store\][^\[]*", "", (MODULES_REPO / "tfo.toml").read_text())
    bucket, _ = configure_s3(repo, moto_endpoint, base_toml=base)
    r = repo.tfo("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    check_world(repo)
    keys = {o["Key"] for o in aws_client("s3", moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"s3/acct-a/us-west-2/lake/terraform.tfstate", "kms/acct-a/us-west-2/lake/terraform.tfstate",
            "s3/acct-b/eu-west-1/web/terraform.tfstate"} <= keys


def _corpus_services(files: list[Path]) -> dict[str, str]:
    """Alternate each file's variables between two services, so every deployment gets a cut of its file."""
    services: dict[str, str] = {}
    for f in files:
        for i, a in enumerate(parse_tfvars(f, f.name).attributes):
            services[a.name] = "odd" if i % 2 else "even"
    return services


def test_terraform_sees_through_tfo_what_it_reads_from_the_original_files(repo: Repo, terraform: str,
                                                                           tmp_path: Path) -> None:
    files = [f for f in sorted(CORPUS.iterdir()) if parse_tfvars(f, f.name).attributes]
    services = _corpus_services(files)
    (repo.root / "terraform/main.tf").write_text('terraform {\n  backend "s3" {}\n}\n' + referee_module(list(services)))
    (repo.root / "corpus").mkdir()
    for f in files:
        shutil.copyfile(f, repo.root / "corpus" / f.name)  # bytes as they are: CRLF, byte-order marks
    table = "\n".join(f'{n} = "{s}"' for n, s in sorted(services.items()))
    deployed = []
    for suffix in (".tfvars", ".tfvars.json"):  # a template names one kind of file
        repo.config(extra=f'path_template = "corpus/{{account}}{suffix}"\n[tfo.services]\n' + table + "\n")
        r = repo.tfo("apply", "--json-out", str(tmp_path / "r.json"), timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        deployed += json.loads((tmp_path / "r.json").read_text())["deployments"]
    assert len(deployed) >= len(files)

    referee = Referee(terraform, tmp_path / "referee", list(services))
    by_file: dict[str, dict[str, Any]] = {}
    for d in deployed:
        state = repo.root / ".tfo/store" / d["state_key"]
        by_file.setdefault(d["account"], {}).update(referee.state_outputs(state))
    for f in files:
        account = f.name.removesuffix(".json").removesuffix(".tfvars")
        bare = referee.read(f)
        assert bare.values is not None, bare.error
        assert by_file[account] == bare.values, f.name
