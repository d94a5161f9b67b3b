"""Version signature: the ONNX inputs and outputs a passed functional check found, stored on
the version so that a canary, blue-green or rolling rollout can refuse a candidate whose
signature differs from the stable version's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ai_model_version") as batch:
        batch.add_column(
            sa.Column(
                "signature",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("ai_model_version") as batch:
        batch.drop_column("signature")
