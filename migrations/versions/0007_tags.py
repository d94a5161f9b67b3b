"""Tags: key/value labels on models and versions (MLflow's tags), one row per (owner, key),
in their own tables so that a tag never touches what a version serves.

Revision ID: 0007_tags
Revises: 0006_validation_phase
Create Date: 2026-12-02 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_tags"
down_revision: str | None = "0006_validation_phase"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    ("model_tags", "model_id", "ai_model"),
    ("version_tags", "model_version_id", "ai_model_version"),
)


def upgrade() -> None:
    for name, owner, parent in _TABLES:
        op.create_table(
            name,
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=True,
                nullable=False,
            ),
            sa.Column(owner, sa.Uuid(), nullable=False),
            sa.Column("key", sa.String(63), nullable=False),
            sa.Column("value", sa.String(5000), nullable=False),
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            ),
            sa.ForeignKeyConstraint(
                [owner], [f"{parent}.id"], name=f"fk_{name}_{owner}_{parent}", ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
            sa.UniqueConstraint(owner, "key", name=f"uq_{name}_{owner}_key"),
        )


def downgrade() -> None:
    for name, _owner, _parent in reversed(_TABLES):
        op.drop_table(name)
