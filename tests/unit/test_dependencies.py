"""Dependencies between deployments: [tfo.dependencies] service rules, tfo_depends_on edges, the order, and
the refusals (cycles, unknown targets, self-edges, malformed values)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.dependencies import DependencyGraph, graph_of
from orchestrator.discovery import discover
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.sharding import build_deployments
from tests.unit.test_discovery_sharding import make

LAKE = 'region = "us-west-2"\ns3_buckets = { raw = {} }\nkms_keys = { lake = {} }\n'
KMS, S3 = "kms/acct-a/us-west-2/lake", "s3/acct-a/us-west-2/lake"
IAM = "iam/acct-b/us-east-1/platform"
# acct-b's deployments may read acct-a's outputs (an edge into another account is opted into)
RULES = '[tfo.dependencies]\ns3 = ["kms"]\n[tfo.accounts.acct-b]\noutputs_from = ["acct-a"]\n'


def _specs(cfg: object, *paths: str) -> dict[str, object]:
    return {s.id: s for s in build_deployments(cfg, discover(cfg, paths)).specs}  # type: ignore[arg-type]


def test_service_rules_and_explicit_edges_across_accounts(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/acct-a/lake.tfvars": LAKE,
        "Accounts/acct-b/platform.tfvars": f'tfo_depends_on = ["{KMS}"]\niam_roles = {{ r = {{}} }}\n',
        "Accounts/acct-c/solo.tfvars": "s3_buckets = { x = {} }\n",  # no kms deployment there: no edge
    }, RULES)
    specs = _specs(cfg)
    assert {i: s.depends_on for i, s in specs.items()} == {  # type: ignore[attr-defined]
        KMS: (), S3: (KMS,), IAM: (KMS,), "s3/acct-c/us-east-1/solo": ()}
    iam = specs[IAM]
    # tfo's variable, never terraform's: not in the values, not in the var files terraform reads
    assert "tfo_depends_on" not in iam.variables  # type: ignore[attr-defined]
    assert all("tfo_depends_on" not in text for _, text in iam.var_files)  # type: ignore[attr-defined]
    graph = graph_of(list(specs.values()))  # type: ignore[arg-type]
    assert graph.levels() == [[KMS, "s3/acct-c/us-east-1/solo"], [IAM, S3]]
    assert graph.dependents([KMS]) == {IAM, S3}


def test_a_selected_deployment_finds_targets_outside_the_selection(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/acct-a/lake.tfvars": LAKE,
        "Accounts/acct-b/platform.tfvars": f'tfo_depends_on = ["{KMS}"]\niam_roles = {{ r = {{}} }}\n',
        # a broken file elsewhere is not this selection's problem
        "Accounts/acct-c/broken.tfvars": 'tfo_depends_on = "kms"\ns3_buckets = {}\n',
    }, RULES)
    specs = _specs(cfg, "Accounts/acct-b/platform.tfvars")
    assert {i: s.depends_on for i, s in specs.items()} == {IAM: (KMS,)}  # type: ignore[attr-defined]
    assert graph_of(list(specs.values())).needs == {IAM: ()}  # type: ignore[arg-type]  # KMS is not in this run
    with pytest.raises(ValidationError, match="tfo_depends_on must be a list of deployment ids"):
        _specs(cfg)


@pytest.mark.parametrize(("files", "why"), [
    ({"Accounts/acct-a/lake.tfvars": f'tfo_depends_on = ["{S3}"]\n' + LAKE},
     f"dependency cycle: {KMS} -> {S3} -> {KMS}"),
    ({"Accounts/acct-a/lake.tfvars": LAKE,
      "Accounts/acct-b/platform.tfvars": 'tfo_depends_on = ["kms/acct-z/us-west-2/nope"]\niam_roles = {}\n'},
     "tfo_depends_on: kms/acct-z/us-west-2/nope is no deployment of this repository"),
    ({"Accounts/acct-b/platform.tfvars": f'tfo_depends_on = ["{IAM}"]\niam_roles = {{}}\n'},
     f"tfo_depends_on: {IAM} cannot depend on itself"),
    ({"Accounts/acct-b/platform.tfvars": 'tfo_depends_on = ["kms/../etc/x"]\niam_roles = {}\n'},
     "is not a deployment id"),
    ({"Accounts/acct-b/platform.tfvars": 'tfo_depends_on = ["kms"]\niam_roles = {}\n'},
     "'kms' is not a deployment id (SERVICE/ACCOUNT/REGION[/PROJECT])"),
    ({"Accounts/acct-b/platform.tfvars": 'tfo_depends_on = [1]\niam_roles = {}\n'},
     "tfo_depends_on must be a list of deployment ids"),
    ({"Accounts/acct-b/platform.tfvars": 'tfo_dependency_outputs = { kms = {} }\niam_roles = {}\n'},
     "tfo_dependency_outputs is set by tfo"),
])
def test_refused_with_the_file_and_the_reason(tmp_path: Path, files: dict[str, str], why: str) -> None:
    cfg = make(tmp_path, files, RULES)
    with pytest.raises(ValidationError) as e:
        _specs(cfg)
    assert any(why in str(p) for p in e.value.problems), e.value.problems


def test_a_longer_cycle_is_printed_whole(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/a/one.tfvars": 'tfo_depends_on = ["iam/b/us-east-1/two"]\ns3_buckets = {}\n',
        "Accounts/b/two.tfvars": 'tfo_depends_on = ["iam/c/us-east-1/three"]\niam_roles = {}\n',
        "Accounts/c/three.tfvars": 'tfo_depends_on = ["s3/a/us-east-1/one"]\niam_roles = {}\n',
    }, "".join(f'[tfo.accounts.{a}]\noutputs_from = ["*"]\n' for a in "abc"))
    with pytest.raises(ValidationError) as e:
        _specs(cfg)
    (problem,) = e.value.problems
    assert problem.message == ("dependency cycle: iam/b/us-east-1/two -> iam/c/us-east-1/three -> "
                               "s3/a/us-east-1/one -> iam/b/us-east-1/two")


def test_an_edge_into_another_account_must_be_allowed_by_the_downstream_account(tmp_path: Path) -> None:
    """tfo reads the upstream's state with the upstream account's credentials and hands every value to the
    downstream's code: a tfvars line alone (a pull request's) must not reach into another account."""
    files = {"Accounts/acct-a/lake.tfvars": LAKE,
             "Accounts/acct-b/platform.tfvars": f'tfo_depends_on = ["{KMS}"]\niam_roles = {{ r = {{}} }}\n'}
    cfg = make(tmp_path, files, '[tfo.dependencies]\ns3 = ["kms"]\n')
    with pytest.raises(ValidationError) as e:
        _specs(cfg)
    (problem,) = e.value.problems
    assert problem.path.endswith("Accounts/acct-b/platform.tfvars")
    assert problem.message == (
        f"tfo_depends_on: {KMS}: it is in account acct-a, and deployments of acct-b may read only their own "
        'account\'s outputs: allow it with [tfo.accounts.acct-b] outputs_from = ["acct-a"] in tfo.toml')
    # allowed by name, or any account with "*"; another account's allowance does not count
    for allow, ok in (('"acct-a"', True), ('"*"', True), ('"acct-c"', False)):
        (tmp_path / "tfo.toml").write_text(
            f'[tfo.dependencies]\ns3 = ["kms"]\n[tfo.accounts.acct-b]\noutputs_from = [{allow}]\n')
        cfg = load_config(repo_root=tmp_path, environ={})
        if ok:
            assert _specs(cfg)[IAM].depends_on == (KMS,)  # type: ignore[attr-defined]
        else:
            with pytest.raises(ValidationError):
                _specs(cfg)
    with pytest.raises(ConfigError, match=r"\[tfo.accounts.acct-b\] outputs_from: '\.\./x' is no account name"):
        (tmp_path / "tfo.toml").write_text('[tfo.accounts.acct-b]\noutputs_from = ["../x"]\n')
        load_config(repo_root=tmp_path, environ={})


@pytest.mark.parametrize(("toml", "why"), [
    ('[tfo.dependencies]\ns3 = ["vault"]\n', "names vault, which is no service"),
    ('[tfo.dependencies]\ns3 = ["s3"]\n', "s3 cannot depend on itself"),
    ('[tfo.dependencies]\ns3 = "kms"\n', "must be a table of service lists"),
    ('[tfo]\nshard_by = "file"\n[tfo.dependencies]\ns3 = ["kms"]\n', "use tfo_depends_on"),
])
def test_bad_rules_are_config_errors(tmp_path: Path, toml: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        make(tmp_path, {}, toml)
    assert "[tfo.dependencies]" in str(e.value) and why in str(e.value), str(e.value)


def test_levels_of_a_long_chain_and_a_diamond() -> None:
    chain = DependencyGraph({f"d{i}": ((f"d{i - 1}",) if i else ()) for i in range(3000)})
    assert [level for (level,) in chain.levels()] == [f"d{i}" for i in range(3000)]  # no recursion limit
    diamond = DependencyGraph({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")})
    assert diamond.levels() == [["a"], ["b", "c"], ["d"]]
    assert diamond.dependents(["b"]) == {"d"} and diamond.dependents(["a"]) == {"b", "c", "d"}


def test_discover_and_validate_show_the_order_and_refuse_a_cycle(tmp_path: Path) -> None:
    make(tmp_path, {"Accounts/acct-a/lake.tfvars": LAKE}, RULES)

    def tfo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "-C", str(tmp_path), *args], capture_output=True,
                              text=True, check=False, cwd=Path(__file__).resolve().parents[2])

    shown = tfo("discover", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {d["id"]: d["depends_on"] for d in json.loads(shown.stdout)["deployments"]} == {KMS: [], S3: [KMS]}
    text = tfo("discover")
    assert text.stdout.splitlines()[0] == "# level 1" and text.stdout.splitlines()[2] == "# level 2"
    assert text.stdout.splitlines()[3].endswith(f"\tafter {KMS}")
    ok = tfo("validate")
    assert ok.returncode == 0 and "1 dependency in 2 level(s)" in ok.stdout, ok.stdout + ok.stderr
    (tmp_path / "Accounts/acct-a/lake.tfvars").write_text(f'tfo_depends_on = ["{S3}"]\n' + LAKE)
    refused = tfo("validate")
    assert refused.returncode == 2 and f"dependency cycle: {KMS} -> {S3} -> {KMS}" in refused.stderr


def test_a_change_to_an_upstream_selects_what_reads_its_outputs(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/a/keys.tfvars": "kms_keys = { k = {} }\n",
        "Accounts/a/data.tfvars": 'tfo_depends_on = ["kms/a/us-east-1/keys"]\ns3_buckets = { b = {} }\n',
        "Accounts/b/reader.tfvars": 'tfo_depends_on = ["s3/a/us-east-1/data"]\niam_roles = {}\n',
        "Accounts/c/other.tfvars": "iam_roles = {}\n",
    }, '[tfo.accounts.b]\noutputs_from = ["a"]\n')
    changed = build_deployments(cfg, discover(cfg, changed_files="Accounts/a/keys.tfvars\n")).specs
    assert {s.id: s.selected_because for s in changed} == {
        "kms/a/us-east-1/keys": "",
        "s3/a/us-east-1/data": "kms/a/us-east-1/keys changed",
        "iam/b/us-east-1/reader": "kms/a/us-east-1/keys changed",  # through the bucket
    }
    named = build_deployments(cfg, discover(cfg, ["Accounts/a/keys.tfvars"])).specs  # named, not changed
    assert [s.id for s in named] == ["kms/a/us-east-1/keys"]


def test_outputs_by_id_and_service_and_sensitive_values_to_redact(tmp_path: Path) -> None:
    from dataclasses import replace

    from orchestrator.dependencies import dependency_outputs
    from orchestrator.store import open_store

    cfg = make(tmp_path, {"Accounts/acct-a/lake.tfvars": LAKE}, RULES)
    store = open_store(cfg)
    state = {"version": 4, "outputs": {
        "key_ids": {"value": {"main": "key-1234"}, "type": ["map", "string"]},
        "admin_password": {"value": "Sup3r-s3cret-pw", "type": "string", "sensitive": True}}}
    path = tmp_path / ".tfo" / "store" / f"{KMS}/terraform.tfstate"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    s3 = next(s for s in build_deployments(cfg, discover(cfg)).specs if s.id == S3)
    outputs, sensitive = dependency_outputs(lambda _: store, s3)
    assert outputs[KMS] == outputs["kms"] == {"key_ids": {"main": "key-1234"}, "admin_password": "Sup3r-s3cret-pw"}
    assert sensitive == ["Sup3r-s3cret-pw"]
    # an upstream never applied: an empty map, not an error
    outputs, _ = dependency_outputs(lambda _: store, replace(s3, depends_on=("kms/acct-z/us-west-2/new",)))
    assert outputs == {"kms/acct-z/us-west-2/new": {}, "kms": {}}


def test_a_rollback_reads_an_upstream_it_returns_to_from_its_backup(tmp_path: Path) -> None:
    from orchestrator.dependencies import dependency_outputs
    from orchestrator.store import open_store

    cfg = make(tmp_path, {"Accounts/acct-a/lake.tfvars": LAKE}, RULES)
    store = open_store(cfg)
    key = f"{KMS}/terraform.tfstate"

    def state(key_id: str) -> bytes:
        return json.dumps({"version": 4, "serial": 1, "lineage": "l",
                           "outputs": {"key_ids": {"value": {"main": key_id}, "type": "any"}}}).encode()

    store.restore_state(key, state("key-old"))
    backup = store.backup_state(key, {"run-id": "r", "deployment": KMS})
    store.restore_state(key, state("key-new"))  # this run's apply of the key
    s3 = next(s for s in build_deployments(cfg, discover(cfg)).specs if s.id == S3)
    assert dependency_outputs(lambda _: store, s3)[0]["kms"] == {"key_ids": {"main": "key-new"}}
    # the key is rolled back in the same run: the bucket, rolled back first, is given what the key returns to
    outputs, _ = dependency_outputs(lambda _: store, s3, {KMS: backup.key})
    assert outputs["kms"] == {"key_ids": {"main": "key-old"}}
    # a backup that says "there was no state" (the key is destroyed by its rollback): no outputs
    empty = store.backup_state("kms/acct-a/us-west-2/none/terraform.tfstate", {"run-id": "r", "deployment": "x"})
    assert dependency_outputs(lambda _: store, s3, {KMS: empty.key})[0]["kms"] == {}
    # a backup gone (retention): the state as it is
    assert dependency_outputs(lambda _: store, s3, {KMS: backup.key + ".gone"})[0]["kms"] == {
        "key_ids": {"main": "key-new"}}


def test_a_saved_plan_knows_which_upstream_outputs_it_holds() -> None:
    from dataclasses import replace

    from orchestrator.dependencies import moved_outputs, output_digests
    from orchestrator.models import DeploymentSpec

    spec = DeploymentSpec(id="s3/a/r/p", service="s3", account="a", region="r", project="p",
                          state_key="s3/a/r/p/terraform.tfstate", tfvars_path="x.tfvars", module_dir="terraform",
                          variables={}, depends_on=(KMS, "iam/b/r/p"))
    then = output_digests({KMS: {"id": "k1"}, "kms": {"id": "k1"}, "iam/b/r/p": {}}, spec)
    assert set(then) == {KMS, "iam/b/r/p"}  # by deployment id, not by service alias
    assert moved_outputs(then, output_digests({KMS: {"id": "k1"}, "iam/b/r/p": {}}, spec)) == []
    assert moved_outputs(then, output_digests({KMS: {"id": "k2"}, "iam/b/r/p": {}}, spec)) == [KMS]
    assert moved_outputs(then, output_digests({KMS: {"id": "k1"}}, spec)) == ["iam/b/r/p"]
    assert moved_outputs({}, then) == sorted(then)  # a plan saved without them: every upstream moved
    assert output_digests({KMS: {}}, replace(spec, depends_on=())) == {}


def test_a_cycle_the_selection_reaches_is_refused_even_beside_another(tmp_path: Path) -> None:
    cfg = make(tmp_path, {
        "Accounts/x/one.tfvars": 'tfo_depends_on = ["iam/x/us-east-1/two", "iam/x/us-east-1/three"]\n'
                                 "s3_buckets = {}\n",
        "Accounts/x/two.tfvars": 'tfo_depends_on = ["s3/x/us-east-1/one"]\niam_roles = {}\n',
        "Accounts/x/three.tfvars": 'tfo_depends_on = ["s3/x/us-east-1/one"]\niam_roles = {}\n',
        "Accounts/y/apart.tfvars": "iam_roles = {}\n",
    })
    with pytest.raises(ValidationError, match="dependency cycle: "):
        _specs(cfg, "Accounts/x/three.tfvars")
    assert list(_specs(cfg, "Accounts/y/apart.tfvars")) == ["iam/y/us-east-1/apart"]  # a cycle elsewhere


def test_outputs_reach_terraform_as_written_not_as_templates() -> None:
    from orchestrator.dependencies import as_variable

    text = as_variable({"kms": {"policy": 'arn:${aws:username} %{if x}', "${k}": "snow ☃ 🚀"}})
    assert "$${aws:username}" in text and "%%{if x}" in text and '"$${k}"' in text
    assert "🚀" in text and "\\ud83d" not in text  # no surrogate escapes, which HCL does not read
    assert json.loads(text)["kms"]["policy"] == "arn:$${aws:username} %%{if x}"


def test_a_worker_refuses_an_edge_its_own_accounts_do_not_allow(tmp_path: Path) -> None:
    """The producer's config allowed the edge; the host that runs the deployment reads its own: no state of
    another account is read for a downstream its accounts do not let read it."""
    from dataclasses import replace

    from orchestrator.bundle import Workspace
    from orchestrator.errors import UserError
    from orchestrator.runtime import build_runtime
    from orchestrator.workspace import step_context

    platform = f'tfo_depends_on = ["{KMS}"]\niam_roles = {{ r = {{}} }}\n'
    cfg = make(tmp_path, {"Accounts/acct-a/lake.tfvars": LAKE, "Accounts/acct-b/platform.tfvars": platform}, RULES)
    iam = _specs(cfg)[IAM]
    ws = Workspace(root=tmp_path, cwd=tmp_path / "terraform", var_files=())
    allowed = step_context(build_runtime(cfg), ws, iam, "r")  # type: ignore[arg-type]
    assert "TF_VAR_tfo_dependency_outputs" in allowed.env
    strict = build_runtime(replace(cfg, accounts={}))
    with pytest.raises(UserError, match=f"tfo_depends_on: {KMS}: it is in account acct-a, and deployments of "
                                        "acct-b may read only their own account's outputs"):
        step_context(strict, ws, iam, "r")  # type: ignore[arg-type]


def test_a_worker_reads_ids_in_the_repository_s_shape_whatever_its_own_shard_by(tmp_path: Path) -> None:
    """shard_by is the checkout's (the webhook's repositories each have their own): ACCOUNT/REGION/PROJECT ids
    are read as such by a worker whose own config shards by service."""
    from dataclasses import replace

    from orchestrator.bundle import Workspace
    from orchestrator.runtime import build_runtime
    from orchestrator.workspace import step_context

    cfg = make(tmp_path, {"Accounts/acct-a/key.tfvars": 'region = "us-west-2"\nkms_keys = { k = {} }\n',
                          "Accounts/acct-a/lake.tfvars": 'region = "us-west-2"\n'
                                                         'tfo_depends_on = ["acct-a/us-west-2/key"]\n'
                                                         's3_buckets = { b = {} }\n'},
               '[tfo]\nshard_by = "file"\n')
    lake = _specs(cfg)["acct-a/us-west-2/lake"]
    assert lake.depends_on == ("acct-a/us-west-2/key",)  # type: ignore[attr-defined]
    worker = build_runtime(replace(cfg, shard_by="service"))
    ws = Workspace(root=tmp_path, cwd=tmp_path / "terraform", var_files=())
    ctx = step_context(worker, ws, lake, "r")  # type: ignore[arg-type]  # same account: no refusal
    assert "TF_VAR_tfo_dependency_outputs" in ctx.env
