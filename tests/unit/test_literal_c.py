"""The compiled reader for plain literals (orchestrator/hcl/_literal.c) returns exactly what the full
reader returns, or steps aside; on hostile input (mutations, deep nesting, huge numbers) it never
answers differently and never crashes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ops.bench.validate import realistic_tfvars
from orchestrator.tfvars import _number, parse_tfvars_text
from tests.unit.test_literal_lines import LITERAL, STEP_ASIDE, _random_value

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "tfvars-corpus"


def compiled() -> Any:
    try:
        from orchestrator.hcl import _literal
    except ImportError:
        pytest.fail("orchestrator/hcl/_literal.c is not built: install gcc and run `make setup` (setup.py builds it)")
    return _literal


def read(text: str) -> Any:
    return compiled().read(text, _number)


def agrees(text: str) -> bool:
    """False when the compiled reader steps aside; True when it read the file as the full reader does."""
    got = read(text)
    full = parse_tfvars_text(text, "x.tfvars", fast=False, file_keys=())  # file keys are tfo's, not Terraform's
    if got is None:
        return False
    attributes, keys = got
    assert full.problems == (), f"the compiled reader took a file Terraform refuses: {text!r}"
    # repr: 1, 1.0 and True are equal in Python, not in Terraform
    assert repr(attributes) == repr([(a.name, a.start, a.end, a.value, []) for a in full.attributes]), text
    assert {a.name for a in full.attributes} <= keys
    return True


def test_the_compiled_reader_is_built() -> None:
    assert compiled().read("a = 1\n", _number) == ([("a", 0, 5, 1, [])], {"a"})


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*/*.tfvars")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_files_are_read_as_the_full_reader_reads_them_or_left_to_it(path: Path) -> None:
    text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    taken = agrees(text)
    if path.parent.name == "invalid":
        assert not taken


@pytest.mark.parametrize("name", sorted(LITERAL))
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_plain_literal_files_are_taken(name: str, newline: str) -> None:
    text = LITERAL[name] if "\r" in LITERAL[name] else LITERAL[name].replace("\n", newline)
    if name == "file refs":
        assert agrees(text)  # read; parse_tfvars_text hands it to the Python line reader for its references
        fast = parse_tfvars_text(text, "x.tfvars")
        assert fast.attributes[0].file_refs and fast == parse_tfvars_text(text, "x.tfvars", fast=False)
        return
    assert agrees(text), "stepped aside"


STEPS_ASIDE_TOO = [
    'a = "$$x"\n', 'a = "\\ud800"\n', 'a = "\\U00110000"\n', 'a = "\\u00e"\n', 'a = "\\q"\n', 'a = "%{ if x }"\n',
    "a = { for = 1 }\n", "a = {\n  true = 1\n}\n",
    "null = 1\n", "a = { b = 1, b = 2 }\n", "a = {\n  b = 1\n  b = 2\n}\n", "a = <<EOT \nx\nEOT\n",
    "a = <<EOT\nx\n", "a = <<EOT\n${x}\nEOT\n", "a = <<-EOT\n  %{if true}x%{endif}\n  EOT\n",
    "a = [\n<<EOT\nx\nEOT\n]\n",
    "é = 1\n", "a = 1é\n", "a = trueé\n", "a = [1 2]\n", "a = [1,\n2]\n", "a = {\n  b = 1 c = 2\n}\n",
    "a = 1.\n", "a = 1.5e\n", "a = .5\n", "a = +1\n", "a = -\n", "a = 1 /* c */\n", "a = 1 /\n", "a =\n1\n",
    "a = {\n", "a = [\n  1\n  2\n]\n", "a = [\n  1,\n  x = 2\n]\n", "a = {\n  1 = 2\n}\n", "a = \"x\ny\"\n",
    "a = 1\r\n\rb = 2\r\n", "a = {\n  b = 1\n},\n", "a = { b = 1 },\n", "a = \"x\",\n", "a = 1\n}\n",
    "a = {\n  b = [\n    1\n  }\n}\n", "a = \"unterminated\n", "\ufeffa = 1\n",
    "a = {\n  b = <<EOT\nx\nEOT\n  ,\n}\n",
]


@pytest.mark.parametrize("text", [t for t in STEP_ASIDE if "_file" not in t] + STEPS_ASIDE_TOO)
def test_steps_aside_outside_the_subset(text: str) -> None:
    assert read(text) is None
    assert parse_tfvars_text(text, "x.tfvars") == parse_tfvars_text(text, "x.tfvars", fast=False)


HEREDOCS = [
    "a = <<EOT\nEOT\n", "a = <<-EOT\nEOT\n", "a = <<-EOT\n\n    x\n\n  y\n   \n  EOT\n",
    "a = <<-EOT\n\tx\n\t\ty\n\tEOT\n", "a = <<-EOT\n \u00a0x\n  y\n  EOT\n",
    "a = <<EOT\n$${x} %%{y} $$$${z} $ % $$ %%\n  EOT  \n", "a = <<-EOT\n  x\r\n    y\r\n  EOT\r\n",
    "a = <<EOT\nEOTX\nEOT\n", "a = {\n  b = <<-JSON\n    {\"k\": 1}\n    JSON\n  c = 2\n}\n",
    "a = <<EOT\n\u3000EOT\u3000\n", "a = <<-EOT\n    x\n  \u2003y\n  EOT\n",
]


@pytest.mark.parametrize("text", HEREDOCS)
def test_heredocs_read_as_the_full_reader_reads_them(text: str) -> None:
    assert agrees(text)


def test_the_benchmark_files_are_taken_and_agree() -> None:
    for i in range(8):  # every fourth file has Windows line endings
        assert agrees(realistic_tfvars(i)), i


def test_nesting_deeper_than_the_limit_steps_aside_without_crashing() -> None:
    assert agrees("a = " + "[" * 40 + "]" * 40 + "\n")
    assert read("a = " + "[" * 5000 + "]" * 5000 + "\n") is None
    deep = "a = {\n" + "".join(f"{' ' * i}k{i} = {{\n" for i in range(100)) + "".join("}\n" for _ in range(101))
    assert read(deep) is None
    assert agrees("a = {\n" + "".join(f"k{i} = {{\n" for i in range(50)) + "".join("}\n" for _ in range(51)))


def test_numbers_are_the_full_readers_numbers() -> None:
    for n in ["0", "007", "-0", "-007", "12345678901234567890123", "1.0", "2.50e1", "1e3", "1E-3", "-1.5e-3", "0.1",
              "1e+2", "123456789.123456789"]:
        assert agrees(f"a = {n}\nb = [{n}, {n}]\n"), n
    # negated exactly, as Terraform does (Decimal's `-` rounds to 28 digits)
    for n in ["-1.00000000000000000000000000001", "-12345678901234567890123456789012e0"]:
        assert agrees(f"a = {n}\n"), n


@pytest.mark.parametrize("n", ["1" * 5000, "1e1000000", "-1e1000000", "1e-1000000", "-1e3000000000"])
def test_absurd_numbers_are_read_at_once_by_every_reader(n: str) -> None:
    """A hostile file must not stall tfo: an int of a million digits took minutes; beyond 4,000 digits tfo
    keeps a float for its own decisions (Terraform reads the text itself)."""
    import time

    start = time.monotonic()
    text = f"a = {n}\nb = [{n}]\n"
    full = parse_tfvars_text(text, "x.tfvars", fast=False)
    assert full.problems == () and isinstance(full.attributes[0].value, float)
    assert agrees(text)
    assert parse_tfvars_text(text, "x.tfvars", compiled=False) == full
    assert time.monotonic() - start < 5


def test_random_literal_files_agree() -> None:
    rng = random.Random(20261128)
    taken = 0
    for _ in range(300):
        text = "\n".join(f"v{i} = {_random_value(rng, 0, '')}" for i in range(rng.randint(1, 6))) + "\n"
        if rng.random() < 0.3:
            text = text.replace("\n", "\r\n")
        taken += agrees(text)
    assert taken > 150


MUTATIONS = [*'{}[](),=:#/\\"$%\n\r\t -.e<>EOT0a_', "é", "\u00a0", "${", "<<EOT\n", "//", "/*", "\r\n"]


def test_mutated_files_are_read_right_or_left_to_the_full_reader() -> None:
    """The safety net: whatever a hostile file looks like, the compiled reader's answer is never wrong."""
    rng = random.Random(1128)
    base = [realistic_tfvars(1)[:1200] + "\n", realistic_tfvars(4)[:900] + "\r\n"]
    base += ["\n".join(f"v{i} = {_random_value(rng, 0, '')}" for i in range(4)) + "\n" for _ in range(20)]
    base += list(LITERAL.values()) + HEREDOCS
    taken = 0
    for _ in range(2500):
        text = rng.choice(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4:
                text = text[:at] + rng.choice(MUTATIONS) + text[at:]
            elif op < 0.7:
                text = text[:at] + text[at + 1:]
            else:
                text = text[:at] + rng.choice(MUTATIONS) + text[at + 1:]
        taken += agrees(text)
    assert taken > 200  # many mutants stay in the subset: the comparison means something


@pytest.mark.parametrize("text", [LITERAL["file refs"], 'x = { policy_file = "a.json" }\n', 'doc_files = ["a", "b"]\n'])
def test_a_file_with_file_keys_gets_its_references(text: str) -> None:
    got = parse_tfvars_text(text, "x.tfvars")
    assert got == parse_tfvars_text(text, "x.tfvars", fast=False) and any(a.file_refs for a in got.attributes)
    assert parse_tfvars_text(text, "x.tfvars", file_keys=()) == parse_tfvars_text(text, "x.tfvars", file_keys=(),
                                                                                 fast=False)
