"""HCL native syntax to a tree, with the offsets of every node, as Terraform's parser reads it.

A body holds attributes (`name = expr` ending with a newline) and blocks (`type "label" { ... }`).
Expressions follow HCL's grammar: literals, templates, tuples, objects, variables and traversals
(`a.b[0]`, splats), function calls, `for` expressions, unary, binary and conditional operators.
Newlines end attributes and object items, and are ignored inside brackets, parentheses and
template interpolations, as in Terraform.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from orchestrator.hcl.lexer import (
    EOF,
    IDENT,
    NL,
    NUMBER,
    PUNCT,
    STRING,
    TEMPLATE,
    Directive,
    HclError,
    Interpolation,
    TemplatePart,
    Token,
)


# --- the tree -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Node:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any  # None, bool, int, Decimal or str


@dataclass(frozen=True, slots=True)
class TemplateIf:
    cond: Expr
    then: tuple[TemplateItem, ...]
    otherwise: tuple[TemplateItem, ...]
    start: int


@dataclass(frozen=True, slots=True)
class TemplateFor:
    key_var: str
    value_var: str
    collection: Expr
    body: tuple[TemplateItem, ...]
    start: int


@dataclass(frozen=True, slots=True)
class Template(Node):
    items: tuple[TemplateItem, ...]


@dataclass(frozen=True, slots=True)
class Wrap(Node):
    """`"${x}"` alone: the value of x itself, not converted to a string."""

    inner: Expr


@dataclass(frozen=True, slots=True)
class TupleCons(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class ObjectCons(Node):
    items: tuple[tuple[Expr, Expr], ...]  # a bare name as key is a Literal of its text


@dataclass(frozen=True, slots=True)
class Variable(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Call(Node):
    name: str
    args: tuple[Expr, ...]
    expand_final: bool


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Conditional(Node):
    cond: Expr
    true: Expr
    false: Expr


@dataclass(frozen=True, slots=True)
class Index(Node):
    collection: Expr
    key: Expr


@dataclass(frozen=True, slots=True)
class GetAttr(Node):
    source: Expr
    name: str


@dataclass(frozen=True, slots=True)
class SplatItem(Node):
    """Stands for each element inside a splat's `each` expression."""


@dataclass(frozen=True, slots=True)
class Splat(Node):
    source: Expr
    each: Expr  # built over a SplatItem


@dataclass(frozen=True, slots=True)
class ForExpr(Node):
    key_var: str
    value_var: str
    collection: Expr
    key: Expr | None  # None: a tuple is built
    value: Expr
    cond: Expr | None
    group: bool


@dataclass(frozen=True, slots=True)
class Paren(Node):
    inner: Expr


Expr = (Literal | Template | Wrap | TupleCons | ObjectCons | Variable | Call | Unary | Binary | Conditional | Index
        | GetAttr | SplatItem | Splat | ForExpr | Paren)
TemplateItem = str | Expr | TemplateIf | TemplateFor


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    expr: Expr
    start: int  # the name's first character
    end: int  # just past the expression


@dataclass(frozen=True, slots=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: Body
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Body:
    attributes: tuple[Attribute, ...] = ()
    blocks: tuple[Block, ...] = field(default=())


# --- the parser -----------------------------------------------------------------------------------
_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, ">": 4, "<=": 4, ">=": 4, "+": 5, "-": 5,
               "*": 6, "/": 6, "%": 6}
_KEYWORDS = {"true": True, "false": False, "null": None}


def number(text: str) -> int | Decimal:
    # int() refuses more than 4300 digits; a Decimal holds any number Terraform does.
    return int(text) if text.isdigit() and len(text) <= 4000 else Decimal(text)


class _Parser:
    def __init__(self, tokens: list[Token] | tuple[Token, ...], newlines: bool = True) -> None:
        self.toks = tokens
        self.i = 0
        self.newlines = [newlines]  # whether newlines are significant where we are

    # token access ----------------------------------------------------------------------------------
    def peek(self) -> Token:
        toks, i = self.toks, self.i
        if not self.newlines[-1]:
            while toks[i].kind == NL:
                i += 1
            self.i = i
        return toks[i]

    def take(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok.kind == PUNCT and tok.value == value

    def expect(self, value: str, summary: str, detail: str) -> Token:
        tok = self.peek()
        if tok.kind != PUNCT or tok.value != value:
            raise HclError(summary, tok.start, detail)
        self.i += 1
        return tok

    def skip_newlines(self) -> None:
        while self.toks[self.i].kind == NL:
            self.i += 1

    # bodies ----------------------------------------------------------------------------------------
    def body(self, closing: bool) -> tuple[Body, int]:
        attributes: list[Attribute] = []
        blocks: list[Block] = []
        while True:
            self.skip_newlines()
            tok = self.toks[self.i]
            if tok.kind == EOF:
                if closing:
                    raise HclError("Unclosed configuration block", tok.start,
                                   "There is no closing brace for this block before the end of the file.")
                return Body(tuple(attributes), tuple(blocks)), tok.start
            if closing and tok.kind == PUNCT and tok.value == "}":
                return Body(tuple(attributes), tuple(blocks)), tok.start
            if tok.kind != IDENT:
                raise HclError("Argument or block definition required", tok.start,
                               "An argument or block definition is required here.")
            self.i += 1
            nxt = self.toks[self.i]
            if nxt.kind == PUNCT and nxt.value == "=":
                self.i += 1
                expr = self.expression()
                attributes.append(Attribute(tok.value, expr, tok.start, expr.end))
                what = "argument"
            else:
                blocks.append(self.block(tok))
                what = "block definition"
            end = self.toks[self.i]
            if end.kind == NL or end.kind == EOF or (closing and end.kind == PUNCT and end.value == "}"):
                continue  # the closing brace of a one-line block (`name { a = 1 }`) ends it too
            raise HclError(f"Missing newline after {what}", end.start, f"An {what} must end with a newline.")

    def block(self, type_tok: Token) -> Block:
        labels: list[str] = []
        while True:
            tok = self.toks[self.i]
            if tok.kind == IDENT or tok.kind == STRING:
                labels.append(tok.value)
                self.i += 1
            elif tok.kind == PUNCT and tok.value == "{":
                break
            else:
                raise HclError("Invalid block definition" if labels else "Argument or block definition required",
                               tok.start, "Either a quoted string block label or an opening brace (\"{\") is "
                               "expected here; an argument is written `name = value`.")
        self.i += 1
        self.newlines.append(True)
        body, close = self.body(closing=True)
        self.newlines.pop()
        self.i += 1  # the closing brace
        return Block(type_tok.value, tuple(labels), body, type_tok.start, close + 1)

    # expressions -----------------------------------------------------------------------------------
    def expression(self) -> Expr:
        cond = self.binary(1)
        if not self.at("?"):
            return cond
        self.i += 1
        true = self.expression()
        self.expect(":", "Missing false expression in conditional",
                    "The conditional operator (...?...:...) requires a false expression, delimited by a colon.")
        false = self.expression()
        return Conditional(cond.start, false.end, cond, true, false)

    def binary(self, level: int) -> Expr:
        left = self.unary()
        while True:
            tok = self.peek()
            prec = _PRECEDENCE.get(tok.value) if tok.kind == PUNCT else None
            if prec is None or prec < level:
                return left
            self.i += 1
            right = self.binary(prec + 1)
            left = Binary(left.start, right.end, tok.value, left, right)

    def unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == PUNCT and tok.value in ("-", "!"):
            self.i += 1
            operand = self.unary()
            return Unary(tok.start, operand.end, tok.value, operand)
        return self.traversals(self.term())

    def term(self) -> Expr:
        tok = self.take()
        kind = tok.kind
        if kind == NUMBER:
            return Literal(tok.start, tok.end, number(tok.value))
        if kind == STRING:
            return Literal(tok.start, tok.end, tok.value)
        if kind == TEMPLATE:
            return self.template(tok)
        if kind == IDENT:
            name = tok.value
            if name in _KEYWORDS:
                return Literal(tok.start, tok.end, _KEYWORDS[name])
            toks = self.toks
            while (toks[self.i].value == ":" and toks[self.i + 1].value == ":" and toks[self.i + 2].kind == IDENT
                   and toks[self.i].kind == PUNCT):  # provider::aws::arn_parse(...) (Terraform 1.8+)
                name += "::" + toks[self.i + 2].value
                self.i += 3
            if self.at("("):
                return self.call(Token(IDENT, name, tok.start, tok.end))
            return Variable(tok.start, tok.end, name)
        if kind == PUNCT:
            if tok.value == "(":
                self.newlines.append(False)
                inner = self.expression()
                close = self.expect(")", "Unbalanced parentheses",
                                    "Expected a closing parenthesis to terminate the expression.")
                self.newlines.pop()
                return Paren(tok.start, close.end, inner)
            if tok.value == "[":
                return self.tuple(tok)
            if tok.value == "{":
                return self.object(tok)
        raise HclError("Invalid expression", tok.start,
                       "Expected the start of an expression, but found an invalid expression token.")

    def traversals(self, expr: Expr) -> Expr:
        while True:
            tok = self.toks[self.i]  # a traversal never follows a newline
            if tok.kind != PUNCT:
                return expr
            if tok.value == ".":
                nxt = self.toks[self.i + 1]
                if nxt.kind == IDENT:
                    self.i += 2
                    expr = GetAttr(expr.start, nxt.end, expr, nxt.value)
                elif nxt.kind == NUMBER and nxt.value.isdigit():
                    self.i += 2  # legacy index: a.0
                    expr = Index(expr.start, nxt.end, expr, Literal(nxt.start, nxt.end, int(nxt.value)))
                elif nxt.kind == PUNCT and nxt.value == "*":
                    self.i += 2
                    expr = self.splat(expr, nxt.end, full=False)
                else:
                    raise HclError("Invalid attribute name", nxt.start, "An attribute name is required after a dot.")
            elif tok.value == "[":
                nxt = self.toks[self.i + 1]
                if nxt.kind == PUNCT and nxt.value == "*" and self.toks[self.i + 2].value == "]":
                    self.i += 3
                    expr = self.splat(expr, self.toks[self.i - 1].end, full=True)
                    continue
                self.i += 1
                self.newlines.append(False)
                key = self.expression()
                close = self.expect("]", "Missing close bracket on index",
                                    "The index operator must end with a closing bracket (\"]\").")
                self.newlines.pop()
                expr = Index(expr.start, close.end, expr, key)
            else:
                return expr

    def splat(self, source: Expr, end: int, full: bool) -> Expr:
        item = SplatItem(end, end)
        each: Expr = item
        while True:
            tok = self.toks[self.i]
            if tok.kind == PUNCT and tok.value == "." and self.toks[self.i + 1].kind == IDENT:
                name = self.toks[self.i + 1]
                self.i += 2
                each = GetAttr(each.start, name.end, each, name.value)
            elif full and tok.kind == PUNCT and tok.value == "[":
                self.i += 1
                self.newlines.append(False)
                key = self.expression()
                close = self.expect("]", "Missing close bracket on index",
                                    "The index operator must end with a closing bracket (\"]\").")
                self.newlines.pop()
                each = Index(each.start, close.end, each, key)
            else:
                break
        return Splat(source.start, max(end, each.end), source, each)

    def call(self, name: Token) -> Expr:
        self.i += 1  # (
        self.newlines.append(False)
        args: list[Expr] = []
        expand = False
        while not self.at(")"):
            args.append(self.expression())
            if self.at("..."):
                self.i += 1
                expand = True
            if self.at(","):
                self.i += 1
                continue
            if not self.at(")"):
                raise HclError("Missing argument separator", self.peek().start,
                               "A comma is required to separate each function argument from the next.")
        close = self.take()
        self.newlines.pop()
        return Call(name.start, close.end, name.value, tuple(args), expand)

    def _for_header(self) -> tuple[str, str, Expr]:
        self.i += 1  # for
        first = self.take()
        if first.kind != IDENT:
            raise HclError("Invalid 'for' expression", first.start,
                           "For expression requires variable name after 'for'.")
        key_var, value_var = "", first.value
        if self.at(","):
            self.i += 1
            second = self.take()
            if second.kind != IDENT:
                raise HclError("Invalid 'for' expression", second.start,
                               "For expression requires value variable name after comma.")
            key_var, value_var = first.value, second.value
        tok = self.take()
        if tok.kind != IDENT or tok.value != "in":
            raise HclError("Invalid 'for' expression", tok.start,
                           "For expression requires the 'in' keyword after its name declarations.")
        collection = self.expression()
        self.expect(":", "Invalid 'for' expression", "For expression requires a colon after the collection expression.")
        return key_var, value_var, collection

    def _for_condition(self) -> Expr | None:
        tok = self.peek()
        if tok.kind == IDENT and tok.value == "if":
            self.i += 1
            return self.expression()
        return None

    def _is_for(self) -> bool:
        """HCL takes `for` as the first thing in brackets or braces as a `for` expression, always:
        `{ for = 1 }` is a broken one, not an object."""
        tok = self.peek()
        return tok.kind == IDENT and tok.value == "for"

    def tuple(self, open_: Token) -> Expr:
        self.newlines.append(False)
        if self._is_for():
            key_var, value_var, collection = self._for_header()
            value = self.expression()
            cond = self._for_condition()
            close = self.expect("]", "Invalid 'for' expression",
                                "Extra characters after the end of the 'for' expression.")
            self.newlines.pop()
            return ForExpr(open_.start, close.end, key_var, value_var, collection, None, value, cond, False)
        items: list[Expr] = []
        while not self.at("]"):
            items.append(self.expression())
            if self.at(","):
                self.i += 1
            elif not self.at("]"):
                raise HclError("Missing item separator", self.peek().start,
                               "Expected a comma to mark the beginning of the next item.")
        close = self.take()
        self.newlines.pop()
        return TupleCons(open_.start, close.end, tuple(items))

    def object(self, open_: Token) -> Expr:
        self.newlines.append(False)
        if self._is_for():
            key_var, value_var, collection = self._for_header()
            key_expr = self.expression()
            self.expect("=>", "Invalid 'for' expression", "Key expression is required when building an object.")
            value = self.expression()
            group = self.at("...")
            if group:
                self.i += 1
            cond = self._for_condition()
            close = self.expect("}", "Invalid 'for' expression",
                                "Extra characters after the end of the 'for' expression.")
            self.newlines.pop()
            return ForExpr(open_.start, close.end, key_var, value_var, collection, key_expr, value, cond, group)
        self.newlines[-1] = True
        items: list[tuple[Expr, Expr]] = []
        while True:
            self.skip_newlines()
            tok = self.toks[self.i]
            if tok.kind == PUNCT and tok.value == "}":
                self.i += 1
                break
            if tok.kind == EOF:
                raise HclError("Unterminated object constructor", tok.start,
                               "There is no corresponding closing brace before the end of the file.")
            nxt = self.toks[self.i + 1]
            if tok.kind == IDENT and nxt.kind == PUNCT and nxt.value in ("=", ":"):
                key: Expr = Literal(tok.start, tok.end, tok.value)  # a bare name is the key itself
                self.i += 1
            else:
                self.newlines.append(False)
                key = self.expression()
                self.newlines.pop()
            sep = self.toks[self.i]
            if sep.kind != PUNCT or sep.value not in ("=", ":"):
                raise HclError("Missing key/value separator", sep.start,
                               "Expected an equals sign (\"=\") to mark the beginning of the attribute value.")
            self.i += 1
            value = self.expression()
            items.append((key, value))
            tok = self.toks[self.i]
            if tok.kind == PUNCT and tok.value == ",":
                self.i += 1
            elif tok.kind == NL:
                pass
            elif not (tok.kind == PUNCT and tok.value == "}"):
                raise HclError("Missing attribute separator", tok.start,
                               "Expected a newline or comma to mark the beginning of the next attribute.")
        self.newlines.pop()
        return ObjectCons(open_.start, self.toks[self.i - 1].end, tuple(items))

    # templates -------------------------------------------------------------------------------------
    def template(self, tok: Token) -> Expr:
        parts: list[TemplatePart] = tok.value
        if len(parts) == 1 and isinstance(parts[0], Interpolation):
            return Wrap(tok.start, tok.end, _sub_expression(parts[0].tokens, parts[0].start))
        items, rest = _template_items(parts, 0, ())
        if rest != len(parts):
            raise _stray(parts[rest])
        if not items:
            return Literal(tok.start, tok.end, "")
        if len(items) == 1 and isinstance(items[0], str):
            return Literal(tok.start, tok.end, items[0])
        return Template(tok.start, tok.end, tuple(items))


def _stray(part: TemplatePart) -> HclError:
    assert isinstance(part, Directive)
    return HclError(f"Unexpected {part.keyword} directive", part.start,
                    f"The '{part.keyword}' directive has no matching opening directive.")


def _sub_expression(tokens: tuple[Token, ...], start: int) -> Expr:
    end = tokens[-1].end if tokens else start
    parser = _Parser([*tokens, Token(EOF, "", end, end)], newlines=False)
    if not tokens:
        raise HclError("Invalid expression", start, "Expected the start of an expression.")
    expr = parser.expression()
    if parser.peek().kind != EOF:
        raise HclError("Extra characters after interpolation expression", parser.peek().start,
                       "Expected a closing brace to end the interpolation expression.")
    return expr


def _template_items(parts: list[TemplatePart], i: int, ends: tuple[str, ...]) -> tuple[list[TemplateItem], int]:
    """Items from parts[i] up to a directive whose keyword is in `ends` (its index is returned)."""
    items: list[TemplateItem] = []
    while i < len(parts):
        part = parts[i]
        if isinstance(part, str):
            items.append(part)
        elif isinstance(part, Interpolation):
            items.append(_sub_expression(part.tokens, part.start))
        elif part.keyword in ends:
            return items, i
        elif part.keyword == "if":
            cond = _sub_expression(part.tokens, part.start)
            then, j = _template_items(parts, i + 1, ("else", "endif"))
            otherwise: list[TemplateItem] = []
            if j < len(parts) and isinstance(parts[j], Directive) and parts[j].keyword == "else":  # type: ignore[union-attr]
                otherwise, j = _template_items(parts, j + 1, ("endif",))
            if j >= len(parts):
                raise HclError("Unterminated template string", part.start, "The 'if' directive has no 'endif'.")
            items.append(TemplateIf(cond, tuple(then), tuple(otherwise), part.start))
            i = j
        elif part.keyword == "for":
            key_var, value_var, collection = _template_for(part)
            body, j = _template_items(parts, i + 1, ("endfor",))
            if j >= len(parts):
                raise HclError("Unterminated template string", part.start, "The 'for' directive has no 'endfor'.")
            items.append(TemplateFor(key_var, value_var, collection, tuple(body), part.start))
            i = j
        else:
            return items, i  # a stray else/endif/endfor: the caller reports it
        i += 1
    return items, i


def _template_for(part: Directive) -> tuple[str, str, Expr]:
    toks = part.tokens
    names = [t.value for t in toks[:3] if t.kind == IDENT]
    if len(toks) >= 4 and toks[1].kind == PUNCT and toks[1].value == "," and toks[3].value == "in":
        return names[0], names[1], _sub_expression(toks[4:], part.start)
    if len(toks) >= 2 and toks[0].kind == IDENT and toks[1].value == "in":
        return "", toks[0].value, _sub_expression(toks[2:], part.start)
    raise HclError("Invalid 'for' directive", part.start, "For directive requires 'in' keyword after names.")


def parse_body(tokens: list[Token]) -> Body:
    body, _ = _Parser(tokens).body(closing=False)
    return body


def walk(node: Any) -> Iterator[Any]:
    """Every node under `node` (itself included), and the literal text of templates, depth first."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, tuple | list):
            stack.extend(reversed(n))
        elif isinstance(n, str) or hasattr(n, "__slots__"):
            yield n
            if not isinstance(n, str):
                stack.extend(reversed([getattr(n, s) for s in n.__slots__]))
