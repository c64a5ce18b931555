"""HCL as Terraform reads it: tokens, a syntax tree with offsets, and constant values.

tfo reads tfvars files and module sources itself (to shard, validate, select and bundle), and hands
Terraform the original text, so what matters here is to cut the text where Terraform does and to
refuse what Terraform refuses, with the line it names.
"""

from __future__ import annotations

from orchestrator.hcl.lexer import HclError, tokenize
from orchestrator.hcl.syntax import Body, parse_body

__all__ = ["HclError", "Lines", "parse_file"]


def parse_file(text: str) -> Body:
    """A whole file's body; HclError at the first thing Terraform would refuse."""
    return parse_body(tokenize(text))


class Lines:
    """Line numbers (from 1) of offsets in one text; cheapest when asked in increasing order."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1

    def of(self, pos: int) -> int:
        if pos < self._pos:
            self._pos, self._line = 0, 1
        self._line += self._text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line
