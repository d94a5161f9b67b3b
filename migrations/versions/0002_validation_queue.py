"""The durable validation queue, and the digest each validation result is bound to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:34:29.192835
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "validation_request",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="Queued", nullable=False),
        sa.Column("requested_by_user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "requested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result_id", sa.Uuid(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('Queued', 'Running', 'Done')", name=op.f("ck_validation_request_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_validation_request_model_version_id_ai_model_version"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["user.id"],
            name=op.f("fk_validation_request_requested_by_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["ai_model_validation_result.id"],
            name=op.f("fk_validation_request_result_id_ai_model_validation_result"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_request")),
    )
    with op.batch_alter_table("validation_request", schema=None) as batch_op:
        batch_op.create_index(
            "idx_validationrequest_status_requestedat", ["status", "requested_at"], unique=False
        )
        batch_op.create_index("idx_validationrequest_versionid", ["model_version_id"], unique=False)

    with op.batch_alter_table("ai_model_validation_result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifact_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_model_validation_result", schema=None) as batch_op:
        batch_op.drop_column("artifact_sha256")

    with op.batch_alter_table("validation_request", schema=None) as batch_op:
        batch_op.drop_index("idx_validationrequest_versionid")
        batch_op.drop_index("idx_validationrequest_status_requestedat")

    op.drop_table("validation_request")
