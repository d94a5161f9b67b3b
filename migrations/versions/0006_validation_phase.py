"""Validation phase: what a running validation is doing now (fetch, scan, load, run,
benchmark), written by the worker at each phase change so that the API, and
``modelreg validate --wait``, can show it.

Revision ID: 0006_validation_phase
Revises: 0005
Create Date: 2026-12-02 20:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_validation_phase"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("validation_request") as batch:
        batch.add_column(sa.Column("phase", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("validation_request") as batch:
        batch.drop_column("phase")
