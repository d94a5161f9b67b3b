"""Ids as people type them: a full id, or a unique prefix of at least :data:`MIN_PREFIX`
characters (what the CLI's lists show).

A UUID prefix is looked up as a range of the id column, ``prefix000… <= id <= prefixfff…``:
on PostgreSQL's ``uuid`` type and on SQLite's ``CHAR(32)`` hex text the order is the same
(bytewise = lowercase hex), so the primary-key index answers it, with no cast and no LIKE.
A text id (an API key's public ``mr_…``) is compared on its leading characters, which no
wildcard in the prefix can widen.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.errors import Conflict, Invalid, NotFound

#: The shortest prefix accepted, and the shortest a list shows.
MIN_PREFIX = 8
#: How many candidates an ambiguous prefix's 409 lists.
MAX_CANDIDATES = 10

_HEX = frozenset("0123456789abcdef")
_T = TypeVar("_T")


def resolve_uuid(s: Session, column: Any, raw: uuid.UUID | str, *, what: str) -> uuid.UUID:
    """The one id in ``column`` that is ``raw`` or starts with it. A full id is returned as it
    is (the caller's lookup answers 404 for an unknown one); a prefix shorter than
    :data:`MIN_PREFIX` hex digits, or not hex, is :class:`Invalid`; an unknown prefix is
    :class:`NotFound`; one that several ids share is :class:`Conflict` listing them."""
    if isinstance(raw, uuid.UUID):
        return raw
    text = raw.strip().lower()
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    digits = text.replace("-", "")
    if not digits or len(digits) > 32 or not set(digits) <= _HEX:
        raise Invalid(
            f"{raw[:80]!r} is not a {what} id: give the full id or its first {MIN_PREFIX} "
            "or more hex digits"
        )
    _check_length(raw, len(digits), what=what)
    low, high = uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
    found: list[uuid.UUID] = list(
        s.scalars(
            select(column)
            .where(column.between(low, high))
            .order_by(column)
            .limit(MAX_CANDIDATES + 1)
        )
    )
    return _one(found, raw.strip(), what=what)


def resolve_text(s: Session, column: Any, raw: str, *, what: str) -> str:
    """The one value of the text ``column`` that is ``raw`` or starts with it (at least
    :data:`MIN_PREFIX` characters), with the same errors as :func:`resolve_uuid`."""
    _check_length(raw, len(raw), what=what)
    if s.scalar(select(column).where(column == raw)) is not None:
        return raw
    found: list[str] = list(
        s.scalars(
            select(column)
            .where(func.substr(column, 1, len(raw)) == raw)
            .order_by(column)
            .limit(MAX_CANDIDATES + 1)
        )
    )
    return _one(found, raw, what=what)


def _check_length(raw: str, length: int, *, what: str) -> None:
    if length < MIN_PREFIX:
        raise Invalid(
            f"{raw[:80]!r} is too short for a {what} id: give the full id or its first "
            f"{MIN_PREFIX} or more characters, as lists show them",
            minLength=MIN_PREFIX,
        )


def _one(found: list[_T], prefix: str, *, what: str) -> _T:
    if not found:
        raise NotFound(f"no {what} has an id starting with {prefix!r}")
    if len(found) > 1:
        more = " (and more)" if len(found) > MAX_CANDIDATES else ""
        raise Conflict(
            f"{prefix!r} is the start of several {what} ids{more}: give more characters",
            candidates=[str(f) for f in found[:MAX_CANDIDATES]],
        )
    return found[0]
