"""What creating a version sends to the database, and what it leaves behind in the pool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from registry.auth import Principal
from registry.models import AIModel, AIModelVersion, UsageLog
from registry.services import Registry


@pytest.fixture
def actor(registry: Registry) -> Principal:
    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    principal = registry.keys.authenticate(issued.token)
    registry.models.create(principal, name="m", provider="Internal", task_type="ImageGeneration")
    return principal


@pytest.fixture
def statements(registry: Registry) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(registry.engine, "before_cursor_execute", record)
    yield sent
    event.remove(registry.engine, "before_cursor_execute", record)


def test_a_create_is_two_statements_on_postgresql(
    registry: Registry, actor: Principal, statements: list[str]
) -> None:
    """The model's id, then the version and its audit row together; on PostgreSQL in
    autocommit (no BEGIN, no COMMIT), elsewhere the audit row in a statement of its own."""
    registry.versions.create(actor, "m", version_number="1.0")
    postgresql = registry.engine.dialect.name == "postgresql"
    assert len(statements) == (2 if postgresql else 3), statements
    assert statements[0].startswith("SELECT ai_model.id")
    if postgresql:
        assert statements[1].startswith("WITH audited AS")
        assert "INSERT INTO usage_log" in statements[1]


def test_the_pool_gets_a_transactional_connection_back(
    registry: Registry, actor: Principal
) -> None:
    """The create's autocommit mode ends with it: the next transaction on the same pooled
    connection still rolls back."""
    registry.engine.pool.dispose()  # one pooled connection from here on, reused below
    registry.versions.create(actor, "m", version_number="1.0")
    with registry.sessions() as s:
        s.add(AIModel(name="rolled-back", provider="Internal", task_type="ImageGeneration"))
        s.flush()
        s.rollback()
    with registry.sessions() as s:
        assert s.scalar(select(AIModel.id).where(AIModel.name == "rolled-back")) is None
        version = s.scalar(select(AIModelVersion).where(AIModelVersion.version_number == "1.0"))
        assert version is not None
        (log,) = s.scalars(select(UsageLog).where(UsageLog.action_type == "version_created"))
        assert log.details == {
            "modelId": str(version.model_id),
            "modelVersionId": str(version.id),
            "versionNumber": "1.0",
            "format": "ONNX",
        }
