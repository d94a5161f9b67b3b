"""The audit trail: every mutating action writes one UsageLog row in its own transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from registry.auth import Principal
from registry.models import UsageLog
from registry.types import utcnow


def record(session: Session, actor: Principal, action_type: str, **details: Any) -> None:
    session.add(
        UsageLog(
            user_id=actor.user_id,
            api_client_id=actor.api_client_id,
            action_type=action_type,
            details={k: _plain(v) for k, v in details.items()},
            timestamp=utcnow(),
        )
    )


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)
