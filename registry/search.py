"""What ``GET /models`` and ``GET /models/{name}/versions`` filter and sort on, and the keyset
cursor that pages through any of those orders.

The cursor is the existing scheme (registry/pagination.py): the sort key of the last item,
with a unique tie-breaker. The default orders keep their cursors as they were; any other order
adds its own name to the cursor, so a cursor is refused by a listing sorted differently rather
than silently skipping or repeating rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, Table, case, exists, not_, tuple_
from sqlalchemy.orm import InstrumentedAttribute, aliased

from registry.errors import Invalid
from registry.filters import Field, Fields, compile_filter
from registry.models import (
    TASK_TYPES,
    VERSION_STATUSES,
    AIModel,
    AIModelValidationResult,
    AIModelVersion,
    ValidationRequest,
    model_tags,
    version_tags,
)
from registry.pagination import decode_cursor, encode_cursor
from registry.tags import owner_column
from registry.vocabulary import VALIDATION_PENDING, ArtifactFormat, CheckStatus, values

#: A version's validation verdict, from the latest finished run of its *current* artifact
#: (the result ``validation_result_id`` points at, if bound to the current digest): Passed
#: when both checks passed, Failed otherwise; with no such result, Pending while a run of the
#: digest is queued or running, else None.
VERDICTS = ("Passed", "Failed", "Pending", "None")


def _tag_predicate(table: Table, owner_id: InstrumentedAttribute[uuid.UUID]) -> Any:
    owner = table.c[owner_column(table)]

    def predicate(key: str, op: str, wanted: Sequence[str]) -> ColumnElement[bool]:
        """``=``/``IN``: the tag is set to (one of) the value(s); ``!=``/``NOT IN``: it is set,
        to another value. A model without the tag matches neither; ``NOT tag.k = 'v'`` also
        matches those."""
        match = table.c.value.in_(list(wanted)) if "IN" in op else table.c.value == wanted[0]
        if op in ("!=", "NOT IN"):
            match = not_(match)
        return exists().where(owner == owner_id, table.c.key == key, match)

    return predicate


def _verdict() -> ColumnElement[str]:
    result = aliased(AIModelValidationResult)
    bound = (
        result.id == AIModelVersion.validation_result_id,
        result.artifact_sha256 == AIModelVersion.sha256,
    )
    passed = exists().where(
        *bound,
        result.security_scan_status == CheckStatus.PASSED.value,
        result.functional_status == CheckStatus.PASSED.value,
    )
    pending = exists().where(
        ValidationRequest.model_version_id == AIModelVersion.id,
        ValidationRequest.sha256 == AIModelVersion.sha256,
        ValidationRequest.status.in_([s.value for s in VALIDATION_PENDING]),
    )
    return case(
        (passed, "Passed"), (exists().where(*bound), "Failed"), (pending, "Pending"), else_="None"
    )


MODEL_FIELDS = Fields(
    "models",
    {
        "name": Field(AIModel.name),
        "task": Field(AIModel.task_type, "enum", TASK_TYPES),
        "taskType": Field(AIModel.task_type, "enum", TASK_TYPES),
        "provider": Field(AIModel.provider),
        "createdAt": Field(AIModel.created_at, "time"),
        "updatedAt": Field(AIModel.updated_at, "time"),
    },
    _tag_predicate(model_tags, AIModel.id),
)
VERSION_FIELDS = Fields(
    "versions",
    {
        "version": Field(AIModelVersion.version_number),
        "status": Field(AIModelVersion.status, "enum", VERSION_STATUSES),
        "format": Field(AIModelVersion.format, "enum", values(ArtifactFormat)),
        "validation": Field(_verdict(), "enum", VERDICTS),
        "createdAt": Field(AIModelVersion.created_at, "time"),
        "updatedAt": Field(AIModelVersion.updated_at, "time"),
    },
    _tag_predicate(version_tags, AIModelVersion.id),
)


# -- sorting and the cursor -------------------------------------------------------------------


@dataclass(frozen=True)
class SortKey:
    attr: str
    kind: Literal["text", "time", "uuid"]

    def dump(self, value: Any) -> str:
        return value.isoformat() if self.kind == "time" else str(value)

    def load(self, raw: Any) -> Any:
        if not isinstance(raw, str):
            raise ValueError(raw)
        if self.kind == "time":
            return datetime.fromisoformat(raw)
        return uuid.UUID(raw) if self.kind == "uuid" else raw


@dataclass(frozen=True)
class Order:
    spec: str
    keys: tuple[SortKey, ...]
    descending: bool
    default: bool


@dataclass(frozen=True)
class Sorting:
    """The orders one listing accepts: ``field [asc|desc]`` (ascending when not said)."""

    entity: Any
    choices: Mapping[str, SortKey]
    tiebreak: SortKey
    default: str

    def parse(self, raw: str | None) -> Order:
        words = (raw or self.default).split()
        name = words[0] if words else ""
        direction = words[1].lower() if len(words) > 1 else "asc"
        if name not in self.choices or len(words) > 2 or direction not in ("asc", "desc"):
            raise Invalid(
                f"orderBy is a field and an optional asc or desc, the field one of "
                f"{', '.join(self.choices)}; {raw!r} is not",
                allowed=list(self.choices),
            )
        spec = f"{name} {direction}"
        key = self.choices[name]
        keys = (key,) if key == self.tiebreak else (key, self.tiebreak)
        return Order(spec, keys, direction == "desc", spec == self.default)

    def apply(self, stmt: Select[Any], order: Order, cursor: str | None) -> Select[Any]:
        cols = [getattr(self.entity, k.attr) for k in order.keys]
        stmt = stmt.order_by(*(c.desc() if order.descending else c.asc() for c in cols))
        if not cursor:
            return stmt
        raw = decode_cursor(cursor, arity=len(cols) + (0 if order.default else 1))
        if not order.default and raw[-1] != order.spec:
            raise Invalid(f"this cursor is for another order than orderBy={order.spec!r}")
        try:
            after = [k.load(v) for k, v in zip(order.keys, raw, strict=False)]
        except (TypeError, ValueError):
            raise Invalid("cursor is not one this server issued") from None
        left: Any = cols[0] if len(cols) == 1 else tuple_(*cols)
        right: Any = after[0] if len(cols) == 1 else tuple(after)
        return stmt.where(left < right if order.descending else left > right)

    def cursor(self, order: Order, last: Any) -> str:
        dumped = [k.dump(getattr(last, k.attr)) for k in order.keys]
        return encode_cursor(dumped if order.default else [*dumped, order.spec])


_NAME = SortKey("name", "text")
_ID = SortKey("id", "uuid")
MODEL_SORTING = Sorting(
    AIModel,
    {
        "name": _NAME,
        "createdAt": SortKey("created_at", "time"),
        "updatedAt": SortKey("updated_at", "time"),
    },
    _NAME,
    "name asc",
)
VERSION_SORTING = Sorting(
    AIModelVersion,
    {
        "createdAt": SortKey("created_at", "time"),
        "updatedAt": SortKey("updated_at", "time"),
        "version": SortKey("version_number", "text"),
    },
    _ID,
    "createdAt desc",
)


def where_filter(stmt: Select[Any], text: str | None, fields: Fields) -> Select[Any]:
    return stmt if text is None else stmt.where(compile_filter(text, fields))
