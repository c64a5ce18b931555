"""The line reader for plain literals returns exactly what the full reader returns, or steps aside."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from orchestrator.hcl.literal_lines import read_literal_lines
from orchestrator.tfvars import parse_tfvars_text

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "tfvars-corpus"


def both(text: str) -> tuple[object, object]:
    fast = parse_tfvars_text(text, "x.tfvars", compiled=False)  # the Python line reader (test_literal_c: the other)
    full = parse_tfvars_text(text, "x.tfvars", fast=False)
    return fast, full


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*/*.tfvars")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_files_read_the_same(path: Path) -> None:
    text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    fast, full = both(text)
    assert fast == full


LITERAL = {
    "scalars": 'a = "x"\nb = 1\nc = -2.5\nd = true\ne = null\nf = 1e3\n',
    "comments": '# c\na = 1 # trailing\n// other\nb = "#not a comment" // c\n\n\n',
    "nested": 'a = {\n  b = {\n    c = [1, 2, { d = "e" }]\n  }\n  "quoted key" = 1,\n  colon: 2\n}\n',
    "lists": 'a = [\n  "x",\n  "y",\n]\nb = [\n  { k = 1 },\n  { k = 2 }\n]\nc = [\n  [1, 2],\n  []\n]\n',
    "heredocs": 'a = <<EOT\nx\n  y\nEOT\nb = <<-EOT\n    p\n      q\n    EOT\nc = {\n  d = <<EOT\nin object\nEOT\n}\n',
    "crlf": 'a = {\r\n  b = 1\r\n}\r\nc = <<EOT\r\nline\r\nEOT\r\n',
    "escapes": 'a = "tab\\there \\"q\\" \\u00e9 $${x} %%{y}"\nb = { "k\\"ey" = 1 }\n',
    "file refs": ('policy_file = "p.json"\nroles = {\n  r = { policy_file = "a.json", other = "b.json" }\n'
                  '  s = {\n    doc_files = ["c.json", "d.json"]\n    policy_file = null\n  }\n}\n'),
    "no final newline": 'a = { b = 1 }',
    "empty containers": "a = {}\nb = []\nc = {\n}\nd = [\n]\n",
}


@pytest.mark.parametrize("name", sorted(LITERAL))
def test_literal_files_take_the_line_reader_and_agree(name: str) -> None:
    text = LITERAL[name]
    assert read_literal_lines(text, lambda k: k.endswith(("_file", "_files"))) is not None, "stepped aside"
    fast, full = both(text)
    assert fast == full


STEP_ASIDE = [
    'a = "${1 + 1}"\n', "a = 1 + 1\n", "a = var.x\n", "a = [\n  1\n  2\n]\n", "a = { b = 1 c = 2 }\n",
    "a = 1,\n", "a = 1\na = 2\n", "/* c */ a = 1\n", "a = {\n  b = 1\n", '"a" = 1\n', "a: 1\n",
    "a = <<EOT\n${x}\nEOT\n", "a = - 1\n", "a = 0x10\n", 'a = { policy_file = { x = 1 } }\n', "a = b\n",
    "blk {\n}\n", 'a = "x\\qy"\n', "a = [1, 2\n  , 3]\n", "a = 1\rb = 2\n", "a = {\n  b = 1\n},\n",
]


@pytest.mark.parametrize("text", STEP_ASIDE)
def test_steps_aside_and_the_full_reader_decides(text: str) -> None:
    assert read_literal_lines(text, lambda k: k.endswith("_file")) is None
    fast, full = both(text)
    assert fast == full


def _random_value(rng: random.Random, depth: int, indent: str) -> str:
    kind = rng.random()
    if depth > 2 or kind < 0.5:
        return rng.choice(['"s"', '"a b"', '"esc\\"aped"', "1", "-3", "2.5", "1e3", "true", "false", "null",
                           '"x.json"', '"é"'])
    if kind < 0.65:
        items = ", ".join(_random_value(rng, depth + 1, indent) for _ in range(rng.randint(0, 3)))
        return "{ " + ", ".join(f"k{i} = {_random_value(rng, depth + 1, indent)}" for i in range(rng.randint(0, 3))) \
            + " }" if rng.random() < 0.5 else f"[{items}]"
    inner = indent + "  "
    if kind < 0.85:
        names = ["k{}", "policy_file{}", "name{}", '"q k{}"']
        body = "".join(f"{inner}{rng.choice(names).format(i)} "
                       f"{rng.choice(['=', ':'])} {_random_value(rng, depth + 1, inner)}{rng.choice(['', ','])}\n"
                       for i in range(rng.randint(0, 4)))
        return "{\n" + body + indent + "}"
    n = rng.randint(0, 3)
    body = "".join(f"{inner}{_random_value(rng, depth + 1, inner)}{',' if i < n - 1 or rng.random() < 0.5 else ''}\n"
                   for i in range(n))
    return "[\n" + body + indent + "]"


def test_random_literal_files_agree() -> None:
    rng = random.Random(20261127)
    taken = 0
    for _ in range(400):
        lines = []
        for i in range(rng.randint(1, 6)):
            if rng.random() < 0.2:  # a file reference: a path, a list of them, nothing, or (rarely) not a path
                value = rng.choice(['"p.json"', '["a.json", "b.json"]', "null", '""', _random_value(rng, 0, "")])
                lines.append(f"v{i}_file = {value}")
            else:
                lines.append(f"v{i} = {_random_value(rng, 0, '')}")
        text = "\n".join(lines) + rng.choice(["\n", "", "\n# end\n"])
        if rng.random() < 0.3:
            text = text.replace("\n", "\r\n")
        fast, full = both(text)
        assert fast == full, text
        taken += read_literal_lines(text, lambda k: k.endswith("_file")) is not None
    assert taken > 160  # many generated files are in the subset: the comparison means something
