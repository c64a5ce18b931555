"""A corpus of bad inputs: each gets a clear message naming the input, the documented exit code, and
never a traceback. Nothing reaches terraform (these run `tfo validate`/`plan` without a provider)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = 'variable "s3_buckets" {\n  default = {}\n}\nvariable "iam_roles" {\n  default = {}\n}\n'


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # writes files, returns the tfo arguments
    code: int
    expect: tuple[str, ...]  # every one must appear in stderr


def tfvars(rel: str, text: str | bytes, *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8")
        return ["validate", *args]
    return setup


def config(text: str, *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        (root / "tfo.toml").write_text(text)
        return list(args) or ["validate"]
    return setup


def symlink(rel: str, target: Callable[[Path], Path], *args: str) -> Callable[[Path], list[str]]:
    def setup(root: Path) -> list[str]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target(root))
        return ["validate", *args]
    return setup


def argv(*args: str) -> Callable[[Path], list[str]]:
    return lambda root: list(args)


def outside(root: Path) -> Path:
    p = root.parent / "outside" / "evil.tfvars"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("s3_buckets = {}\n")
    return p


A = "Accounts/acct/p.tfvars"
CASES = [
    Case("unclosed-brace", tfvars(A, "s3_buckets = {\n  a = {}\n"), 2, (A, "Unterminated object constructor")),
    Case("missing-value", tfvars(A, "s3_buckets = \n"), 2, (f"{A}:1", "Invalid expression")),
    Case("unterminated-string", tfvars(A, 's3_buckets = { a = "x }\n'), 2, (A,)),
    Case("double-equals", tfvars(A, "s3_buckets == {}\n"), 2, (A, "Argument or block definition required")),
    Case("json-not-hcl", tfvars(A, '{"s3_buckets": {}}\n'), 2, (A,)),
    Case("yaml-not-hcl", tfvars(A, "s3_buckets:\n  a: 1\n"), 2, (A,)),
    Case("expression", tfvars(A, "s3_buckets = var.other\n"), 2, (A, "Variables not allowed")),
    Case("function-call", tfvars(A, 's3_buckets = tomap({})\n'), 2, (A, "Function calls not allowed")),
    Case("interpolation", tfvars(A, 's3_buckets = { a = { name = "${var.x}" } }\n'), 2, (A, "Variables not allowed")),
    Case("block", tfvars(A, 'resource "x" "y" {\n}\n'), 2, (A, "Blocks are not allowed")),
    # Terraform accepts a file that sets nothing: a warning, and no deployment from it
    Case("empty", tfvars(A, ""), 0, (A, "warning", "sets no variables")),
    Case("only-comments", tfvars(A, "# nothing\n// here\n/* at all */\n"), 0, (A, "warning", "sets no variables")),
    Case("binary-junk", tfvars(A, b"\x7fELF\x02\x01\x01\x00\x00\x00"), 2, (A, "binary")),
    Case("latin1", tfvars(A, b's3_buckets = { a = { name = "caf\xe9" } }\n'), 2, (A, "not UTF-8")),
    Case("huge", tfvars(A, "s3_buckets = {}\n" + "# pad\n" * 1_000_000), 2, (A, "the limit is")),
    Case("no-service", tfvars(A, 'tags = { team = "x" }\n'), 2, (A, "no known service")),
    Case("missing-ref", tfvars(A, 'iam_roles = { r = { policy_file = "nope.json" } }\n'), 2, (A, "does not exist")),
    Case("escaping-ref", tfvars(A, 'iam_roles = { r = { policy_file = "../../../etc/shadow.json" } }\n'), 2,
         (A, "outside the repository")),
    Case("absolute-ref", tfvars(A, 'iam_roles = { r = { policy_file = "/etc/passwd.json" } }\n'), 2,
         (A, "absolute path")),
    Case("bad-region", tfvars(A, 's3_buckets = {}\nregion = "us-east-1/../../x"\n'), 2, (A, "region")),
    Case("space-in-account", tfvars("Accounts/my acct/p.tfvars", "s3_buckets = {}\n"), 2,
         ("Accounts/my acct/p.tfvars", "not a safe name")),
    Case("shell-in-account", tfvars("Accounts/a;rm -rf/p.tfvars", "s3_buckets = {}\n"), 2, ("not a safe name",)),
    Case("leading-dash", tfvars("Accounts/-acct/p.tfvars", "s3_buckets = {}\n"), 2, ("not a safe name",)),
    Case("cyrillic-homoglyph", tfvars("Accounts/\u0430cct/p.tfvars", "s3_buckets = {}\n"), 2, ("not a safe name",)),
    Case("zero-width-space", tfvars("Accounts/ac\u200bct/p.tfvars", "s3_buckets = {}\n"), 2, ("not a safe name",)),
    Case("rtl-override", tfvars("Accounts/acct\u202e/p.tfvars", "s3_buckets = {}\n"), 2, ("not a safe name",)),
    Case("newline-in-name", tfvars("Accounts/ac\nct/p.tfvars", "s3_buckets = {}\n"), 2, ("control characters",)),
    Case("symlink-out-of-repo", symlink(A, outside), 2, ("outside the repository",)),
    Case("explicit-out-of-tree", lambda root: ["validate", str(outside(root))], 2, ("outside the repository",)),
    Case("dotdot-path", argv("validate", "Accounts/../../elsewhere.tfvars"), 2, ("'..'",)),
    Case("missing-path", argv("validate", "Accounts/none/x.tfvars"), 2, ("does not exist",)),
    Case("not-tfvars", argv("validate", "terraform/main.tf"), 2, ("not a .tfvars or .tfvars.json file",)),
    Case("changed-files-missing", argv("validate", "--changed-files", "no-such-list.txt"), 2,
         ("no-such-list.txt", "cannot be read")),
    Case("bad-git-diff", argv("validate", "--git-diff", "nope..HEAD"), 2, ("--git-diff", "nope")),
    Case("option-injection-git-diff", argv("validate", "--git-diff", "--output=/tmp/x"), 2, ("--git-diff",)),
    Case("toml-syntax", config("[tfo\n"), 2, ("tfo.toml", "not valid TOML")),
    Case("toml-unknown-key", config("[tfo]\nmodule_dri = 'x'\n"), 2, ("tfo.toml", "unknown key 'module_dri'")),
    Case("toml-bad-type", config("[tfo]\nmax_workers = 'lots'\n"), 2, ("max_workers",)),
    Case("toml-bad-rollback", config("[tfo]\nrollback = 'pray'\n"), 2, ("rollback",)),
    Case("toml-module-outside", config("[tfo]\nmodule_dir = '/etc'\n"), 2,
         ("module_dir", "relative to the repository")),
    Case("toml-module-dotdot", config("[tfo]\nmodule_dir = '../elsewhere'\n"), 2, ("module_dir", "'..'")),
    Case("toml-template-repeated", config("[tfo]\npath_template = '{account}/{account}.tfvars'\n"), 2,
         ("path_template", "more than once")),
    Case("toml-template-absolute", config("[tfo]\npath_template = '/srv/{account}.tfvars'\n"), 2,
         ("path_template", "relative to the repository")),
    Case("module-symlink-out", symlink("terraform/creds.json", outside), 2, ("terraform/creds.json", "symlink")),
    Case("bad-run-id", argv("runs", "show", "../../etc/passwd"), 2, ("run id",)),
    Case("bad-deployment-id", argv("backups", "list", "s3/../x/y"), 2, ("deployment",)),
    Case("bad-audit-run-id", argv("audit", "show", "x; rm"), 2, ("run id",)),
    Case("unknown-run", argv("runs", "show", "20260101T000000Z-abcdef"), 2, ("20260101T000000Z-abcdef",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "terraform").mkdir(parents=True)
    (root / "terraform/main.tf").write_text(MODULE)
    (root / "Accounts/ok").mkdir(parents=True)
    (root / "Accounts/ok/fine.tfvars").write_text("s3_buckets = {}\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    args = case.setup(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TFO_TERRAFORM_BIN": str(tmp_path / "no-terraform-needed")}
    r = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=root, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == case.code, (r.stdout, r.stderr)
    for text in case.expect:
        assert text in r.stderr, (text, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert not (root / ".tfo" / "work").exists()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
