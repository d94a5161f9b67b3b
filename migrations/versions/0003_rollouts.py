"""Rollouts: progress columns on ai_model_deployment, the routing table, the event ledger and
the controller lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:00:49.185914
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "controller_lease",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_controller_lease")),
    )
    op.create_table(
        "routing_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_state")),
    )
    op.create_table(
        "deployment_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("environment", sa.String(length=50), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=True),
        sa.Column("version_number", sa.String(length=50), nullable=True),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["ai_model_deployment.id"],
            name=op.f("fk_deployment_event_deployment_id_ai_model_deployment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ai_model.id"],
            name=op.f("fk_deployment_event_model_id_ai_model"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_deployment_event_model_version_id_ai_model_version"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_event")),
    )
    with op.batch_alter_table("deployment_event", schema=None) as batch_op:
        batch_op.create_index(
            "idx_deploymentevent_deploymentid", ["deployment_id", "id"], unique=False
        )
        batch_op.create_index(
            "idx_deploymentevent_modelid_env_at", ["model_id", "environment", "at"], unique=False
        )

    op.create_table(
        "deployment_route",
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("environment", sa.String(length=50), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("version_number", sa.String(length=50), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role IN ('stable', 'canary', 'active', 'preview')",
            name=op.f("ck_deployment_route_role"),
        ),
        sa.CheckConstraint(
            "weight >= 0 AND weight <= 100", name=op.f("ck_deployment_route_weight")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["ai_model_deployment.id"],
            name=op.f("fk_deployment_route_deployment_id_ai_model_deployment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ai_model.id"],
            name=op.f("fk_deployment_route_model_id_ai_model"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_deployment_route_model_version_id_ai_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deployment_route")),
    )
    with op.batch_alter_table("deployment_route", schema=None) as batch_op:
        batch_op.create_index(
            "idx_deploymentroute_modelid_env", ["model_id", "environment"], unique=False
        )

    with op.batch_alter_table("ai_model_deployment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("target", sa.String(length=20), server_default="local", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "strategy_params",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("spec_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("stable_deployment_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("step_index", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("traffic_weight", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("hold_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "requested_action",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "conditions",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "desired_state",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "observed_state",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("retry_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("next_reconcile_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("scale_down_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_ai_model_deployment_stable_deployment_id_ai_model_deployment"),
            "ai_model_deployment",
            ["stable_deployment_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_check_constraint("target", "target IN ('local', 'kubernetes')")
        batch_op.create_check_constraint(
            "traffic_weight", "traffic_weight >= 0 AND traffic_weight <= 100"
        )
    op.execute(sa.text("INSERT INTO routing_state (id, generation) VALUES (1, 0)"))


def downgrade() -> None:
    with op.batch_alter_table("ai_model_deployment", schema=None) as batch_op:
        batch_op.drop_constraint("traffic_weight", type_="check")
        batch_op.drop_constraint("target", type_="check")
        batch_op.drop_constraint(
            batch_op.f("fk_ai_model_deployment_stable_deployment_id_ai_model_deployment"),
            type_="foreignkey",
        )
        batch_op.drop_column("finished_at")
        batch_op.drop_column("scale_down_at")
        batch_op.drop_column("next_reconcile_at")
        batch_op.drop_column("retry_count")
        batch_op.drop_column("observed_state")
        batch_op.drop_column("desired_state")
        batch_op.drop_column("conditions")
        batch_op.drop_column("requested_action")
        batch_op.drop_column("paused")
        batch_op.drop_column("hold_since")
        batch_op.drop_column("traffic_weight")
        batch_op.drop_column("step_started_at")
        batch_op.drop_column("step_index")
        batch_op.drop_column("stable_deployment_id")
        batch_op.drop_column("spec_hash")
        batch_op.drop_column("strategy_params")
        batch_op.drop_column("target")

    with op.batch_alter_table("deployment_route", schema=None) as batch_op:
        batch_op.drop_index("idx_deploymentroute_modelid_env")

    op.drop_table("deployment_route")
    with op.batch_alter_table("deployment_event", schema=None) as batch_op:
        batch_op.drop_index("idx_deploymentevent_modelid_env_at")
        batch_op.drop_index("idx_deploymentevent_deploymentid")

    op.drop_table("deployment_event")
    op.drop_table("routing_state")
    op.drop_table("controller_lease")
