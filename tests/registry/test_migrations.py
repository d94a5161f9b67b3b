"""The migrations own the schema: up, down, up again, and no drift from the ORM."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from registry import migrate
from registry.db import create_db_engine
from registry.models import Base

SEED_TABLES = {
    "user",
    "api_client",
    "usage_log",
    "ai_model",
    "ai_model_version",
    "ai_model_validation_result",
    "ai_model_deployment",
    "ai_model_feedback",
}
ADDED_TABLES = {
    "artifact_upload",
    "validation_request",
    "deployment_route",
    "routing_state",
    "deployment_event",
    "controller_lease",
    "model_tags",
    "version_tags",
}


def _diff(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_has_no_drift(database_url: str) -> None:
    # database_url arrives migrated to head.
    assert _tables(database_url) >= SEED_TABLES
    assert _diff(database_url) == []

    migrate.downgrade(database_url, "base")
    assert _tables(database_url) == set()

    migrate.upgrade(database_url)
    assert _tables(database_url) == SEED_TABLES | ADDED_TABLES
    assert _diff(database_url) == []


def test_seed_names_and_constraints_are_kept(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        insp = inspect(engine)
        indexes = {i["name"] for t in SEED_TABLES for i in insp.get_indexes(t)}
        for name in (
            "idx_aimodel_provider_tasktype",
            "idx_aimodelversion_modelid",
            "idx_aimodelversion_status",
            "idx_aimodelvalidationresult_versionid",
            "idx_aimodelvalidationresult_timestamp",
            "idx_aimodeldeployment_versionid_env",
            "idx_aimodeldeployment_status",
            "idx_aimodelfeedback_userid",
            "idx_aimodelfeedback_generationrequestid",
            "idx_aimodelfeedback_modelversionid",
            "idx_apiclient_apikey_unique",
            "idx_apiclient_userid",
            "idx_usagelog_userid_timestamp",
            "idx_usagelog_actiontype",
            "idx_usagelog_generationrequestid",
            "idx_usagelog_apiclientid",
            "idx_user_email_unique",
            "idx_user_username_unique",
            "idx_user_social_unique",
            "idx_user_subscriptiontier",
            "idx_user_deletedat",
        ):
            assert name in indexes, name
        uniques = {u["name"] for t in SEED_TABLES for u in insp.get_unique_constraints(t)}
        assert {
            "uq_aimodel_name",
            "uq_aimodelversion_model_version",
            "uq_apiclient_apikey",
            "uq_user_email",
            "uq_user_username",
            "uq_user_social",
        } <= uniques
        fks = {
            (
                fk["referred_table"],
                tuple(fk["constrained_columns"]),
                (fk.get("options") or {}).get("ondelete"),
            )
            for fk in insp.get_foreign_keys("ai_model_version")
        }
        assert ("ai_model", ("model_id",), "CASCADE") in fks
        assert ("ai_model_validation_result", ("validation_result_id",), "SET NULL") in fks
        columns = {c["name"]: c for c in insp.get_columns("ai_model_version")}
        assert columns["version_number"]["type"].length == 50
        assert columns["source_path"]["type"].length == 1024
        assert columns["status"]["nullable"] is False
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        pytest.param(
            "INSERT INTO ai_model (id, name, provider, task_type, is_active, created_at, "
            "updated_at) VALUES ({id}, 'm', 'p', 'Poetry', true, {now}, {now})",
            "task_type",
            id="aimodel-tasktype-check",
        ),
        pytest.param(
            "INSERT INTO ai_model_feedback (id, user_id, rating, feedback_timestamp, "
            "created_at) VALUES ({id}, {id}, 6, {now}, {now})",
            "rating",
            id="feedback-rating-check",
        ),
    ],
)
def test_check_constraints_hold_in_the_database(
    database_url: str, statement: str, constraint: str
) -> None:
    engine = create_db_engine(database_url)
    sqlite = engine.dialect.name == "sqlite"
    new_id = "'0123456789abcdef0123456789abcdef'" if sqlite else "gen_random_uuid()"
    now = "CURRENT_TIMESTAMP"
    try:
        with engine.begin() as conn:
            if sqlite:  # the row's user does not exist: only the CHECK is under test here
                conn.execute(text("PRAGMA foreign_keys=OFF"))
            with pytest.raises(IntegrityError, match=constraint):
                conn.execute(text(statement.format(id=new_id, now=now)))
    finally:
        engine.dispose()


def test_pg_usage_log_id_is_bigserial(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        if engine.dialect.name != "postgresql":
            pytest.skip("BIGSERIAL is PostgreSQL's")
        with engine.connect() as conn:
            data_type = conn.scalar(
                text(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name='usage_log' AND column_name='id'"
                )
            )
            default = conn.scalar(
                text(
                    "SELECT column_default FROM information_schema.columns "
                    "WHERE table_name='usage_log' AND column_name='id'"
                )
            )
        assert data_type == "bigint"
        assert default is not None
        assert default.startswith("nextval(")
    finally:
        engine.dispose()


def test_the_validation_phase_migration_goes_down_and_up(database_url: str) -> None:
    def columns() -> set[str]:
        engine = create_db_engine(database_url)
        try:
            return {c["name"] for c in inspect(engine).get_columns("validation_request")}
        finally:
            engine.dispose()

    assert "phase" in columns()
    migrate.downgrade(database_url, "0005")
    assert "phase" not in columns()
    assert "attempts" in columns()
    migrate.upgrade(database_url)
    assert "phase" in columns()
    assert _diff(database_url) == []
