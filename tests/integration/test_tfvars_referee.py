"""Terraform is the referee: for every file of the corpus, tfo reads what Terraform reads and refuses what
Terraform refuses, on the line Terraform names.

tests/fixtures/tfvars-corpus/valid: files Terraform accepts (LF and CRLF heredocs, escapes, templates,
numbers in every notation, null, unicode keys, a byte-order mark, comments anywhere, JSON). Each value
tfo evaluates for itself must equal Terraform's; what Terraform itself receives from tfo is checked in
test_real_repositories.py (the var files tfo ships are cut from these texts).
tests/fixtures/tfvars-corpus/invalid: files Terraform refuses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tfvars import parse_tfvars
from tests.referee import Referee

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "tfvars-corpus"
VALID = sorted((CORPUS / "valid").iterdir())
INVALID = sorted((CORPUS / "invalid").iterdir())


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (True is not 1, "1" is not 1). Numbers that are not whole may differ in
    the last digits: Terraform computes in 512-bit binary, tfo in exact decimal (10.5 * 3.0 / 2.1 is 15 for
    tfo and 15.000...01 for Terraform); Terraform itself always reads the original text."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b if isinstance(a, int) and isinstance(b, int) else math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def all_names() -> list[str]:
    return [a.name for f in VALID for a in parse_tfvars(f, f.name).attributes]


@pytest.fixture(scope="module")
def referee(terraform: str, tmp_path_factory: pytest.TempPathFactory) -> Referee:
    return Referee(terraform, tmp_path_factory.mktemp("referee"), all_names())


def test_the_corpus_covers_what_the_issue_names() -> None:
    names = {f.name for f in VALID + INVALID}
    raw = {f.name: f.read_bytes() for f in VALID}
    assert any(b"\r\n" in data and b"<<" in data for data in raw.values())  # CRLF heredocs
    assert any(data.startswith(b"\xef\xbb\xbf") for data in raw.values())  # BOM
    assert {"duplicate-attribute.tfvars", "variable-in-heredoc.tfvars", "variable-key.tfvars",
            "invalid-escape.tfvars", "newline-in-string.tfvars", "missing-separator.tfvars"} <= names
    assert len(VALID) >= 15 and len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_tfo_reads_what_terraform_reads(referee: Referee, path: Path) -> None:
    verdict = referee.read(path)
    assert verdict.values is not None, f"Terraform refuses a file of the valid corpus:\n{verdict.error}"
    parsed = parse_tfvars(path, path.name)
    assert parsed.problems == (), parsed.problems
    unknown = [a.name for a in parsed.attributes if not a.known]
    assert unknown == [], f"tfo could not evaluate {unknown}"
    mine = {a.name: a.value for a in parsed.attributes if a.value is not None}
    assert same(mine, verdict.values), (mine, verdict.values)
    assert bool(parsed.warnings) == (not parsed.attributes)  # a file that sets nothing is a warning


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_tfo_refuses_what_terraform_refuses_on_the_same_line(referee: Referee, path: Path) -> None:
    verdict = referee.read(path)
    assert verdict.values is None, f"Terraform accepts a file of the invalid corpus: {verdict.values}"
    parsed = parse_tfvars(path, path.name)
    assert parsed.problems, "tfo accepts what Terraform refuses"
    assert verdict.lines, verdict.error
    # Terraform's first error, or (for broken JSON, where it first says the root is not an object) one of them
    expected = verdict.lines[:1] if not path.name.endswith(".json") else verdict.lines
    assert parsed.problems[0].line in expected, (str(parsed.problems[0]), verdict.error)
