"""Feedback window index: a version's feedback by time, with its rating (PostgreSQL INCLUDE),
so that a summary over a window is an index-only scan.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 18:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "idx_aimodelfeedback_versionid_timestamp",
        "ai_model_feedback",
        ["model_version_id", "feedback_timestamp"],
        unique=False,
        postgresql_include=["rating"],
    )


def downgrade() -> None:
    op.drop_index("idx_aimodelfeedback_versionid_timestamp", table_name="ai_model_feedback")
