"""Values of constant HCL expressions, as Terraform evaluates a variable definitions file.

A tfvars file may use any expression that needs neither variables nor functions: arithmetic,
templates, conditionals, `for`, indexes. Terraform refuses the others ("Variables not allowed",
"Function calls not allowed"), and so does this module, with the same words and the offset.

Values are plain Python: None, bool, int, float (a number that is not a whole one), str, list and
dict. Terraform keeps numbers at 512 bits; here whole numbers are exact (int) and the others go
through Decimal, exact for everything written in decimal. Where the two could still differ (a
quotient that does not end, turned into text) evaluation stops with `Unsupported`: tfo hands the
original text to Terraform in every case, so such a value only limits what tfo itself can know.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from orchestrator.hcl.lexer import HclError
from orchestrator.hcl.syntax import (
    Binary,
    Call,
    Conditional,
    Expr,
    ForExpr,
    GetAttr,
    Index,
    Literal,
    ObjectCons,
    Paren,
    Splat,
    SplatItem,
    Template,
    TemplateFor,
    TemplateIf,
    TemplateItem,
    TupleCons,
    Unary,
    Variable,
    Wrap,
    walk,
)

_EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation])
# A string that Terraform converts to a number.
_NUMERIC = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


class Unsupported(Exception):
    """Terraform accepts this, and tfo cannot tell its exact value."""


def evaluate(expr: Expr) -> Any:
    """The expression's value in plain Python (whole numbers int, others float)."""
    return plain(_eval(expr, {}))


MAX_INT_DIGITS = 4000  # below int()'s own limit on digits (4300)


def plain(value: Any) -> Any:
    """Whole numbers as int, others as float, inside lists and dicts too."""
    if isinstance(value, Decimal):
        if not value.is_finite() or value.adjusted() > MAX_INT_DIGITS:
            # Beyond any whole number tfo's own decisions need (Terraform reads the text itself); an int
            # of a million digits would take a hostile file's reader minutes.
            return float(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "tuple"
    return "object"


def _number(value: Any, pos: int, what: str) -> int | float | Decimal:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise HclError(f"Invalid {what}", pos, f"Unsuitable value: a number is required, not {_kind(value)}.")
    if isinstance(value, str):
        if not _NUMERIC.fullmatch(value):
            raise HclError(f"Invalid {what}", pos, f"Unsuitable value: a number is required; {value!r} is not "
                                                     "a number.")
        parsed = Decimal(value)
        return int(parsed) if parsed == parsed.to_integral_value() and "." not in value else parsed
    return value  # type: ignore[no-any-return]


def _bool(value: Any, pos: int, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise HclError(f"Invalid {what}", pos, f"Unsuitable value: a bool is required, not {_kind(value)}.")


def _string(value: Any, pos: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value != value.to_integral_value() else str(int(value))
    if isinstance(value, float):
        raise Unsupported("a number that is not exact in decimal, as text")
    if value is None:
        raise HclError("Invalid template interpolation value", pos, "The expression result is null. Cannot include "
                                                                     "a null value in a string template.")
    raise HclError("Invalid template interpolation value", pos,
                   f"Cannot include the given value in a string template: string required, not {_kind(value)}.")


def _arith(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        if op in "/%" and fb == 0:
            raise Unsupported("division by zero")
        if op == "/":
            return fa / fb
        return math.fmod(fa, fb) if op == "%" else fa + fb if op == "+" else fa - fb if op == "-" else fa * fb
    if isinstance(a, int) and isinstance(b, int) and op in "+-*":
        return a + b if op == "+" else a - b if op == "-" else a * b
    x, y = Decimal(a), Decimal(b)
    if op in "/%" and y == 0:
        raise Unsupported("division by zero")  # Terraform makes an infinity of it
    try:
        if op == "+":
            return _EXACT.add(x, y)
        if op == "-":
            return _EXACT.subtract(x, y)
        if op == "*":
            return _EXACT.multiply(x, y)
        if op == "/":
            return _EXACT.divide(x, y)
        return _EXACT.remainder(x, y)  # the sign of the dividend, as Terraform's
    except Inexact:
        return math.fmod(float(x), float(y)) if op == "%" else float(x) / float(y)


def _equal(a: Any, b: Any) -> bool:
    if _kind(a) != _kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _unify(a: Any, b: Any, pos: int) -> tuple[Any, Any]:
    """Both results of a conditional in their common type, as Terraform converts them."""
    ka, kb = _kind(a), _kind(b)
    if ka == kb or ka == "null" or kb == "null":
        return a, b
    if {ka, kb} <= {"string", "number", "bool"}:
        if "string" in (ka, kb):
            return _string(a, pos), _string(b, pos)
        raise HclError("Inconsistent conditional result types", pos,
                       f"The true and false result expressions must have consistent types ({ka} and {kb}).")
    raise Unsupported("conditional results of different collection types")


def _eval(e: Expr, scope: Mapping[str, Any]) -> Any:
    if isinstance(e, Literal):
        return e.value
    if isinstance(e, TupleCons):
        return [_eval(x, scope) for x in e.items]
    if isinstance(e, ObjectCons):
        out: dict[str, Any] = {}
        for k, v in e.items:
            key = _eval(k, scope)
            if key is None:
                raise HclError("Null value as key", k.start, "Can't use a null value as a key.")
            if isinstance(key, list | dict):
                raise HclError("Incorrect key type", k.start, "Can't use this value as a key: string required.")
            out[_string(key, k.start)] = _eval(v, scope)
        return out
    if isinstance(e, Template):
        return "".join(_template(e.items, scope))
    if isinstance(e, Wrap | Paren):
        return _eval(e.inner, scope)
    if isinstance(e, Variable):
        if e.name in scope:
            return scope[e.name]
        raise HclError("Variables not allowed", e.start, "Variables may not be used here.")
    if isinstance(e, Call):
        raise HclError("Function calls not allowed", e.start, "Functions may not be called here.")
    if isinstance(e, Unary):
        value = _eval(e.operand, scope)
        if e.op == "!":
            return not _bool(value, e.operand.start, "operand")
        number = _number(value, e.operand.start, "operand")
        # Exactly, as Terraform negates: `-` on a Decimal rounds to the context's 28 digits.
        return number.copy_negate() if isinstance(number, Decimal) else -number
    if isinstance(e, Binary):
        return _binary(e, scope)
    if isinstance(e, Conditional):
        cond = _eval(e.cond, scope)
        if cond is None:
            raise HclError("Null condition", e.cond.start, "The condition value is null.")
        chosen = _bool(cond, e.cond.start, "condition")
        a, b = _unify(_eval(e.true, scope), _eval(e.false, scope), e.start)
        return a if chosen else b
    if isinstance(e, Index):
        return _index(_eval(e.collection, scope), _eval(e.key, scope), e.key.start)
    if isinstance(e, GetAttr):
        source = _eval(e.source, scope)
        if isinstance(source, dict):
            if e.name not in source:
                raise HclError("Unsupported attribute", e.start, f"This object does not have an attribute named "
                                                                 f"{e.name!r}.")
            return source[e.name]
        raise HclError("Unsupported attribute", e.start, f"Can't access attributes on a {_kind(source)}.")
    if isinstance(e, Splat):
        source = _eval(e.source, scope)
        if source is None:
            return []
        items = source if isinstance(source, list) else [source]
        return [_eval(e.each, {**scope, _SPLAT: item}) for item in items]
    if isinstance(e, SplatItem):
        return scope[_SPLAT]
    if isinstance(e, ForExpr):
        return _for(e, scope)
    raise Unsupported(type(e).__name__)


_SPLAT = "\0splat"  # not a name HCL can spell


def _binary(e: Binary, scope: Mapping[str, Any]) -> Any:
    a, b = _eval(e.left, scope), _eval(e.right, scope)
    op = e.op
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op in ("&&", "||"):
        p, q = _bool(a, e.left.start, "left operand"), _bool(b, e.right.start, "right operand")
        return (p and q) if op == "&&" else (p or q)
    x = _number(a, e.left.start, "left operand")
    y = _number(b, e.right.start, "right operand")
    if op in ("<", ">", "<=", ">="):
        dx, dy = (Decimal(x), Decimal(y)) if not isinstance(x, float) and not isinstance(y, float) else (x, y)
        return {"<": dx < dy, ">": dx > dy, "<=": dx <= dy, ">=": dx >= dy}[op]  # type: ignore[operator]
    return _arith(op, x, y)


def _index(collection: Any, key: Any, pos: int) -> Any:
    if isinstance(collection, list):
        number = _number(key, pos, "index")
        if isinstance(number, float) or number != int(number) or not 0 <= int(number) < len(collection):
            raise HclError("Invalid index", pos, "The given key does not identify an element in this collection "
                                                 "value.")
        return collection[int(number)]
    if isinstance(collection, dict):
        name = _string(key, pos) if not isinstance(key, list | dict) and key is not None else None
        if name is None or name not in collection:
            raise HclError("Invalid index", pos, "The given key does not identify an element in this collection "
                                                 "value.")
        return collection[name]
    raise HclError("Invalid index", pos, f"This value ({_kind(collection)}) does not have any indices.")


def _pairs(collection: Any, pos: int) -> list[tuple[Any, Any]]:
    if isinstance(collection, list):
        return list(enumerate(collection))
    if isinstance(collection, dict):
        return sorted(collection.items())  # Terraform iterates maps and objects in key order
    if collection is None:
        raise HclError("Iteration over null value", pos, "A null value cannot be used as the collection in a "
                                                         "'for' expression.")
    raise HclError("Iteration over non-iterable value", pos, f"A value of type {_kind(collection)} cannot be used "
                                                             "as the collection in a 'for' expression.")


def _for(e: ForExpr, scope: Mapping[str, Any]) -> Any:
    results: list[Any] = []
    grouped: dict[str, Any] = {}
    for k, v in _pairs(_eval(e.collection, scope), e.collection.start):
        inner = {**scope, e.value_var: v}
        if e.key_var:
            inner[e.key_var] = k
        if e.cond is not None:
            cond = _eval(e.cond, inner)
            if not _bool(cond, e.cond.start, "'for' condition"):
                continue
        value = _eval(e.value, inner)
        if e.key is None:
            results.append(value)
            continue
        key = _eval(e.key, inner)
        if key is None:
            raise HclError("Invalid object key", e.key.start, "Key expression in 'for' expression must not "
                                                              "produce a null value.")
        name = _string(key, e.key.start)
        if e.group:
            grouped.setdefault(name, []).append(value)
        elif name in grouped:
            raise HclError("Duplicate object key", e.key.start, f"Two different items produced the key {name!r} "
                                                                "in this 'for' expression.")
        else:
            grouped[name] = value
    return results if e.key is None else grouped


def _template(items: tuple[TemplateItem, ...], scope: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, TemplateIf):
            cond = _eval(item.cond, scope)
            chosen = item.then if _bool(cond, item.start, "'if' condition") else item.otherwise
            out += _template(chosen, scope)
        elif isinstance(item, TemplateFor):
            for k, v in _pairs(_eval(item.collection, scope), item.start):
                inner = {**scope, item.value_var: v}
                if item.key_var:
                    inner[item.key_var] = k
                out += _template(item.body, inner)
        else:
            out.append(_string(_eval(item, scope), item.start))
    return out


def string_literals(expr: Expr) -> list[str]:
    """Every literal string written in the expression: what could be a secret when its value is unknown."""
    return [n for n in walk(expr) if isinstance(n, str)]  # a string literal's value is one of them
