"""A fast reader for the plain-literal tfvars that make up nearly every repo; python-hcl2 does the rest.

python-hcl2 (lark) costs about 2 ms a file, which is 20 s for a 10,000-file repo. Most tfvars are
`name = literal` lines: quoted strings, plain numbers, true/false, lists and objects of those. This
reader accepts exactly that subset and returns what `parse_tfvars` would return for it; on anything
else (heredocs, null, negative or exponent numbers, expressions, blocks, duplicate names, non-ASCII
names, odd escapes, block comments) it returns None and the file goes through python-hcl2, so errors
keep their python-hcl2 messages. tests/unit/test_tfvars_fast.py checks that the two agree.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<nl>\n)
  | (?P<string>"(?:[^"\\\n$%]|\\["\\nrt]|\$(?![{$])|%(?![{%]))*")
  | (?P<number>\d+(?:\.\d+)?(?![\w.]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<punct>[=:,\[\]{}])
  | (?P<bad>.)
    """,
    re.X | re.S,
)


class _Unsupported(Exception):
    """Outside the literal subset: let python-hcl2 decide."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):  # `bad` matches any other character, so the matches tile the text
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "comment":
            if m.group().startswith("/*"):
                raise _Unsupported  # block comments move names off line starts: python-hcl2's case
            continue
        if kind == "bad":
            raise _Unsupported
        out.append((kind, m.group()))  # type: ignore[arg-type]
    out.append(("eof", ""))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def skip_newlines(self) -> None:
        while self.toks[self.i][0] == "nl":
            self.i += 1

    def expect(self, text: str) -> None:
        if self.take() != ("punct", text):
            raise _Unsupported

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.skip_newlines()
        while self.peek()[0] != "eof":
            kind, name = self.take()
            if kind != "ident" or name in out or name in ("true", "false", "null"):
                raise _Unsupported
            self.expect("=")
            out[name] = self.value()
            if self.peek()[0] not in ("nl", "eof"):
                raise _Unsupported  # HCL wants one attribute per line
            self.skip_newlines()
        return out

    def value(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return _string(text)
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "ident" and text in ("true", "false"):
            return text == "true"
        if (kind, text) == ("punct", "["):
            return self.items()
        if (kind, text) == ("punct", "{"):
            return self.fields()
        raise _Unsupported

    def items(self) -> list[Any]:
        out: list[Any] = []
        self.skip_newlines()
        while self.peek() != ("punct", "]"):
            out.append(self.value())
            self.skip_newlines()
            if self.peek() == ("punct", ","):
                self.take()
                self.skip_newlines()
            elif self.peek() != ("punct", "]"):
                raise _Unsupported
        self.take()
        return out

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.skip_newlines()
        while self.peek() != ("punct", "}"):
            kind, key = self.take()
            if kind == "string" and "\\" not in key:
                key = key[1:-1]  # python-hcl2 keeps a quoted key's text as written
            elif kind != "ident" or key in ("true", "false", "null"):
                raise _Unsupported
            if key in out or key.startswith("__"):
                raise _Unsupported
            if self.take() not in (("punct", "="), ("punct", ":")):
                raise _Unsupported
            out[key] = self.value()
            if self.peek() == ("punct", ","):
                self.take()
            elif self.peek()[0] != "nl" and self.peek() != ("punct", "}"):
                raise _Unsupported
            self.skip_newlines()
        self.take()
        return out


def _string(token: str) -> str:
    body = token[1:-1]
    return str(json.loads(token)) if "\\" in body else body


def parse_literal_tfvars(text: str) -> dict[str, Any] | None:
    """The file's variables if it is plain literals only, else None (python-hcl2 must look)."""
    try:
        return _Parser(_tokens(text)).document()
    except (_Unsupported, ValueError, RecursionError):
        return None
