"""A line-at-a-time reader for the tfvars nearly every repository has: literals only.

The full reader (tokens, tree, evaluation) costs about 3 ms for a 4 KB file, 12 s for 3,600 of them.
Most files are `name = literal` lines, objects and lists of literals spread over lines, one-line `{...}`
and `[...]`, comments and heredocs without templates. This reader takes such a file one line at a
time (one regex match per line) and returns exactly what the full reader would: the same attributes
with the same offsets, values and file references. On anything else (a template, an expression, a
block comment, a separator Terraform would refuse, a repeated name, ...) it returns None and the full
reader decides, so every refusal keeps its words and its line. tests/unit/test_literal_lines.py checks
that the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from orchestrator.hcl.lexer import NUMBER_PATTERN, SIMPLE_STRING, decode_string, heredoc_at
from orchestrator.hcl.syntax import number
from orchestrator.hcl.values import plain

_KEY = rf"[A-Za-z_][A-Za-z0-9_-]*|{SIMPLE_STRING}"
_SCALAR = rf"{SIMPLE_STRING}|-?{NUMBER_PATTERN}(?![\w.])|(?:true|false|null)(?![\w-])"
_TAIL = r"[ \t]*(,)?[ \t]*(?:(?:\#|//)[^\n]*)?"
_LINE = re.compile(  # every line matches (all optional): the groups say what it holds
    rf"[ \t]*(?:({_KEY})[ \t]*([=:])[ \t]*)?"
    rf"(?:({_SCALAR})|([{{\[])|([}}\]])|(<<-?[A-Za-z_][A-Za-z0-9_-]*)[ \t]*$)?"
    rf"(?:{_TAIL}$)?"
)
# Consecutive `name = scalar` lines inside an object, most of a typical file: one match for the run.
_MEMBER = rf"[ \t]*({_KEY})[ \t]*[=:][ \t]*({_SCALAR})[ \t]*,?[ \t]*(?:(?:\#|//)[^\n]*)?(?:\r?\n|\Z)"
_MEMBERS = re.compile(rf"(?:{_MEMBER})+")
_ONE_MEMBER = re.compile(_MEMBER)
_END = re.compile(r"[ \t]*(?P<comma>,)?[ \t]*(?:(?:\#|//)[^\n]*)?$")
_INLINE_TOKEN = re.compile(rf"[ \t]*(?:(?P<s>{SIMPLE_STRING})|(?P<n>-?{NUMBER_PATTERN}(?![\w.]))"
                           rf"|(?P<w>[A-Za-z_][A-Za-z0-9_-]*)|(?P<p>[{{}}\[\],=:]))")
_KEYWORDS = {"true": True, "false": False, "null": None}
# One-line objects and lists of scalars, the most common inline shape, read with one match each.
_ITEM = re.compile(rf"[ \t]*(?P<v>{_SCALAR})[ \t]*(?:,|(?=\]))")
_FLAT_LIST = re.compile(rf"\[(?:{_ITEM.pattern})*[ \t]*\]")
# In an object, a value may also be a list of scalars: `{ origins = ["a", "b"], max_age = 3600 }`.
_PAIR = re.compile(rf"[ \t]*(?P<k>{_KEY})[ \t]*[=:][ \t]*(?P<v>{_SCALAR}|{_FLAT_LIST.pattern.replace('?P<v>', '?:')})"
                   rf"[ \t]*(?:,|(?=\}}))")
_FLAT_OBJECT = re.compile(rf"\{{(?:{_PAIR.pattern.replace('?P<k>', '?:').replace('?P<v>', '?:')})*[ \t]*\}}")


class _Fallback(Exception):
    """Outside the literal subset: the full reader decides."""


Ref = tuple[str, str, int, int]  # where, value, start, end


def _scalar(text: str, pos: int) -> Any:
    """The value of a scalar token at `pos`, as the full reader evaluates it."""
    c = text[0]
    if c == '"':
        return decode_string(text[1:-1], pos + 1)
    if c in "tfn":
        return _KEYWORDS[text]
    return int(text) if text.isdigit() and len(text) <= 4000 else plain(number(text))


def _key(text: str, pos: int) -> str:
    return decode_string(text[1:-1], pos + 1) if text[0] == '"' else text


class _Frame:
    __slots__ = ("closer", "container", "file_list", "needs_close", "top", "where")

    def __init__(self, closer: str, container: Any, where: str, file_list: bool, top: Any) -> None:
        self.closer = closer
        self.container = container
        self.where = where
        self.file_list = file_list  # a list under a file key: its strings are file references
        self.needs_close = False  # a list item without a comma must be the last
        self.top = top


def read_literal_lines(text: str, is_file_key: Callable[[str], bool] | None
                       ) -> list[tuple[str, int, int, Any, list[Ref]]] | None:
    """(name, start, end, value, file references) per attribute, or None when the full reader must decide."""
    check = is_file_key or (lambda _: False)
    known: dict[str, bool] = {}

    def file_key(name: str) -> bool:
        hit = known.get(name)
        if hit is None:
            hit = known[name] = check(name)
        return hit

    try:
        return _read(text, file_key, known)
    except (_Fallback, RecursionError):
        return None


def _read(text: str, is_file_key: Callable[[str], bool], file_keys: dict[str, bool]
          ) -> list[tuple[str, int, int, Any, list[Ref]]]:
    """`file_keys`: the memo behind is_file_key, read directly on the hot path."""
    out: list[tuple[str, int, int, Any, list[Ref]]] = []
    names: set[str] = set()
    stack: list[_Frame] = []
    top: list[Any] = []  # [name, start, value, refs] of the attribute being read
    pos = 0
    n = len(text)
    line_match = _LINE.match
    crlf = "\r" in text
    if crlf and text.count("\r") != text.count("\r\n"):
        raise _Fallback  # a carriage return that does not end a line
    members = _MEMBERS.match
    while pos < n:
        if stack and stack[-1].closer == "}":
            run = members(text, pos)
            if run is not None:
                _read_members(text, pos, run.end(), stack[-1], top[3], file_keys, is_file_key)
                pos = run.end()
                continue
        nl = text.find("\n", pos)
        line_end = n if nl < 0 else nl
        if crlf and line_end > pos and text[line_end - 1] == "\r":
            line_end -= 1
        line = text[pos:line_end]
        m = line_match(line)
        key, sep, scalar, opener, closer, heredoc, comma = m.groups()  # type: ignore[union-attr]
        whole = m.end() == len(line)  # type: ignore[union-attr]
        frame = stack[-1] if stack else None
        if key is None and scalar is None and opener is None and closer is None and heredoc is None:
            if not whole or comma:
                raise _Fallback
            pos = line_end + 1  # blank, or a comment
            continue
        in_list = frame is not None and frame.closer == "]"
        if closer is None and (key is None) != in_list:
            raise _Fallback  # a value without a name, or a name inside a list
        name: str | None = None
        file_key = False
        if key is not None:
            if frame is None:
                if sep != "=" or key[0] == '"' or key in names:
                    raise _Fallback  # a top-level `:`, a quoted name, a repeated one: Terraform's words
                top = [key, pos + m.start(1), None, []]  # type: ignore[union-attr]
                names.add(key)
                name = key
            else:
                name = key if key[0] != '"' else _key(key, pos + m.start(1))  # type: ignore[union-attr]
                if key == "for" and not frame.container:
                    raise _Fallback  # `{ for = 1 }`: Terraform reads a broken `for` expression
            file_key = file_keys.get(name)  # type: ignore[assignment]
            if file_key is None:
                file_key = is_file_key(name)
        elif in_list:
            file_key = frame.file_list  # type: ignore[union-attr]

        if scalar is not None:
            if not whole or (frame is not None and frame.needs_close):
                raise _Fallback
            start = pos + m.start(3)  # type: ignore[union-attr]
            value = _scalar(scalar, start)
            if file_key:
                _file_ref(top[3], _where(frame, name), value, start, start + len(scalar))
            _store(frame, name, value, comma is not None, top, out, start + len(scalar))
        elif closer is not None:
            if frame is None or key is not None or closer != frame.closer or not whole:
                raise _Fallback
            stack.pop()
            if not stack:
                if comma:
                    raise _Fallback  # Terraform: "Unexpected comma after argument"
                out.append((top[0], top[1], pos + m.end(5), top[2], top[3]))  # type: ignore[union-attr]
            elif stack[-1].closer == "]" and not comma:
                stack[-1].needs_close = True
        elif frame is not None and frame.needs_close:
            raise _Fallback  # Terraform: "Missing item separator"
        elif opener is not None:
            where = _where(frame, name)
            if not whole:  # `{ ... }` or `[ ... ]` on this line
                if in_list and file_key:
                    raise _Fallback  # a container in a list of files: the full reader says what is wrong
                value, used = _Inline(line, m.start(4), pos, is_file_key, top[3], where,  # type: ignore[union-attr]
                                      file_key).value()
                tail = _END.match(line, used)
                if tail is None:
                    raise _Fallback
                _store(frame, name, value, tail.group("comma") is not None, top, out, pos + used)
            else:
                if comma or (file_key and (opener != "[" or in_list)):
                    raise _Fallback  # the full reader says what a file reference must be
                new: Any = {} if opener == "{" else []
                if frame is None:
                    top[2] = new
                elif name is not None:
                    frame.container[name] = new
                else:
                    frame.container.append(new)
                stack.append(_Frame("}" if opener == "{" else "]", new, where, file_key, top))
        elif heredoc is not None:
            if in_list or file_key:
                raise _Fallback
            found = heredoc_at(text, pos + m.start(6))  # type: ignore[union-attr]
            if found is None or any(not isinstance(p, str) for p in found[0]):
                raise _Fallback  # a template: the full reader evaluates it
            value, end = "".join(found[0]), found[1]  # type: ignore[arg-type]
            _store(frame, name, value, False, top, out, end)
            line_end = text.find("\n", end)
            if line_end < 0:
                raise _Fallback
        else:
            raise _Fallback  # a name with something the line reader does not know after it
        pos = line_end + 1
    if stack:
        raise _Fallback  # unclosed: the full reader reports where
    return out


def _read_members(text: str, pos: int, end: int, frame: _Frame, refs: list[Ref], file_keys: dict[str, bool],
                  is_file_key: Callable[[str], bool]) -> None:
    """A run of `name = scalar` lines in an object (_MEMBERS matched it from pos to end)."""
    container = frame.container
    for member in _ONE_MEMBER.finditer(text, pos, end):
        key, scalar = member.group(1, 2)
        if key == "for" and not container:
            raise _Fallback  # `{ for = 1 }`: Terraform reads a broken `for` expression
        name = key if key[0] != '"' else _key(key, member.start(1))
        start = member.start(2)
        value = _scalar(scalar, start)
        file_key = file_keys.get(name)
        if file_key is None:
            file_key = is_file_key(name)
        if file_key:
            _file_ref(refs, f"{frame.where}.{name}", value, start, start + len(scalar))
        container[name] = value


def _where(frame: _Frame | None, name: str | None) -> str:
    """How the full reader names a place: `a.b.c`, `a.list[2]`; a file list's items by the list's key."""
    if frame is None:
        return name or ""
    if name is not None:
        return f"{frame.where}.{name}"
    return frame.where if frame.file_list else f"{frame.where}[{len(frame.container)}]"


def _store(frame: _Frame | None, name: str | None, value: Any, comma: bool, top: list[Any],
           out: list[tuple[str, int, int, Any, list[Ref]]], end: int) -> None:
    """A value read: the attribute's (ending at `end`), an object member's, or a list item's."""
    if frame is None:
        if comma:
            raise _Fallback  # Terraform: "Unexpected comma after argument"
        out.append((top[0], top[1], end, value, top[3]))
    elif name is not None:
        frame.container[name] = value
    else:
        frame.container.append(value)
        if not comma:
            frame.needs_close = True


def _file_ref(refs: list[Ref], where: str, value: Any, start: int, end: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _Fallback  # not a path: the full reader says so
    if value:
        refs.append((where, value, start, end))


class _Inline:
    """`{ a = 1, b = [2, "x"] }` on one line."""

    def __init__(self, line: str, i: int, offset: int, is_file_key: Callable[[str], bool], refs: list[Ref],
                 where: str, file_key: bool) -> None:
        self.line = line
        self.i = i
        self.offset = offset
        self.is_file_key = is_file_key
        self.refs = refs
        self.where = where
        self.file_key = file_key

    def token(self) -> tuple[str, str, int, int]:
        m = _INLINE_TOKEN.match(self.line, self.i)
        if m is None:
            raise _Fallback
        self.i = m.end()
        kind = m.lastgroup or ""
        return kind, m.group(kind), m.start(kind), m.end(kind)

    def value(self) -> tuple[Any, int]:
        value = self._value(self.where, self.file_key)
        return value, self.i

    def _flat(self, where: str, file_key: bool) -> tuple[bool, Any]:
        """A one-line object or list of scalars at self.i, read in one match (False: not that shape)."""
        line, i = self.line, self.i
        if line[i] == "{" and not file_key:
            m = _FLAT_OBJECT.match(line, i)
            if m is None:
                return False, None
            obj: dict[str, Any] = {}
            for p in _PAIR.finditer(line, i + 1, m.end()):
                k, v = p.group("k", "v")
                if k == "for" and not obj:
                    raise _Fallback  # `{ for = 1 }`: Terraform reads a broken `for` expression
                key = decode_string(k[1:-1], self.offset + p.start("k") + 1) if k[0] == '"' else k
                file_key = self.is_file_key(key)
                if v[0] == "[":
                    self.i = p.start("v")
                    _, obj[key] = self._flat(f"{where}.{key}", file_key)
                    continue
                value = _scalar(v, self.offset + p.start("v"))
                if file_key:
                    _file_ref(self.refs, f"{where}.{key}", value, self.offset + p.start("v"), self.offset + p.end("v"))
                obj[key] = value
            self.i = m.end()
            return True, obj
        if line[i] == "[":
            m = _FLAT_LIST.match(line, i)
            if m is None:
                return False, None
            items = []
            for p in _ITEM.finditer(line, i + 1, m.end()):
                value = _scalar(p.group("v"), self.offset + p.start("v"))
                if file_key:
                    _file_ref(self.refs, where, value, self.offset + p.start("v"), self.offset + p.end("v"))
                items.append(value)
            self.i = m.end()
            return True, items
        return False, None

    def _value(self, where: str, file_key: bool) -> Any:
        m = _INLINE_TOKEN.match(self.line, self.i)
        if m is not None and m.group("p") in ("{", "["):
            self.i = m.start("p")
            flat, value = self._flat(where, file_key)
            if flat:
                return value
        kind, text, start, end = self.token()
        if kind == "s" or kind == "n" or (kind == "w" and text in _KEYWORDS):
            value = _scalar(text, self.offset + start)
            if file_key:
                _file_ref(self.refs, where, value, self.offset + start, self.offset + end)
            return value
        if text == "[":
            return self._list(where, file_key)
        if text == "{" and not file_key:
            return self._object(where)
        raise _Fallback

    def _list(self, where: str, file_list: bool) -> list[Any]:
        items: list[Any] = []
        while True:
            nxt = self._peek()
            if nxt == "]":
                self.token()
                return items
            if file_list and nxt in ("[", "{"):
                raise _Fallback  # a list of files holds paths only: the full reader says what is wrong
            items.append(self._value(where if file_list else f"{where}[{len(items)}]", file_list))
            _, text, _, _ = self.token()
            if text == "]":
                return items
            if text != ",":
                raise _Fallback

    def _object(self, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            kind, text, start, _ = self.token()
            if text == "}":
                return out
            if text == "for" and not out:
                raise _Fallback  # `{ for = 1 }`: Terraform reads a broken `for` expression
            if kind == "s":
                key = decode_string(text[1:-1], self.offset + start + 1)
            elif kind == "w":
                key = text
            else:
                raise _Fallback
            _, sep, _, _ = self.token()
            if sep not in ("=", ":"):
                raise _Fallback
            out[key] = self._value(f"{where}.{key}", self.is_file_key(key))
            _, text, _, _ = self.token()
            if text == "}":
                return out
            if text != ",":
                raise _Fallback  # Terraform: "Missing attribute separator"

    def _peek(self) -> str:
        m = _INLINE_TOKEN.match(self.line, self.i)
        return m.group("p") or "" if m else ""
