"""The ``filter`` of a list endpoint: a small grammar, parsed by recursive descent into a tree,
then compiled into a SQLAlchemy expression whose every value is a bound parameter.

    filter     := or
    or         := and ("OR" and)*
    and        := unary ("AND" unary)*
    unary      := "NOT" unary | "(" or ")" | comparison
    comparison := field op value | field ["NOT"] "IN" "(" value ("," value)* ")"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    value      := 'single' | "double" (\\' \\" \\\\ escape; '' inside '…' too) | bare word
    field      := name | "tag." key        (MLflow's "tags." is accepted too)

Keywords are case-insensitive. Nothing of the text ever reaches SQL as text: a value is a
parameter, a field is looked up in the endpoint's table of fields, and anything else is an
:class:`FilterError` (422) that says at which position (counting from 0) what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, not_, or_
from sqlalchemy.orm import QueryableAttribute

from registry.errors import Invalid
from registry.tags import KEY_RULE, TAG_KEY_PATTERN

#: Longest filter, and deepest nesting of parentheses and NOTs, that is parsed.
MAX_FILTER_LENGTH = 2000
MAX_DEPTH = 32

Kind = Literal["enum", "text", "time"]
EQUALITY = ("=", "!=", "IN", "NOT IN")
ORDERING = ("<", "<=", ">", ">=")


class FilterError(Invalid):
    """A filter that does not parse or names what the endpoint does not have."""

    title = "Invalid filter"

    def __init__(self, detail: str, *, position: int, **extra: Any) -> None:
        super().__init__(f"filter: {detail} at position {position}", position=position, **extra)


# -- the tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: Literal["word", "string", "op", "(", ")", ",", "end"]
    text: str
    pos: int


_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+/\-]*")
_OPS = ("==", "!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCTUATION: dict[str, Literal["(", ")", ","]] = {"(": "(", ")": ")", ",": ","}
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[ch], ch, i))
            i += 1
        elif ch in "'\"":
            value, end = _string(text, i)
            tokens.append(Token("string", value, i))
            i = end
        elif op := next((o for o in _OPS if text.startswith(o, i)), None):
            tokens.append(Token("op", {"==": "=", "<>": "!="}.get(op, op), i))
            i += len(op)
        elif m := _WORD.match(text, i):
            tokens.append(Token("word", m.group(), i))
            i = m.end()
        else:
            raise FilterError(
                f"unexpected character {ch!r}; expected a field, a value, an operator, "
                "'(', ')' or ','",
                position=i,
            )
    tokens.append(Token("end", "", len(text)))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise FilterError(
                    f"unknown escape \\{nxt}; expected \\', \\\", \\\\, \\n or \\t", position=i
                )
            out.append(_ESCAPES[nxt])
            i += 2
        elif ch == quote and text[i + 1 : i + 2] == quote:
            out.append(quote)
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise FilterError(f"unterminated string; expected a closing {quote}", position=start)


# -- the tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    values: tuple[str, ...]
    field_pos: int
    value_pos: tuple[int, ...]


@dataclass(frozen=True)
class BoolOp:
    op: Literal["AND", "OR"]
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Comparison | BoolOp | Not


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def at(self, kind: str) -> bool:
        return self.tok.kind == kind

    def keyword(self, *words: str) -> bool:
        return self.at("word") and self.tok.text.upper() in words

    def take(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def fail(self, expected: str) -> FilterError:
        found = "the end of the filter" if self.at("end") else repr(self.tok.text)
        return FilterError(f"expected {expected}, found {found}", position=self.tok.pos)

    def parse(self) -> Node:
        node = self.or_()
        if not self.at("end"):
            raise self.fail("AND, OR or the end of the filter")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.keyword("OR"):
            self.take()
            node = BoolOp("OR", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.unary()
        while self.keyword("AND"):
            self.take()
            node = BoolOp("AND", node, self.unary())
        return node

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"nested more than {MAX_DEPTH} deep", position=self.tok.pos)
        try:
            if self.keyword("NOT"):
                self.take()
                return Not(self.unary())
            if self.at("("):
                self.take()
                node = self.or_()
                if not self.at(")"):
                    raise self.fail("')'")
                self.take()
                return node
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> Comparison:
        if not self.at("word") or self.keyword("AND", "OR", "IN"):
            raise self.fail("a field name or '('")
        field = self.take()
        if self.keyword("NOT", "IN"):
            negated = self.take().text.upper() == "NOT"
            if negated and not self.keyword("IN"):
                raise self.fail("IN after NOT")
            if negated:
                self.take()
            if not self.at("("):
                raise self.fail("'(' and a list of values")
            self.take()
            values = [self.value()]
            while self.at(","):
                self.take()
                values.append(self.value())
            if not self.at(")"):
                raise self.fail("',' or ')'")
            self.take()
            op = "NOT IN" if negated else "IN"
            return Comparison(
                field.text,
                op,
                tuple(v.text for v in values),
                field.pos,
                tuple(v.pos for v in values),
            )
        if not self.at("op"):
            raise self.fail("an operator (=, !=, <, <=, >, >=, IN)")
        op = self.take().text
        value = self.value()
        return Comparison(field.text, op, (value.text,), field.pos, (value.pos,))

    def value(self) -> Token:
        if self.at("string") or (self.at("word") and not self.keyword("AND", "OR", "NOT", "IN")):
            return self.take()
        raise self.fail("a value ('quoted' or a bare word)")


def parse_filter(text: str) -> Node:
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"longer than {MAX_FILTER_LENGTH} characters", position=MAX_FILTER_LENGTH)
    if "\x00" in text:
        raise FilterError("a NUL character cannot be matched", position=text.index("\x00"))
    if not text.strip():
        raise FilterError("expected a comparison, found an empty filter", position=0)
    return _Parser(text).parse()


# -- compiling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A field a filter may name: the SQL expression it reads and how its values are read."""

    column: ColumnElement[Any] | QueryableAttribute[Any]
    kind: Kind = "text"
    allowed: tuple[str, ...] = ()


TagPredicate = Callable[[str, str, Sequence[str]], ColumnElement[bool]]
"""``(key, "=" | "!=" | "IN" | "NOT IN", values)`` → the condition on the entity's tags."""


@dataclass(frozen=True)
class Fields:
    """What one endpoint can filter on."""

    entity: str
    fields: Mapping[str, Field]
    tag: TagPredicate

    def names(self) -> list[str]:
        return [*self.fields, "tag.<key>"]


def compile_filter(text: str, fields: Fields) -> ColumnElement[bool]:
    return _compile(parse_filter(text), fields)


def _compile(node: Node, fields: Fields) -> ColumnElement[bool]:
    if isinstance(node, Not):
        return not_(_compile(node.operand, fields))
    if isinstance(node, BoolOp):
        join = and_ if node.op == "AND" else or_
        return join(_compile(node.left, fields), _compile(node.right, fields))
    return _comparison(node, fields)


def _comparison(c: Comparison, fields: Fields) -> ColumnElement[bool]:
    name = c.field
    if name.lower().startswith(("tag.", "tags.")):
        key = name.split(".", 1)[1]
        if not TAG_KEY_PATTERN.fullmatch(key):
            raise FilterError(
                f"{KEY_RULE}; {key!r} is not", position=c.field_pos + len(name) - len(key)
            )
        _check_op(c, EQUALITY, name)
        return fields.tag(key, c.op, c.values)
    field = fields.fields.get(name)
    if field is None:
        raise FilterError(
            f"unknown field {name!r}; the fields of {fields.entity} are "
            + ", ".join(fields.names()),
            position=c.field_pos,
            field=name,
            validFields=fields.names(),
        )
    _check_op(c, EQUALITY + ORDERING if field.kind == "time" else EQUALITY, name)
    values = [_value(field, name, v, pos) for v, pos in zip(c.values, c.value_pos, strict=True)]
    col = field.column if isinstance(field.column, ColumnElement) else field.column.expression
    if c.op == "IN":
        return col.in_(values)
    if c.op == "NOT IN":
        return col.not_in(values)
    compare: dict[str, Callable[[Any], ColumnElement[bool]]] = {
        "=": col.__eq__,
        "!=": col.__ne__,
        "<": col.__lt__,
        "<=": col.__le__,
        ">": col.__gt__,
        ">=": col.__ge__,
    }
    return compare[c.op](values[0])


def _check_op(c: Comparison, allowed: tuple[str, ...], name: str) -> None:
    if c.op not in allowed:
        raise FilterError(
            f"{name} takes {', '.join(allowed)}, not {c.op}",
            position=c.field_pos + len(name),
        )


def _value(field: Field, name: str, raw: str, pos: int) -> Any:
    if field.kind == "enum" and raw not in field.allowed:
        raise FilterError(
            f"{name} is one of {', '.join(field.allowed)}; {raw!r} is not",
            position=pos,
            allowed=list(field.allowed),
        )
    if field.kind == "time":
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            raise FilterError(
                f"{name} needs an ISO 8601 time such as '2026-01-31T12:00:00Z'; {raw!r} is not",
                position=pos,
            ) from None
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return raw
