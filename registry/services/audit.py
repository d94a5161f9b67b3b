"""The audit trail: every mutating action writes one UsageLog row in its own transaction."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Connection, Insert, Table, bindparam, insert
from sqlalchemy.orm import Session

from registry.auth import Principal
from registry.models import UsageLog
from registry.types import utcnow


def entry(actor: Principal, action_type: str, **details: Any) -> dict[str, Any]:
    """The column values of the UsageLog row that says ``actor`` did ``action_type``."""
    return {
        "user_id": actor.user_id,
        "api_client_id": actor.api_client_id,
        "action_type": action_type,
        "details": {k: _plain(v) for k, v in details.items()},
        "timestamp": utcnow(),
    }


def record(session: Session, actor: Principal, action_type: str, **details: Any) -> None:
    """Add the row to ``session``: it is written with the transaction's other changes."""
    session.add(UsageLog(**entry(actor, action_type, **details)))


def audited_insert(table: Table, columns: Iterable[str]) -> Insert:
    """A reusable INSERT into ``table`` of ``columns``, each bound to the parameter of its name,
    for :func:`execute_audited`. Built once: a statement built per call costs more CPU than
    the database spends on it."""
    return insert(table).values(
        {c: bindparam(f"{_NEW}{c}", type_=table.c[c].type) for c in columns}
    )


def execute_audited(
    conn: Connection, statement: Insert, params: dict[str, Any], audited: dict[str, Any]
) -> None:
    """Execute ``statement`` (from :func:`audited_insert`) with ``params`` (by column) and write the
    ``audited`` :func:`entry`, in one round trip where the database allows it: on PostgreSQL
    as one statement, the insert a data-modifying CTE (which runs to completion whether or not
    it is read); elsewhere as two. Either way both rows are in the caller's transaction, or
    neither is."""
    new, log = _prefixed(params, _NEW), _prefixed(audited, _AUDIT)
    if conn.dialect.name == "postgresql":
        conn.execute(_with_audit_row(statement), {**new, **log})
    else:
        conn.execute(statement, new)
        conn.execute(_AUDIT_ROW, log)


_LOG = cast(Table, UsageLog.__table__)
_LOG_COLUMNS = ("user_id", "api_client_id", "action_type", "details", "timestamp")
#: Parameter prefixes: SQLAlchemy reserves a column's own name for its VALUES.
_NEW, _AUDIT = "new_", "audit_"
_AUDIT_ROW = insert(_LOG).values(
    {c: bindparam(f"{_AUDIT}{c}", type_=_LOG.c[c].type) for c in _LOG_COLUMNS}
)


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


@functools.cache
def _with_audit_row(statement: Insert) -> Insert:
    return _AUDIT_ROW.add_cte(statement.cte("audited"))


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)
