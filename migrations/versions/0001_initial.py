"""Initial schema: the seed tables (1.1, 1.9, 1.12, 1.18-1.22) and artifact uploads.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:33:21.391542
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_model",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("task_type", sa.String(length=50), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "task_type IN ('ImageGeneration', 'TextGeneration', 'ImageTransformation', 'StyleTransfer', 'ContentSafety')",
            name=op.f("ck_ai_model_task_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_model")),
        sa.UniqueConstraint("name", name="uq_aimodel_name"),
    )
    with op.batch_alter_table("ai_model", schema=None) as batch_op:
        batch_op.create_index("idx_aimodel_isactive", ["is_active"], unique=False)
        batch_op.create_index(
            "idx_aimodel_provider_tasktype", ["provider", "task_type"], unique=False
        )
        batch_op.create_index("idx_aimodel_tasktype", ["task_type"], unique=False)

    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("social_provider", sa.String(length=50), nullable=True),
        sa.Column("social_provider_id", sa.String(length=255), nullable=True),
        sa.Column(
            "is_email_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("email_verification_token", sa.String(length=255), nullable=True),
        sa.Column("password_reset_token", sa.String(length=255), nullable=True),
        sa.Column("password_reset_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("full_name", sa.String(length=100), nullable=True),
        sa.Column("username", sa.String(length=50), nullable=True),
        sa.Column("profile_picture_url", sa.String(length=1024), nullable=True),
        sa.Column(
            "language_preference", sa.String(length=10), server_default="en-US", nullable=False
        ),
        sa.Column("timezone", sa.String(length=50), server_default="UTC", nullable=False),
        sa.Column("mfa_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("mfa_secret", sa.String(length=255), nullable=True),
        sa.Column("subscription_tier", sa.String(length=20), server_default="Free", nullable=False),
        sa.Column(
            "credit_balance",
            sa.Numeric(precision=10, scale=2),
            server_default="0.00",
            nullable=False,
        ),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "social_provider IN ('google', 'facebook', 'apple')",
            name=op.f("ck_user_social_provider"),
        ),
        sa.CheckConstraint(
            "subscription_tier IN ('Free', 'Pro', 'Team', 'Enterprise')",
            name=op.f("ck_user_subscription_tier"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
        sa.UniqueConstraint("email", name="uq_user_email"),
        sa.UniqueConstraint("social_provider", "social_provider_id", name="uq_user_social"),
        sa.UniqueConstraint("username", name="uq_user_username"),
    )
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.create_index(
            "idx_user_deletedat",
            ["deleted_at"],
            unique=False,
            postgresql_where=sa.text("deleted_at IS NOT NULL"),
            sqlite_where=sa.text("deleted_at IS NOT NULL"),
        )
        batch_op.create_index("idx_user_email_unique", ["email"], unique=True)
        batch_op.create_index("idx_user_languagepreference", ["language_preference"], unique=False)
        batch_op.create_index(
            "idx_user_social_unique",
            ["social_provider", "social_provider_id"],
            unique=True,
            postgresql_where=sa.text(
                "social_provider IS NOT NULL AND social_provider_id IS NOT NULL"
            ),
            sqlite_where=sa.text("social_provider IS NOT NULL AND social_provider_id IS NOT NULL"),
        )
        batch_op.create_index("idx_user_subscriptiontier", ["subscription_tier"], unique=False)
        batch_op.create_index(
            "idx_user_username_unique",
            ["username"],
            unique=True,
            postgresql_where=sa.text("username IS NOT NULL"),
            sqlite_where=sa.text("username IS NOT NULL"),
        )

    op.create_table(
        "ai_model_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("version_number", sa.String(length=50), nullable=False),
        sa.Column("source_path", sa.String(length=1024), nullable=True),
        sa.Column("format", sa.String(length=50), nullable=True),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=50), server_default="Staged", nullable=False),
        sa.Column("validation_result_id", sa.Uuid(), nullable=True),
        sa.Column("created_by_user_id", sa.Uuid(), nullable=True),
        sa.Column("release_notes", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("artifact_uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('Staged', 'Production', 'Deprecated', 'Archived', 'Failed')",
            name=op.f("ck_ai_model_version_status"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["user.id"],
            name=op.f("fk_ai_model_version_created_by_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ai_model.id"],
            name=op.f("fk_ai_model_version_model_id_ai_model"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_model_version")),
        sa.UniqueConstraint("model_id", "version_number", name="uq_aimodelversion_model_version"),
    )
    with op.batch_alter_table("ai_model_version", schema=None) as batch_op:
        batch_op.create_index("idx_aimodelversion_modelid", ["model_id"], unique=False)
        batch_op.create_index("idx_aimodelversion_status", ["status"], unique=False)

    op.create_table(
        "api_client",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("api_key", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column(
            "permissions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_api_client_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_client")),
        sa.UniqueConstraint("api_key", name="uq_apiclient_apikey"),
    )
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.create_index("idx_apiclient_apikey_unique", ["api_key"], unique=True)
        batch_op.create_index("idx_apiclient_userid", ["user_id"], unique=False)

    op.create_table(
        "ai_model_deployment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("environment", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=50), server_default="Initiated", nullable=False),
        sa.Column("deployment_strategy", sa.String(length=50), nullable=True),
        sa.Column("endpoint", sa.String(length=255), nullable=True),
        sa.Column(
            "kubernetes_details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("deployed_by_user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "deployment_timestamp",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "environment IN ('staging', 'production', 'testing')",
            name=op.f("ck_ai_model_deployment_environment"),
        ),
        sa.CheckConstraint(
            "status IN ('Initiated', 'Deploying', 'Active', 'Inactive', 'Failed', 'RolledBack')",
            name=op.f("ck_ai_model_deployment_status"),
        ),
        sa.ForeignKeyConstraint(
            ["deployed_by_user_id"],
            ["user.id"],
            name=op.f("fk_ai_model_deployment_deployed_by_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_ai_model_deployment_model_version_id_ai_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_model_deployment")),
    )
    with op.batch_alter_table("ai_model_deployment", schema=None) as batch_op:
        batch_op.create_index("idx_aimodeldeployment_environment", ["environment"], unique=False)
        batch_op.create_index("idx_aimodeldeployment_status", ["status"], unique=False)
        batch_op.create_index(
            "idx_aimodeldeployment_versionid_env", ["model_version_id", "environment"], unique=False
        )

    op.create_table(
        "ai_model_feedback",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("generation_request_id", sa.Uuid(), nullable=True),
        sa.Column("model_version_id", sa.Uuid(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "feedback_timestamp",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint("rating >= 1 AND rating <= 5", name=op.f("ck_ai_model_feedback_rating")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_ai_model_feedback_model_version_id_ai_model_version"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_ai_model_feedback_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_model_feedback")),
    )
    with op.batch_alter_table("ai_model_feedback", schema=None) as batch_op:
        batch_op.create_index(
            "idx_aimodelfeedback_generationrequestid", ["generation_request_id"], unique=False
        )
        batch_op.create_index(
            "idx_aimodelfeedback_modelversionid", ["model_version_id"], unique=False
        )
        batch_op.create_index("idx_aimodelfeedback_userid", ["user_id"], unique=False)

    op.create_table(
        "ai_model_validation_result",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column(
            "validation_timestamp",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("security_scan_status", sa.String(length=50), nullable=False),
        sa.Column("functional_status", sa.String(length=50), nullable=False),
        sa.Column(
            "performance_benchmark",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "results",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("validated_by_user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "functional_status IN ('Passed', 'Failed', 'Pending', 'Skipped')",
            name=op.f("ck_ai_model_validation_result_functional_status"),
        ),
        sa.CheckConstraint(
            "security_scan_status IN ('Passed', 'Failed', 'Pending', 'Skipped')",
            name=op.f("ck_ai_model_validation_result_security_scan_status"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_ai_model_validation_result_model_version_id_ai_model_version"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["validated_by_user_id"],
            ["user.id"],
            name=op.f("fk_ai_model_validation_result_validated_by_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_model_validation_result")),
    )
    with op.batch_alter_table("ai_model_validation_result", schema=None) as batch_op:
        batch_op.create_index(
            "idx_aimodelvalidationresult_timestamp", ["validation_timestamp"], unique=False
        )
        batch_op.create_index(
            "idx_aimodelvalidationresult_versionid", ["model_version_id"], unique=False
        )

    # AIModelVersion.validationResultId and AIModelValidationResult.modelVersionId point at each
    # other: the version's foreign key can only be added once both tables exist.
    with op.batch_alter_table("ai_model_version", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_ai_model_version_validation_result_id_ai_model_validation_result"),
            "ai_model_validation_result",
            ["validation_result_id"],
            ["id"],
            ondelete="SET NULL",
        )

    op.create_table(
        "artifact_upload",
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column("token", sa.Uuid(), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("started_by_user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["ai_model_version.id"],
            name=op.f("fk_artifact_upload_model_version_id_ai_model_version"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["started_by_user_id"],
            ["user.id"],
            name=op.f("fk_artifact_upload_started_by_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("model_version_id", name=op.f("pk_artifact_upload")),
    )
    op.create_table(
        "usage_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("generation_request_id", sa.Uuid(), nullable=True),
        sa.Column("api_client_id", sa.Uuid(), nullable=True),
        sa.Column("action_type", sa.String(length=100), nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("credits_cost", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column(
            "timestamp",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["api_client_id"],
            ["api_client.id"],
            name=op.f("fk_usage_log_api_client_id_api_client"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_usage_log_user_id_user"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_log")),
    )
    with op.batch_alter_table("usage_log", schema=None) as batch_op:
        batch_op.create_index("idx_usagelog_actiontype", ["action_type"], unique=False)
        batch_op.create_index("idx_usagelog_apiclientid", ["api_client_id"], unique=False)
        batch_op.create_index(
            "idx_usagelog_generationrequestid", ["generation_request_id"], unique=False
        )
        batch_op.create_index(
            "idx_usagelog_userid_timestamp", ["user_id", "timestamp"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ai_model_version", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_ai_model_version_validation_result_id_ai_model_validation_result"),
            type_="foreignkey",
        )
    for table in (
        "usage_log",
        "artifact_upload",
        "ai_model_validation_result",
        "ai_model_feedback",
        "ai_model_deployment",
        "api_client",
        "ai_model_version",
        "user",
        "ai_model",
    ):
        op.drop_table(table)
