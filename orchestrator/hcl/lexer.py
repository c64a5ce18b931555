"""Tokens of HCL's native syntax, with offsets, as Terraform's scanner cuts them.

Quoted strings and heredocs are templates: their literal parts are decoded here (escapes, `$${`,
`%%{`) and each `${...}` or `%{...}` holds the tokens of its own expression, so the parser never
looks at characters. Newlines are tokens (they end attributes); comments and blanks are not, except
that a line comment ends its line as a newline does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

IDENT, NUMBER, STRING, TEMPLATE, NL, PUNCT, EOF = "ident", "number", "string", "template", "nl", "punct", "eof"


class HclError(Exception):
    """Input Terraform would refuse: a summary as Terraform words it, and where."""

    def __init__(self, summary: str, pos: int, detail: str = "") -> None:
        super().__init__(summary)
        self.summary = summary
        self.pos = pos
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: Any  # decoded: identifier or operator text, number text, string value, template parts
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Interpolation:
    """`${ expr }` inside a template; `strip_*` are the `~` markers that trim whitespace beside it."""

    tokens: tuple[Token, ...]
    start: int
    strip_left: bool
    strip_right: bool


@dataclass(frozen=True, slots=True)
class Directive:
    """`%{ if x }`, `%{ else }`, `%{ endif }`, `%{ for a, b in x }`, `%{ endfor }`."""

    keyword: str
    tokens: tuple[Token, ...]  # what follows the keyword
    start: int
    strip_left: bool
    strip_right: bool


TemplatePart = str | Interpolation | Directive

# A quoted string with no template in it (`$${` and `%%{` are literal): one token, the common case.
SIMPLE_STRING = (r'"(?:[^"\\\r\n$%]|\\["\\nrt]|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}|\$\$\{|%%\{|\$(?![{$])'
                 r'|%(?![{%]))*"')
NUMBER_PATTERN = r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t]+)
  | (?P<nl>\r?\n)
  | (?P<comment>(?:\#|//)[^\n]*\n?)
  | (?P<block>/\*)
  | (?P<simple>{SIMPLE_STRING})
  | (?P<quote>")
  | (?P<heredoc><<(?P<indent>-?)(?P<marker>[^\W\d][\w-]*)\r?\n)
  | (?P<number>{NUMBER_PATTERN})
  | (?P<ident>[^\W\d][\w-]*)
  | (?P<punct>==|!=|<=|>=|&&|\|\||=>|\.\.\.|[-+*/%<>!?:=.,{{}}\[\]()~])
    """,
    re.X,
)
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(text: str, pos: int) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            if m.group(3) not in _SIMPLE_ESCAPES:
                raise HclError("Invalid escape sequence", pos + m.start(),
                               f"The symbol {m.group(3)!r} is not a valid escape sequence selector.")
            return _SIMPLE_ESCAPES[m.group(3)]
        code = int(m.group(1) or m.group(2), 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise HclError("Invalid escape sequence", pos + m.start(), "Not a valid Unicode character.")
        return chr(code)

    return _ESCAPE.sub(one, text) if "\\" in text else text


def _literal(raw: str, pos: int, quoted: bool) -> str:
    """A template's literal text as Terraform reads it: escapes only in quoted strings."""
    text = _unescape(raw, pos) if quoted else raw
    return text.replace("$${", "${").replace("%%{", "%{") if ("$${" in text or "%%{" in text) else text


def tokenize(text: str) -> list[Token]:
    """The file's tokens ending with EOF. `text` has no byte-order mark (the caller drops it)."""
    tokens, end = _scan(text, 0, inside=False)
    tokens.append(Token(EOF, "", end, end))
    return tokens


def _scan(text: str, pos: int, inside: bool) -> tuple[list[Token], int]:
    """Tokens from `pos`; `inside` a template's braces: up to the `}` that closes them (not included)."""
    out: list[Token] = []
    append = out.append
    n = len(text)
    depth = 0
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            char = text[pos]
            raise HclError("Invalid character", pos, f"This character is not used within the language: {char!r}")
        kind = m.lastgroup
        end = m.end()
        if kind == "ws":
            pos = end
            continue
        if kind == "ident" or kind == "number":
            append(Token(kind, m.group(), pos, end))
        elif kind == "punct":
            op = m.group()
            if inside:
                if op == "{":
                    depth += 1
                elif op == "}":
                    if depth == 0:
                        return out, pos
                    depth -= 1
            append(Token(PUNCT, op, pos, end))
        elif kind == "nl":
            append(Token(NL, "\n", pos, end))
        elif kind == "simple":
            raw = m.group()[1:-1]
            append(Token(STRING, _literal(raw, pos + 1, True) if ("\\" in raw or "$$" in raw or "%%" in raw)
                         else raw, pos, end))
        elif kind == "comment":
            if m.group().endswith("\n"):
                append(Token(NL, "\n", end - 1, end))
        elif kind == "block":
            close = text.find("*/", end)
            if close < 0:
                raise HclError("Unterminated comment", pos, "There is no closing marker for this comment.")
            end = close + 2
        elif kind == "quote":
            parts, end = _template(text, end, quoted=True)
            append(Token(TEMPLATE, _finish(parts, heredoc=False), pos, end))
        elif kind == "heredoc":
            parts, end = _heredoc(text, m, pos)
            append(Token(TEMPLATE, parts, pos, end))
        pos = end
    if inside:
        raise HclError("Unterminated template string", pos, "No closing marker was found for the string.")
    return out, pos


def _template(text: str, pos: int, quoted: bool, stop: int | None = None) -> tuple[list[TemplatePart], int]:
    """Parts of a template starting at `pos`: to the closing quote (quoted) or to `stop` (a heredoc body)."""
    parts: list[TemplatePart] = []
    limit = len(text) if stop is None else stop
    chunk_start = i = pos
    while i < limit:
        c = text[i]
        if quoted and c == '"':
            if i > chunk_start:
                parts.append(_literal(text[chunk_start:i], chunk_start, True))
            return parts, i + 1
        if quoted and (c == "\n" or c == "\r"):
            raise HclError("Invalid multi-line string", i,
                           "Quoted strings may not be split over multiple lines. To produce a multi-line string, "
                           "either use the \\n escape to represent a newline character or use the \"heredoc\" "
                           "multi-line template syntax.")
        if quoted and c == "\\":
            i += 2
            continue
        if c in "$%":
            # Left to right, as Terraform's scanner: `$${` and `%%{` are literal, `${` and `%{` open.
            if text.startswith(c + c + "{", i):
                i += 3
                continue
            if text.startswith("{", i + 1):
                if i > chunk_start:
                    parts.append(_literal(text[chunk_start:i], chunk_start, quoted))
                part, i = _embedded(text, i, c)
                parts.append(part)
                chunk_start = i
                continue
        i += 1
    if quoted:
        raise HclError("Unterminated template string", pos - 1, "No closing marker was found for the string.")
    if i > chunk_start:
        parts.append(_literal(text[chunk_start:i], chunk_start, quoted))
    return parts, i


def _embedded(text: str, pos: int, sigil: str) -> tuple[Interpolation | Directive, int]:
    """`${...}` or `%{...}` at `pos` with its tokens, and the offset just past its closing brace."""
    i = pos + 2
    strip_left = text.startswith("~", i)
    tokens, close = _scan(text, i + strip_left, inside=True)
    strip_right = bool(tokens) and tokens[-1].value == "~" and tokens[-1].kind == PUNCT
    if strip_right:
        tokens.pop()
    if sigil == "$":
        return Interpolation(tuple(tokens), pos, strip_left, strip_right), close + 1
    meaningful = [t for t in tokens if t.kind != NL]
    if not meaningful or meaningful[0].kind != IDENT:
        raise HclError("Invalid template directive", pos, "A template directive keyword is expected.")
    keyword = meaningful[0].value
    if keyword not in ("if", "else", "endif", "for", "endfor"):
        raise HclError("Invalid template control keyword", pos,
                       f"{keyword!r} is not a valid template control keyword.")
    return Directive(keyword, tuple(meaningful[1:]), pos, strip_left, strip_right), close + 1


def _heredoc(text: str, m: re.Match[str], pos: int) -> tuple[list[TemplatePart], int]:
    marker = m.group("marker")
    body_start = m.end()
    # Terraform compares the line with its spaces trimmed (Unicode spaces too) to the marker.
    closing = re.compile(rf"^[^\S\n]*{re.escape(marker)}[^\S\n]*\n", re.M).search(text, body_start)
    if closing is None:  # Terraform reports it where the file ends
        raise HclError("Unterminated template string", len(text),
                       f"The heredoc starting here has no closing line {marker!r}.")
    end = closing.end() - 1  # the marker line up to its newline (which ends the attribute)
    parts, _ = _template(text, body_start, quoted=False, stop=closing.start())
    return _finish(parts, heredoc=True, flush=bool(m.group("indent"))), end


def heredoc_at(text: str, pos: int) -> tuple[list[TemplatePart], int] | None:
    """The heredoc whose `<<` is at `pos`: its parts and the offset just past its closing marker."""
    m = _TOKEN.match(text, pos)
    return _heredoc(text, m, pos) if m is not None and m.lastgroup == "heredoc" else None


def decode_string(raw: str, pos: int) -> str:
    """The value of a quoted string's body (between the quotes) that holds no template."""
    return _literal(raw, pos, True) if ("\\" in raw or "$$" in raw or "%%" in raw) else raw


def _finish(parts: list[TemplatePart], heredoc: bool, flush: bool = False) -> list[TemplatePart]:
    """Strip markers (`${~`, `~}`), then a flush heredoc's indentation, then literals joined up.

    In a heredoc each line is a literal of its own, as Terraform's scanner cuts them: a strip marker
    reaches to the end of its line only, and indentation is counted per line.
    """
    if heredoc:
        parts = [piece for p in parts for piece in (_LINES.findall(p) if isinstance(p, str) else (p,))]
    if any(not isinstance(p, str) and (p.strip_left or p.strip_right) for p in parts):
        for i, p in enumerate(parts):
            if isinstance(p, str):
                continue
            if p.strip_left and i > 0 and isinstance(parts[i - 1], str):
                parts[i - 1] = str(parts[i - 1]).rstrip()
            if p.strip_right and i + 1 < len(parts) and isinstance(parts[i + 1], str):
                parts[i + 1] = str(parts[i + 1]).lstrip()
    if flush:
        _flush(parts)
    melded: list[TemplatePart] = []
    for p in parts:
        if isinstance(p, str) and melded and isinstance(melded[-1], str):
            melded[-1] += p
        elif p != "" or not isinstance(p, str):
            melded.append(p)
    return melded


_LINES = re.compile(r"[^\n]*\n|[^\n]+")


def _flush(parts: list[TemplatePart]) -> None:
    """Remove from every line the smallest indentation of the non-blank lines (in place)."""
    smallest: int | None = None
    starts: list[int] = []
    newline = True
    for i, p in enumerate(parts):
        if newline:
            newline = False
            if isinstance(p, str):
                indent = len(p) - len(p.lstrip())
                if indent < len(p) or not p.endswith("\n"):  # a blank line does not count
                    starts.append(i)
                    smallest = indent if smallest is None else min(smallest, indent)
            else:
                smallest = 0  # a line that starts with an interpolation has no indentation
        if isinstance(p, str) and p.endswith("\n"):
            newline = True
    for i in starts:
        parts[i] = str(parts[i])[smallest or 0:]
