"""What tfo reads from a module's .tf files: sensitive variables (checked against python-hcl2), local
module calls and the files read through path.module."""

from __future__ import annotations

import random

import pytest

from orchestrator.modules import ModuleFacts, _facts
from tests.helpers import EXAMPLE


def sensitive_variable_names(text: str) -> set[str] | None:
    facts = _facts({"main.tf": text.encode()})
    return None if facts.unread else set(facts.sensitive)


def sensitive_variables_hcl2(text: str) -> set[str]:
    import hcl2

    names: set[str] = set()
    for block in hcl2.loads(text).get("variable", []):
        for name, body in block.items():
            if isinstance(body, dict) and body.get("sensitive") is True:
                names.add(name.strip('"'))
    return names

AGREE = {
    "example module": (EXAMPLE / "terraform" / "main.tf").read_text(),
    "plain": 'variable "token" {\n  type      = string\n  sensitive = true\n}\n'
             'variable "region" {\n  default = "x"\n}\n',
    "false": 'variable "a" {\n  sensitive = false\n}\n',
    "one line": 'variable "a" { sensitive = true }\nvariable "b" { default = 1 }\n',
    "validation block": 'variable "a" {\n  sensitive = true\n  validation {\n    condition     = length(var.a) > 3\n'
                        '    error_message = "Too short: {x}."\n  }\n}\n',
    "object type with a field named sensitive": 'variable "cfg" {\n  type = object({\n    sensitive = bool\n'
                                                '  })\n  default = { sensitive = true }\n}\n',
    "output and locals are not variables": 'output "o" {\n  value     = 1\n  sensitive = true\n}\n'
                                           'locals {\n  sensitive = true\n}\n',
    "resource attribute": 'resource "tfotest_thing" "x" {\n  name      = "n"\n  sensitive = true\n}\n',
    "comments": '# variable "c" { sensitive = true }\n// sensitive = true\nvariable "d" {\n  /* x */ sensitive = true\n'
                '  # sensitive = false\n}\n',
    "string holding the words": 'variable "s" {\n  default = "sensitive = true }"\n}\nvariable "t" {\n'
                                '  description = "a } brace and a ${var.x} and ${"nested }"} %{ if true }y%{ endif }"\n'
                                '  sensitive   = true\n}\n',
    "heredoc": 'variable "h" {\n  description = <<-EOT\n    sensitive = true\n    }\n    EOT\n  sensitive = true\n}\n'
               'variable "i" {\n  default = <<EOF\n}\nEOF\n}\n',
    "escapes": 'variable "e" {\n  default = "quote \\" and $${literal} and %%{literal}"\n  sensitive = true\n}\n',
    "map default": 'variable "m" {\n  default = {\n    a = [1, 2, { sensitive = true }]\n  }\n  sensitive = true\n}\n',
    "expression default": 'variable "x" {\n  default   = 1 + 2 * 3 >= 4 ? "a" : "b"\n  nullable  = false\n'
                          '  sensitive = true\n}\n',
    "other blocks first": 'terraform {\n  required_providers {\n    t = { source = "example.com/test/t" }\n  }\n}\n'
                          'provider "t" {}\nvariable "after" {\n  sensitive = true\n}\n',
}


@pytest.mark.parametrize("name", sorted(AGREE))
def test_agrees_with_python_hcl2(name: str) -> None:
    text = AGREE[name]
    assert sensitive_variable_names(text) == sensitive_variables_hcl2(text), text


def test_finds_what_it_should() -> None:
    assert sensitive_variable_names(AGREE["example module"]) == {"api_token"}
    assert sensitive_variable_names(AGREE["plain"]) == {"token"}
    assert sensitive_variable_names(AGREE["string holding the words"]) == {"t"}
    assert sensitive_variable_names(AGREE["heredoc"]) == {"h"}
    assert sensitive_variable_names(AGREE["output and locals are not variables"]) == set()


@pytest.mark.parametrize("text", [
    'variable "a" {\n  sensitive = var.flag\n}\n',  # not a literal
    'variable "a" {\n  sensitive = "true"\n}\n',  # a string
    'variable "a" {\n  /* a comment\n  across lines */ sensitive = true\n}\n',
])
def test_unusual_but_valid_modules_agree_with_python_hcl2(text: str) -> None:
    assert sensitive_variable_names(text) == sensitive_variables_hcl2(text), text


def test_a_label_written_as_an_identifier() -> None:
    assert sensitive_variable_names('variable ä {\n  sensitive = true\n}\n') == {"ä"}  # python-hcl2 refuses it


@pytest.mark.parametrize("text", [
    'variable "a" {\n  sensitive = true\n',  # unbalanced
    'variable "a" {\n  default = "unterminated\n}\n',
    'variable "a" {\n  default = <<EOT\nno end\n}\n',
    'variable "a" {\n  sensitive = true\n} /* unterminated',
])
def test_files_tfo_cannot_read_are_recorded_with_a_line(text: str) -> None:
    facts = _facts({"main.tf": text.encode()})
    assert facts.unread and facts.unread[0][0] == "main.tf" and facts.unread[0][1] >= 1


def test_a_file_tfo_cannot_read_still_has_its_local_modules_followed() -> None:
    """Newer Terraform syntax must not block a deployment: its module calls are found by a plain scan."""
    text = ('module "net" {\n  source = "../modules/net"\n}\nlocals {\n  x = !!! future syntax\n}\n')
    facts = _facts({"main.tf": text.encode()})
    assert facts.unread and facts.calls == ("../modules/net",)


def test_provider_defined_functions_parse() -> None:
    facts = _facts({"main.tf": b'locals {\n  a = provider::aws::arn_parse("arn:aws:iam::1:role/x")\n}\n'})
    assert facts.unread == ()


def test_local_module_calls_and_path_module_reads() -> None:
    text = """
module "net" {
  source = "../modules/network"
}
module "reg" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.0.0"
}
module "git" {
  source = "git::https://example.com/x.git"
}
module "here" { source = "./nested" }
resource "x" "y" {
  policy   = file("${path.module}/policies/bucket.json")
  template = templatefile("${path.module}/../shared/templates/${var.kind}.tpl", {})
  files    = fileset(path.module, "configs/*.yaml")
  root     = file("${path.root}/root.txt")
}
"""
    facts = _facts({"main.tf": text.encode()})
    assert facts == ModuleFacts(calls=("../modules/network", "./nested"),
                                reads=("policies/bucket.json", "../shared/templates/", "configs/*.yaml"),
                                root_reads=("root.txt",))


_PIECES = [
    '  type = string\n', '  default = "a}b{c"\n', '  default = { k = "v", sensitive = true }\n',
    '  description = "x ${var.y} ${"}"} z"\n', '  # sensitive = true\n', '  // }\n',
    '  description = <<-EOT\n    sensitive = true\n    }\n  EOT\n', '  nullable = false\n',
    '  validation {\n    condition     = var.v != "}"\n    error_message = "Bad."\n  }\n',
    '  type = list(object({ a = string, sensitive = bool }))\n', '  default = [1, 2.5, -3]\n',
]


def test_random_modules_agree_with_python_hcl2() -> None:
    rng = random.Random(20261126)
    found = 0
    for _ in range(150):
        blocks = []
        for i in range(rng.randint(1, 6)):
            kind = rng.choice(["variable", "variable", "variable", "output", "locals", "resource"])
            body = rng.sample(_PIECES, rng.randint(0, 4))
            flag = rng.choice([None, "true", "false"])
            if flag and kind != "locals":
                body.insert(rng.randint(0, len(body)), f"  sensitive = {flag}\n")
            head = {"variable": f'variable "v{i}"', "output": f'output "o{i}"', "locals": "locals",
                    "resource": f'resource "tfotest_thing" "r{i}"'}[kind]
            if kind == "output":
                body.append("  value = 1\n")
            blocks.append(f"{head} {{\n{''.join(body)}}}\n")
        text = "\n".join(blocks)
        assert sensitive_variable_names(text) == sensitive_variables_hcl2(text), text
        found += bool(sensitive_variables_hcl2(text))
    assert found > 50  # the generator does produce sensitive variables
