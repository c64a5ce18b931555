from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tfvars import MAX_TFVARS_BYTES, parse_tfvars, sensitive_variables


def parse(tmp_path: Path, text: str | bytes) -> tuple[dict, list[str]]:  # type: ignore[type-arg]
    p = tmp_path / "x.tfvars"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    r = parse_tfvars(p, "Accounts/a/x.tfvars")
    return r.variables, [str(x) for x in r.problems]


def test_literals_become_plain_python(tmp_path: Path) -> None:
    variables, problems = parse(tmp_path, '''
region = "us-west-2"  # comment
count  = 3
ratio  = 1.5
on     = true
none   = null
quoted = "say \\"hi\\"\\n"
list   = ["a", 2, false]
nested = { "key with space" = { deep = ["x"] } }
doc    = <<EOT
line one
line two
EOT
''')
    assert problems == []
    assert variables == {
        "region": "us-west-2", "count": 3, "ratio": 1.5, "on": True, "none": None, "quoted": 'say "hi"\n',
        "list": ["a", 2, False], "nested": {"key with space": {"deep": ["x"]}}, "doc": "line one\nline two\n",
    }


@pytest.mark.parametrize("text, expected, line", [
    ('a = 1\nb = {\n  c = \n}\n', "HCL syntax error", 3),
    ('a = "unterminated\n', "HCL syntax error", 1),
    ("a = 1\nb = var.other\n", "literal values only", 2),
    ('a = 1\nb = "${var.x}-y"\n', "interpolation", 2),
    ('a = 1\nb = upper("x")\n', "literal values only", 2),
    ('resource "x" "y" {\n}\n', "is a block", None),
])
def test_problems_name_file_and_line(tmp_path: Path, text: str, expected: str, line: int | None) -> None:
    _, problems = parse(tmp_path, text)
    assert len(problems) == 1
    assert expected in problems[0]
    prefix = f"Accounts/a/x.tfvars:{line}:" if line else "Accounts/a/x.tfvars:"
    assert problems[0].startswith(prefix)


@pytest.mark.parametrize("data, expected", [
    (b"", "is empty"),
    (b"   \n# just a comment\n/* block */\n", "is empty"),
    (b"\x00\x01\x02", "binary"),
    (b"a = \"\xff\xfe\"\n", "not UTF-8"),
    (b"a = 1\n" * (MAX_TFVARS_BYTES // 6 + 1), "the limit is"),
])
def test_unusable_files(tmp_path: Path, data: bytes, expected: str) -> None:
    _, problems = parse(tmp_path, data)
    assert len(problems) == 1 and expected in problems[0]


def test_sensitive_variables_read_from_the_module(tmp_path: Path) -> None:
    (tmp_path / "vars.tf").write_text('''
variable "token" {
  type      = string
  sensitive = true
}
variable "name" { type = string }
variable "password" {
  sensitive = false
}
''')
    (tmp_path / "broken.tf").write_text("this is { not hcl")
    assert sensitive_variables(tmp_path) == ("token",)
