"""The fast literal reader must agree with python-hcl2 on everything it accepts, and leave the rest to it."""

from __future__ import annotations

import json
import random

import pytest

from orchestrator.tfvars import parse_with_hcl2
from orchestrator.tfvars_fast import parse_literal_tfvars

ACCEPTED = [
    'region = "us-west-2"\n',
    'a = "x"\nb = 2\nc = 2.5\nd = true\ne = false\n',
    'tags = { team = "data", "cost-center" = "42" }\n',
    'm = {\n  a = 1\n  b: "two"\n  c = [1, 2,\n 3,]\n}\n',
    'l = [\n  { name = "a" },\n  { name = "b", nested = { deep = [true, false] } },\n]\n',
    '# comment\n// another\na = "v" # trailing\nb = 1 // trailing too\n',
    'quote = "say \\"hi\\" \\\\ and \\n newline \\t tab"\n',
    'unicode = "naïve ☃ 日本"\n',
    'dollar = "costs $5 and 100%"\n',
    'with-dash = 1\n_under = "x"\n',
    'a = "x"\r\nb = 1\r\n',
    'empty_list = []\nempty_map = {}\nempty_string = ""\n',
    's3_buckets = {\n  raw = { versioning = true, delay_seconds = 2 }\n}\npolicy = "policies/x.json"\n',
    'zero = 0\nbig = 12345678901234567890\nfrac = 0.125\n',
]

FALLBACK = [
    'a = null\n',
    'a = -1\n',
    'a = 1e3\n',
    'a = "${var.x}"\n',
    'a = "%{ if true }x%{ endif }"\n',
    'a = "$${literal}"\n',
    'a = var.x\n',
    'a = upper("x")\n',
    'a = <<EOT\nhello\nEOT\n',
    'block {\n  a = 1\n}\n',
    'a = 1\na = 2\n',
    'a = 1 b = 2\n',
    'm = { a = 1 b = 2 }\n',
    'm = { a = 1, a = 2 }\n',
    'naïve = 1\n',
    '/* multi\nline */\na = 1\n',
    '/* inline */ a = 1\n',
    'a = "\\u00e9"\n',
    'a = "unterminated\n',
    'a = [1 2]\n',
    'a = 1.\n',
    'a = { "k\\"q" = 1 }\n',
    'a = 1 + 2\n',
    'a = "x"\n}\n',
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_files_read_the_same_as_python_hcl2(text: str) -> None:
    fast = parse_literal_tfvars(text)
    assert fast is not None, "expected the fast path to take this file"
    slow = parse_with_hcl2(text, "x.tfvars")
    assert slow.problems == ()
    assert fast == slow.variables
    assert json.dumps(fast) == json.dumps(slow.variables)  # same types too (int vs float, bool)


@pytest.mark.parametrize("text", FALLBACK)
def test_everything_else_is_left_to_python_hcl2(text: str) -> None:
    assert parse_literal_tfvars(text) is None


_CHARS = "abcXYZ019 -_./:@#$%{}[]=,\"\\\t'é☃"


def _random_string(rng: random.Random) -> str:
    raw = "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 12)))
    out = []
    for ch in raw:  # write it as an HCL string literal
        out.append({'"': '\\"', "\\": "\\\\", "\t": "\\t"}.get(ch, ch))
    return '"' + "".join(out) + '"'


def _random_value(rng: random.Random, depth: int) -> str:
    kind = rng.choice(["str", "int", "float", "bool"] + (["list", "map"] if depth < 3 else []))
    if kind == "str":
        return _random_string(rng)
    if kind == "int":
        return str(rng.randint(0, 10**6))
    if kind == "float":
        return f"{rng.randint(0, 999)}.{rng.randint(0, 999)}"
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "list":
        items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        sep = rng.choice([", ", ",\n", " ,"])
        return "[" + sep.join(items) + rng.choice(["", ","]) + "]"
    keys = {f"k{rng.randint(0, 50)}" for _ in range(rng.randint(0, 4))}
    sep = rng.choice([", ", "\n"])
    body = sep.join(f"{k} {rng.choice(['=', ':'])} {_random_value(rng, depth + 1)}" for k in sorted(keys))
    return "{" + (f"\n{body}\n" if sep == "\n" else body) + "}"


def test_random_literal_files_agree_with_python_hcl2() -> None:
    rng = random.Random(1125)
    taken = 0
    for _ in range(300):
        names = sorted({f"v{rng.randint(0, 30)}" for _ in range(rng.randint(1, 5))})
        text = "".join(f"{n} = {_random_value(rng, 0)}\n" for n in names)
        fast = parse_literal_tfvars(text)
        slow = parse_with_hcl2(text, "x.tfvars")
        if fast is None:
            continue
        taken += 1
        assert slow.problems == (), text
        assert json.dumps(fast, sort_keys=True) == json.dumps(slow.variables, sort_keys=True), text
    assert taken > 200  # the generator writes literals: most files must take the fast path


def test_a_comment_only_file_is_empty_either_way() -> None:
    assert parse_literal_tfvars("# nothing here\n\n// nor here\n") == {}
