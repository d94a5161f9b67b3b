"""The audit trail: every mutating action writes one UsageLog row in its own transaction."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Insert, Table, insert
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


def execute_audited(session: Session, statement: Insert, audited: dict[str, Any]) -> None:
    """Execute ``statement``, a Core INSERT, and write the ``audited`` :func:`entry`, in one
    round trip where the database allows it: on PostgreSQL as one statement, the insert a
    data-modifying CTE (which runs to completion whether or not it is read); elsewhere as two.
    Either way both rows are in the caller's transaction, or neither is."""
    log = insert(cast(Table, UsageLog.__table__)).values(audited)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(log.add_cte(statement.cte("audited")))
    else:
        session.execute(statement)
        session.execute(log)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)
