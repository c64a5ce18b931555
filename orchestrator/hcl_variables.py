"""Which variables a module declares `sensitive = true`, without python-hcl2 for ordinary modules.

Every run redacts the values of a module's sensitive variables, so it reads the module's `variable`
blocks. python-hcl2 (lark) takes 0.2-0.3 s to import and parse a small module, which a run pays each time
a module changes (the answer is cached per module content). This scanner lexes HCL's native syntax just
well enough to follow strings, templates, heredocs, comments and brackets, and reads the one flag. On
anything it does not follow (a block comment across lines, a `sensitive` that is not a bare true/false,
unbalanced brackets, characters outside ASCII outside strings and comments) it returns None and the
caller asks python-hcl2. tests/unit/test_hcl_variables.py checks that the two agree.
"""

from __future__ import annotations

import re

_SIMPLE = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<heredoc><<-?(?P<marker>[A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n)
  | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<open>[{\[(])
  | (?P<close>[}\])])
  | (?P<quote>")
  | (?P<op>[=!<>+\-*/%&|?:.,])
    """,
    re.X | re.S,
)
_PAIRS = {"}": "{", "]": "[", ")": "("}


class _NotFollowed(Exception):
    """Outside what the scanner follows: python-hcl2 decides."""


def _skip_template(text: str, i: int) -> int:
    """`i` is just past an opening quote; return the index just past the closing one."""
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\n":
            raise _NotFollowed  # quoted strings end on their line
        if c == "\\":
            i += 2
            continue
        if text.startswith(("$${", "%%{"), i):
            i += 3
            continue
        if text.startswith(("${", "%{"), i):
            i = _skip_expression(text, i + 2)
            continue
        i += 1
    raise _NotFollowed  # unterminated string


def _skip_expression(text: str, i: int) -> int:
    """`i` is just inside a template interpolation or directive; return the index just past its `}`."""
    depth = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _skip_template(text, i + 1)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise _NotFollowed


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) with kinds ident, string, nl, open, close, op, number; comments and blanks dropped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        m = _SIMPLE.match(text, i)
        if m is None:
            raise _NotFollowed  # a character the scanner does not know outside strings and comments
        kind = m.lastgroup
        if kind == "quote":
            end = _skip_template(text, m.end())
            out.append(("string", text[i:end]))
            i = end
            continue
        if kind == "heredoc":
            # The body runs to the line holding only the marker (HCL allows it indented).
            closing = re.compile(rf"^[ \t]*{re.escape(m.group('marker'))}[ \t]*\r?$", re.M)
            body_end = closing.search(text, m.end())
            if body_end is None:
                raise _NotFollowed
            out += [("string", "<<heredoc>>"), ("nl", "\n")]
            i = body_end.end()
            continue
        if kind == "op" and text.startswith("/*", i):
            raise _NotFollowed  # an unterminated block comment
        i = m.end()
        if kind == "ws" or (kind == "comment" and "\n" not in m.group()):
            continue
        if kind == "comment":  # a block comment across lines hides where lines start
            raise _NotFollowed
        out.append((kind or "", m.group()))
    out.append(("nl", "\n"))
    return out


def _label(token: tuple[str, str]) -> str | None:
    kind, raw = token
    if kind == "ident":
        return raw
    if kind == "string" and raw.startswith('"') and not re.search(r"[\\$%]", raw):
        return raw[1:-1]
    return None


def sensitive_variable_names(text: str) -> set[str] | None:
    """Names of `variable` blocks with `sensitive = true` in one .tf file, or None when not followed."""
    try:
        toks = _tokens(text)
    except _NotFollowed:
        return None
    names: set[str] = set()
    stack: list[str] = []
    current: str | None = None  # the variable whose block is the innermost open one at depth 1
    seen_flag = False
    line_start = True
    i = 0
    while i < len(toks):
        kind, raw = toks[i]
        if kind == "nl":
            line_start = True
            i += 1
            continue
        if not stack and line_start and kind == "ident" and raw == "variable":
            label = _label(toks[i + 1]) if i + 1 < len(toks) else None
            if label is None or i + 2 >= len(toks) or toks[i + 2] != ("open", "{"):
                return None
            stack.append("{")
            current, seen_flag, line_start = label, False, True  # the body may start on this line
            i += 3
            continue
        if current is not None and len(stack) == 1 and line_start and (kind, raw) == ("ident", "sensitive"):
            if toks[i + 1] != ("op", "="):
                return None
            value = toks[i + 2]
            if value not in (("ident", "true"), ("ident", "false")) or toks[i + 3][0] not in ("nl", "close"):
                return None  # an expression, a string, a second attribute: python-hcl2's call
            if seen_flag:
                return None  # a duplicate attribute is an error python-hcl2 reports its own way
            seen_flag = True
            if value[1] == "true":
                names.add(current)
            line_start = False
            i += 3
            continue
        line_start = False
        if kind == "open":
            stack.append(raw)
        elif kind == "close":
            if not stack or stack.pop() != _PAIRS[raw]:
                return None
            if not stack:
                current = None
        i += 1
    return names if not stack else None
