"""`.tfvars.json`: JSON with the offsets of every value, refused where Terraform refuses it.

Python's json module gives values but not where they are; tfo needs the offsets to hand Terraform
the text of the chosen variables as written, and Terraform refuses duplicate keys, which json accepts.
Numbers stay exact (int or Decimal); strings are literal (no templates in JSON variable files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from json.decoder import JSONDecodeError, scanstring  # type: ignore[attr-defined]
from typing import Any

from orchestrator.hcl.lexer import HclError
from orchestrator.hcl.syntax import number


@dataclass(frozen=True, slots=True)
class JsonValue:
    start: int
    end: int
    value: Any  # plain Python, numbers int or Decimal (as syntax.number reads them)
    members: tuple[tuple[str, int, JsonValue], ...] = ()  # an object's (key, key offset, value)
    items: tuple[JsonValue, ...] = ()  # an array's elements


_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_KEYWORDS = {"true": True, "false": False, "null": None}


def parse_json_object(text: str) -> JsonValue:
    """The file's root object; HclError for what Terraform refuses."""
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("{", pos):
        raise HclError("Incorrect JSON value type", pos, "A JSON object is required here, setting the arguments "
                                                         "for this block.")
    root = _value(text, pos, top=True)
    end = _WS.match(text, root.end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise HclError("Extraneous data after value", end, "Extra characters appear after the JSON value.")
    return root


def _value(text: str, pos: int, top: bool = False) -> JsonValue:
    c = text[pos:pos + 1]
    if c == "{":
        return _object(text, pos, top)
    if c == "[":
        return _array(text, pos)
    if c == '"':
        value, end = _string(text, pos)
        return JsonValue(pos, end, value)
    m = _NUMBER.match(text, pos)
    if m:
        return JsonValue(pos, m.end(), number(m.group()))
    for word, keyword in _KEYWORDS.items():
        if text.startswith(word, pos):
            return JsonValue(pos, pos + len(word), keyword)
    raise HclError("Invalid start of value", pos, "A JSON value must start with a brace, a bracket, a number, a "
                                                  "string, or a keyword.")


def _string(text: str, pos: int) -> tuple[str, int]:
    try:
        value, end = scanstring(text, pos + 1, True)
        return str(value), int(end)
    except JSONDecodeError as e:
        raise HclError("Invalid JSON string", e.pos, e.msg) from e


def _object(text: str, pos: int, top: bool) -> JsonValue:
    members: list[tuple[str, int, JsonValue]] = []
    seen: dict[str, int] = {}
    i = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text.startswith("}", i):
        return JsonValue(pos, i + 1, {}, ())
    while True:
        if not text.startswith('"', i):
            raise HclError("Invalid object property name", i, "A JSON object property name must be a string.")
        key, after = _string(text, i)
        if key in seen and not (top and key == "//"):  # top-level "//" keys are comments, any number of them
            raise HclError("Duplicate argument" if top else "Duplicate object attribute", i,
                           f"The argument {key!r} was already set on line {text.count(chr(10), 0, seen[key]) + 1}. "
                           "Each argument may be set only once.")
        seen[key] = i
        j = _WS.match(text, after).end()  # type: ignore[union-attr]
        if not text.startswith(":", j):
            raise HclError("Missing property value colon", j, "JSON uses a colon as its name/value delimiter.")
        j = _WS.match(text, j + 1).end()  # type: ignore[union-attr]
        value = _value(text, j)
        members.append((key, i, value))
        j = _WS.match(text, value.end).end()  # type: ignore[union-attr]
        if text.startswith("}", j):
            return JsonValue(pos, j + 1, {k: v.value for k, _, v in members}, tuple(members))
        if not text.startswith(",", j):
            raise HclError("Missing attribute seperator comma", j, "A comma must appear between each property "
                                                                   "definition in an object.")
        i = _WS.match(text, j + 1).end()  # type: ignore[union-attr]


def _array(text: str, pos: int) -> JsonValue:
    items: list[JsonValue] = []
    i = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", i):
        return JsonValue(pos, i + 1, [], items=())
    while True:
        item = _value(text, i)
        items.append(item)
        j = _WS.match(text, item.end).end()  # type: ignore[union-attr]
        if text.startswith("]", j):
            return JsonValue(pos, j + 1, [x.value for x in items], items=tuple(items))
        if not text.startswith(",", j):
            raise HclError("Missing array element separator comma", j, "A comma must appear between each element "
                                                                       "of an array.")
        i = _WS.match(text, j + 1).end()  # type: ignore[union-attr]
