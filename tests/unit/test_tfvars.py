from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tfvars import MAX_TFVARS_BYTES, parse_tfvars


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
    ('a = 1\nb = {\n  c = \n}\n', "Invalid expression", 3),
    ('a = "unterminated\n', "Invalid multi-line string", 1),
    ("a = 1\nb = var.other\n", "Variables not allowed", 2),
    ('a = 1\nb = "${var.x}-y"\n', "Variables not allowed", 2),
    ('a = 1\nb = upper("x")\n', "Function calls not allowed", 2),
    ('resource "x" "y" {\n}\n', "Unexpected 'resource' block", 1),
    ('\n\n\n# c\n\na = 1\n\n\nb = nope\n', "Variables not allowed", 9),  # blank lines do not shift it
    ('a = {\n  x = 1\n}\n\na = 2\n', "Attribute redefined", 5),
])
def test_problems_name_file_and_line(tmp_path: Path, text: str, expected: str, line: int) -> None:
    _, problems = parse(tmp_path, text)
    assert len(problems) == 1
    assert expected in problems[0]
    assert problems[0].startswith(f"Accounts/a/x.tfvars:{line}:")


@pytest.mark.parametrize("data, expected", [
    (b"\x00\x01\x02", "binary"),
    (b"a = \"\xff\xfe\"\n", "not UTF-8"),
    (b"a = 1\n" * (MAX_TFVARS_BYTES // 6 + 1), "the limit is"),
])
def test_unusable_files(tmp_path: Path, data: bytes, expected: str) -> None:
    _, problems = parse(tmp_path, data)
    assert len(problems) == 1 and expected in problems[0]


@pytest.mark.parametrize("data", [b"", b"   \n# just a comment\n/* block */\n", b"\xef\xbb\xbf# BOM\n"])
def test_files_that_set_nothing_are_a_warning(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "x.tfvars"
    p.write_bytes(data)
    r = parse_tfvars(p, "x.tfvars")
    assert r.problems == () and r.attributes == ()
    assert len(r.warnings) == 1 and "sets no variables" in str(r.warnings[0])
