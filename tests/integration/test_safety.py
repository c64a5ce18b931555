"""Concurrency, cancellation and bad input: nothing interleaves, nothing is left locked, nothing runs."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import Repo, write_sample

pytestmark = pytest.mark.integration


def _spans(repo: Repo) -> dict[int, tuple[float, float]]:
    """Per terraform process (provider's parent), the first and last moment it changed the world."""
    spans: dict[int, tuple[float, float]] = {}
    for e in repo.journal():
        lo, hi = spans.get(e["terraform_pid"], (e["t"], e["t"]))
        spans[e["terraform_pid"]] = (min(lo, e["t"]), max(hi, e["t"]))
    return spans


def _one_bucket(repo: Repo, content_flag: str, delay: int) -> None:
    repo.write("Accounts/acct-a/data-lake.tfvars", f"""\
        region = "us-west-2"
        s3_buckets = {{
          one = {{ versioning = {content_flag}, delay_seconds = {delay} }}
          two = {{ versioning = {content_flag}, delay_seconds = {delay} }}
        }}
        """)


def test_concurrent_applies_on_one_deployment_never_interleave(repo: Repo, tmp_path: Path) -> None:
    _one_bucket(repo, "true", 3)
    a = repo.popen("apply", "--json-out", str(tmp_path / "a.json"))
    time.sleep(1.0)
    _one_bucket(repo, "false", 3)  # the second run applies a different configuration
    b = repo.popen("apply", "--json-out", str(tmp_path / "b.json"))
    out_a, out_b = a.communicate(timeout=240), b.communicate(timeout=240)
    assert a.returncode == 0, out_a
    assert b.returncode == 0, out_b
    spans = sorted(_spans(repo).values())
    assert len(spans) == 2, spans
    (_, end_first), (start_second, _) = spans
    assert end_first < start_second, f"applies interleaved: {spans}"
    # the later run won and infrastructure matches its configuration
    assert {json.loads(v["content"])["versioning"] for v in repo.world_state().values()} == {False}


def test_second_run_gives_up_clearly_after_lock_timeout(repo: Repo, tmp_path: Path) -> None:
    _one_bucket(repo, "true", 6)
    a = repo.popen("apply")
    deadline = time.monotonic() + 60
    while not any(e["event"] == "start" for e in repo.journal()):
        assert time.monotonic() < deadline, "first apply never started"
        time.sleep(0.2)
    b = repo.tfo("apply", "--json-out", str(tmp_path / "b.json"), env={"TFO_LOCK_TIMEOUT_S": "1"})
    a.communicate(timeout=240)
    assert b.returncode == 1
    dep = json.loads((tmp_path / "b.json").read_text())["deployments"][0]
    assert dep["status"] == "failed"
    assert "is locked by run" in dep["error"] and "lock_timeout_s" in dep["error"]
    assert dep["backup_key"] is None  # it never reached backup or apply
    assert a.returncode == 0


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 1), (signal.SIGINT, 130)])
def test_a_signal_mid_apply_cancels_cleanly(repo: Repo, tmp_path: Path, signum: signal.Signals,
                                            exit_code: int) -> None:
    """SIGTERM (a CI runner stopping the job) and Ctrl-C both stop cleanly; Ctrl-C exits 130 as shells expect."""
    _one_bucket(repo, "true", 6)
    out = tmp_path / "r.json"
    proc = repo.popen("apply", "--json-out", str(out))
    deadline = time.monotonic() + 60
    while not any(e["event"] == "start" for e in repo.journal()):
        assert time.monotonic() < deadline, "apply never started"
        time.sleep(0.1)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == exit_code, stdout + stderr
    assert f"{signum.name} received" in stderr
    report = json.loads(out.read_text())
    assert report["status"] == "cancelled"
    assert report["deployments"][0]["status"] == "cancelled"
    store = repo.root / ".tfo" / "store"
    assert list((store / "locks").glob("*.lease")) == [], "lease left behind"
    assert list(store.rglob("*.lock.info")) == [], "terraform state lock left behind"
    # in-flight resources finished and were recorded: state and world agree
    state = json.loads((store / "s3/acct-a/us-west-2/data-lake/terraform.tfstate").read_text())
    in_state = {i["index_key"] for r in state["resources"] for i in r["instances"]}
    in_world = {n.rsplit(".", 1)[-1] for n in repo.world_state()}
    assert in_state == in_world
    # the run is on record as cancelled
    shown = repo.tfo("runs", "show", report["run_id"])
    assert '"cancelled"' in shown.stdout


BAD_INPUTS = {
    "malformed": ("Accounts/acct-a/bad.tfvars", 's3_buckets = {\n  raw = \n}\n', "Invalid expression"),
    "expression": ("Accounts/acct-a/expr.tfvars", "s3_buckets = var.other\n", "Variables not allowed"),
    "duplicate": ("Accounts/acct-a/dup.tfvars", "s3_buckets = { a = {} }\ns3_buckets = {}\n", "Attribute redefined"),
    "no-service": ("Accounts/acct-a/tags.tfvars", 'tags = { a = "b" }\n', "no known service"),
    "hostile-name": ("Accounts/acct a;rm/x.tfvars", "s3_buckets = {}\n", "not a safe name"),
    "missing-ref": ("Accounts/acct-a/ref.tfvars", 'iam_roles = { r = { policy_file = "nope.json" } }\n',
                    "does not exist"),
    "escaping-ref": ("Accounts/acct-a/esc.tfvars",
                     'iam_roles = { r = { policy_file = "../../../../etc/passwd.json" } }\n', "outside the repository"),
    "binary": ("Accounts/acct-a/bin.tfvars", "\x00\x01\x02junk", "binary"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_the_file_and_runs_nothing(repo: Repo, case: str) -> None:
    write_sample(repo)
    rel, text, expected = BAD_INPUTS[case]
    repo.write(rel, text)
    r = repo.tfo("apply")
    assert r.returncode == 2, r.stdout + r.stderr
    assert rel in r.stderr and expected in r.stderr
    assert "Traceback" not in r.stderr
    assert repo.world_state() == {} and repo.journal() == []
    assert not (repo.root / ".tfo" / "work").exists()


def test_out_of_tree_and_traversal_paths_are_refused(repo: Repo, tmp_path: Path) -> None:
    write_sample(repo)
    outside = tmp_path / "elsewhere.tfvars"
    outside.write_text("s3_buckets = {}\n")
    (repo.root / "Accounts/acct-a/link.tfvars").symlink_to(outside)
    for arg in (str(outside), "Accounts/../../elsewhere.tfvars", "Accounts/acct-a/link.tfvars"):
        r = repo.tfo("plan", arg)
        assert r.returncode == 2, (arg, r.stdout, r.stderr)
        assert "outside the repository" in r.stderr or "'..'" in r.stderr, r.stderr
    r = repo.tfo("plan", "--changed-files", "-", input="../outside.tfvars\n")
    assert r.returncode == 2 and "outside.tfvars" in r.stderr
    assert repo.world_state() == {}


def test_changed_files_select_only_touched_deployments(repo: Repo) -> None:
    write_sample(repo)
    repo.write("README.md", "docs\n")
    listing = "Accounts/acct-b/platform.tfvars\nREADME.md\nAccounts/acct-c/deleted.tfvars\n"
    r = repo.tfo("discover", "--json", "--changed-files", "-", input=listing)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [d["id"] for d in data["deployments"]] == ["iam/acct-b/us-east-1/platform"]
    reasons = {s["path"]: s["reason"] for s in data["skipped"]}
    assert "deleted" in reasons["Accounts/acct-c/deleted.tfvars"]
    assert "not an input of any deployment" in reasons["README.md"]
    # a module change touches every deployment
    r = repo.tfo("discover", "--json", "--changed-files", "-", input="terraform/main.tf\n")
    assert len(json.loads(r.stdout)["deployments"]) == 3


def test_git_diff_selects_deployments_changed_between_commits(repo: Repo) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo.root), "-c", "user.email=t@example.com", "-c", "user.name=t",
                               *args], check=True, capture_output=True, text=True).stdout.strip()

    write_sample(repo)
    git("add", "-A")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    p = repo.root / "Accounts/acct-b/platform.tfvars"
    p.write_text(p.read_text() + "\n# touched\n")
    git("commit", "-qam", "touch platform")
    r = repo.tfo("discover", "--json", "--git-diff", f"{base}..HEAD")
    assert r.returncode == 0, r.stderr
    assert [d["id"] for d in json.loads(r.stdout)["deployments"]] == ["iam/acct-b/us-east-1/platform"]
    bad = repo.tfo("discover", "--git-diff", "no-such-ref..HEAD")
    assert bad.returncode == 2 and "no-such-ref" in bad.stderr
