"""The ORM: the seed's tables (sections 1.1, 1.9, 1.12 and 1.18-1.22), plus what the product adds.

Identifiers are the snake_case forms of the seed names; constraint and index names are the
seed's own. Every column the seed lacks is listed, with its reason, in ``docs/schema.md``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from registry.types import BigSerial, JSONType, UTCDateTime, utcnow
from registry.vocabulary import (
    CheckStatus,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    RouteRole,
    Strategy,
    TaskType,
    ValidationRequestStatus,
    VersionStatus,
    values,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TASK_TYPES = values(TaskType)
VERSION_STATUSES = values(VersionStatus)
CHECK_STATUSES = values(CheckStatus)
ENVIRONMENTS = values(Environment)
DEPLOYMENT_STATUSES = values(DeploymentStatus)
DEPLOYMENT_TARGETS = values(DeploymentTarget)
ROUTE_ROLES = values(RouteRole)
DEPLOYMENT_STRATEGIES = values(Strategy)
SOCIAL_PROVIDERS = ("google", "facebook", "apple")
SUBSCRIPTION_TIERS = ("Free", "Pro", "Team", "Enterprise")

NOW = text("CURRENT_TIMESTAMP")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012  (SQLAlchemy reads this class attribute)
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSONType,
    }


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow, server_default=NOW)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow, server_default=NOW
    )


class User(Base):
    """1.1 User: people and service accounts that act on the registry."""

    __tablename__ = "user"

    id: Mapped[uuid.UUID] = _id()
    email: Mapped[str] = mapped_column(String(255), nullable=False)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    social_provider: Mapped[str | None] = mapped_column(String(50))
    social_provider_id: Mapped[str | None] = mapped_column(String(255))
    is_email_verified: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    email_verification_token: Mapped[str | None] = mapped_column(String(255))
    password_reset_token: Mapped[str | None] = mapped_column(String(255))
    password_reset_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    full_name: Mapped[str | None] = mapped_column(String(100))
    username: Mapped[str | None] = mapped_column(String(50))
    profile_picture_url: Mapped[str | None] = mapped_column(String(1024))
    language_preference: Mapped[str] = mapped_column(
        String(10), nullable=False, default="en-US", server_default="en-US"
    )
    timezone: Mapped[str] = mapped_column(
        String(50), nullable=False, default="UTC", server_default="UTC"
    )
    mfa_enabled: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    mfa_secret: Mapped[str | None] = mapped_column(String(255))
    subscription_tier: Mapped[str] = mapped_column(
        String(20), nullable=False, default="Free", server_default="Free"
    )
    credit_balance: Mapped[Decimal] = mapped_column(
        Numeric(10, 2), nullable=False, default=Decimal("0.00"), server_default="0.00"
    )
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(_in("social_provider", SOCIAL_PROVIDERS), name="social_provider"),
        CheckConstraint(_in("subscription_tier", SUBSCRIPTION_TIERS), name="subscription_tier"),
        UniqueConstraint("email", name="uq_user_email"),
        UniqueConstraint("username", name="uq_user_username"),
        UniqueConstraint("social_provider", "social_provider_id", name="uq_user_social"),
        Index("idx_user_email_unique", "email", unique=True),
        Index(
            "idx_user_username_unique",
            "username",
            unique=True,
            postgresql_where=text("username IS NOT NULL"),
            sqlite_where=text("username IS NOT NULL"),
        ),
        Index(
            "idx_user_social_unique",
            "social_provider",
            "social_provider_id",
            unique=True,
            postgresql_where=text("social_provider IS NOT NULL AND social_provider_id IS NOT NULL"),
            sqlite_where=text("social_provider IS NOT NULL AND social_provider_id IS NOT NULL"),
        ),
        Index("idx_user_subscriptiontier", "subscription_tier"),
        Index(
            "idx_user_deletedat",
            "deleted_at",
            postgresql_where=text("deleted_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NOT NULL"),
        ),
        Index("idx_user_languagepreference", "language_preference"),
    )


class APIClient(Base):
    """1.9 APIClient: an API key. The secret is stored only as a hash."""

    __tablename__ = "api_client"

    id: Mapped[uuid.UUID] = _id()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    api_key: Mapped[str] = mapped_column(String(100), nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    permissions: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=text("true")
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        UniqueConstraint("api_key", name="uq_apiclient_apikey"),
        Index("idx_apiclient_apikey_unique", "api_key", unique=True),
        Index("idx_apiclient_userid", "user_id"),
    )


class UsageLog(Base):
    """1.12 UsageLog: the audit trail. One row for every mutating action."""

    __tablename__ = "usage_log"

    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    # The seed makes userId required *and* ON DELETE SET NULL: kept as written, so a user
    # with audit rows cannot be hard-deleted (users are soft-deleted through deletedAt).
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL"), nullable=False
    )
    # GenerationRequest lives in the generation service's database: a plain UUID reference.
    generation_request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    api_client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_client.id", ondelete="SET NULL")
    )
    action_type: Mapped[str] = mapped_column(String(100), nullable=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    credits_cost: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    timestamp: Mapped[datetime] = _created_at()

    __table_args__ = (
        Index("idx_usagelog_userid_timestamp", "user_id", "timestamp"),
        Index("idx_usagelog_actiontype", "action_type"),
        Index("idx_usagelog_generationrequestid", "generation_request_id"),
        Index("idx_usagelog_apiclientid", "api_client_id"),
    )


class AIModel(Base):
    """1.18 AIModel: a named model."""

    __tablename__ = "ai_model"

    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(50), nullable=False)
    task_type: Mapped[str] = mapped_column(String(50), nullable=False)
    is_active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=text("true")
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        CheckConstraint(_in("task_type", TASK_TYPES), name="task_type"),
        UniqueConstraint("name", name="uq_aimodel_name"),
        Index("idx_aimodel_provider_tasktype", "provider", "task_type"),
        Index("idx_aimodel_tasktype", "task_type"),
        Index("idx_aimodel_isactive", "is_active"),
    )


class AIModelVersion(Base):
    """1.19 AIModelVersion: one version of a model, with its artifact and lifecycle status."""

    __tablename__ = "ai_model_version"

    id: Mapped[uuid.UUID] = _id()
    model_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model.id", ondelete="CASCADE"), nullable=False
    )
    version_number: Mapped[str] = mapped_column(String(50), nullable=False)
    source_path: Mapped[str | None] = mapped_column(String(1024))
    format: Mapped[str | None] = mapped_column(String(50))
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(
        String(50),
        nullable=False,
        default=VersionStatus.STAGED.value,
        server_default=VersionStatus.STAGED.value,
    )
    validation_result_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ai_model_validation_result.id", ondelete="SET NULL", use_alter=True)
    )
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL")
    )
    release_notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    # Added by modelreg (docs/schema.md): the artifact's digest and size, bound at upload.
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    artifact_uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Added by modelreg (docs/schema.md): the ONNX inputs and outputs (names, element types,
    # shapes) its passed functional check found, so a rollout can compare it with the stable.
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        CheckConstraint(_in("status", VERSION_STATUSES), name="status"),
        UniqueConstraint("model_id", "version_number", name="uq_aimodelversion_model_version"),
        Index("idx_aimodelversion_modelid", "model_id"),
        Index("idx_aimodelversion_status", "status"),
    )


class AIModelValidationResult(Base):
    """1.20 AIModelValidationResult: one validation run of a version's artifact."""

    __tablename__ = "ai_model_validation_result"

    id: Mapped[uuid.UUID] = _id()
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="CASCADE"), nullable=False
    )
    validation_timestamp: Mapped[datetime] = _created_at()
    security_scan_status: Mapped[str] = mapped_column(String(50), nullable=False)
    functional_status: Mapped[str] = mapped_column(String(50), nullable=False)
    performance_benchmark: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    validated_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created_at()
    # Added by modelreg (docs/schema.md): the artifact digest this result is bound to.
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint(_in("security_scan_status", CHECK_STATUSES), name="security_scan_status"),
        CheckConstraint(_in("functional_status", CHECK_STATUSES), name="functional_status"),
        Index("idx_aimodelvalidationresult_versionid", "model_version_id"),
        Index("idx_aimodelvalidationresult_timestamp", "validation_timestamp"),
    )


class AIModelDeployment(Base):
    """1.21 AIModelDeployment: one version deployed into one environment."""

    __tablename__ = "ai_model_deployment"

    id: Mapped[uuid.UUID] = _id()
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="CASCADE"), nullable=False
    )
    environment: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[str] = mapped_column(
        String(50),
        nullable=False,
        default=DeploymentStatus.INITIATED.value,
        server_default=DeploymentStatus.INITIATED.value,
    )
    deployment_strategy: Mapped[str | None] = mapped_column(String(50))
    endpoint: Mapped[str | None] = mapped_column(String(255))
    kubernetes_details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    deployed_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL")
    )
    deployment_timestamp: Mapped[datetime] = _created_at()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    # Added by modelreg: the rollout's spec and its persisted progress (docs/schema.md).
    # ``model_version_id`` is the *desired* version; what *serves* lives in deployment_route.
    target: Mapped[str] = mapped_column(
        String(20),
        nullable=False,
        default=DeploymentTarget.LOCAL.value,
        server_default=DeploymentTarget.LOCAL.value,
    )
    strategy_params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    spec_hash: Mapped[str | None] = mapped_column(String(64))
    stable_deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ai_model_deployment.id", ondelete="SET NULL")
    )
    step_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    step_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    traffic_weight: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    hold_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    requested_action: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    conditions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    desired_state: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    observed_state: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    next_reconcile_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    scale_down_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(_in("environment", ENVIRONMENTS), name="environment"),
        CheckConstraint(_in("status", DEPLOYMENT_STATUSES), name="status"),
        CheckConstraint(_in("target", DEPLOYMENT_TARGETS), name="target"),
        CheckConstraint("traffic_weight >= 0 AND traffic_weight <= 100", name="traffic_weight"),
        Index("idx_aimodeldeployment_versionid_env", "model_version_id", "environment"),
        Index("idx_aimodeldeployment_status", "status"),
        Index("idx_aimodeldeployment_environment", "environment"),
    )


class AIModelFeedback(Base):
    """1.22 AIModelFeedback: a user's rating and comment on a version's output."""

    __tablename__ = "ai_model_feedback"

    id: Mapped[uuid.UUID] = _id()
    # Required and ON DELETE SET NULL in the seed; kept as written (see UsageLog.user_id).
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL"), nullable=False
    )
    # GenerationRequest lives in the generation service's database: a plain UUID reference.
    generation_request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="SET NULL")
    )
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    feedback_timestamp: Mapped[datetime] = _created_at()
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (
        CheckConstraint("rating >= 1 AND rating <= 5", name="rating"),
        Index("idx_aimodelfeedback_userid", "user_id"),
        Index("idx_aimodelfeedback_generationrequestid", "generation_request_id"),
        Index("idx_aimodelfeedback_modelversionid", "model_version_id"),
        # Added by modelreg: a version's feedback over a time window (summaries, rollout gates).
        Index(
            "idx_aimodelfeedback_versionid_timestamp",
            "model_version_id",
            "feedback_timestamp",
            postgresql_include=["rating"],
        ),
    )


class ArtifactUpload(Base):
    """Added by modelreg: an upload in progress holds a lease on its version.

    Only the holder of the lease may write the version's artifact key, so two concurrent
    uploads to one version can never overwrite or delete each other's object. A row whose
    lease expired belongs to a crashed upload; its ``object_key`` tells GC what to remove.
    """

    __tablename__ = "artifact_upload"

    model_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[uuid.UUID] = mapped_column(Uuid(), nullable=False)
    object_key: Mapped[str] = mapped_column(String(1024), nullable=False)
    started_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


VALIDATION_REQUEST_STATUSES = values(ValidationRequestStatus)


class ValidationRequest(Base):
    """Added by modelreg: the durable validation queue. One row per requested run.

    A worker claims a Queued row (or a Running one whose lease expired) and holds a lease it
    renews while it works; a worker that dies leaves a lease that expires, and another worker
    takes the run over. ``attempts`` bounds how often a run that keeps killing its worker is
    retried.
    """

    __tablename__ = "validation_request"

    id: Mapped[uuid.UUID] = _id()
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="CASCADE"), nullable=False
    )
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(
        String(20),
        nullable=False,
        default=ValidationRequestStatus.QUEUED.value,
        server_default=ValidationRequestStatus.QUEUED.value,
    )
    requested_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL")
    )
    requested_at: Mapped[datetime] = _created_at()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ai_model_validation_result.id", ondelete="SET NULL")
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    # What a Running run is doing now (fetch, scan, load, run, benchmark), set by the worker at
    # each phase change so that ``validate --wait`` can say so; None when not running.
    phase: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        CheckConstraint(_in("status", VALIDATION_REQUEST_STATUSES), name="status"),
        Index("idx_validationrequest_status_requestedat", "status", "requested_at"),
        Index("idx_validationrequest_versionid", "model_version_id"),
    )


class DeploymentRoute(Base):
    """Added by modelreg: what *serves* a model in an environment now, one row per deployment
    that takes traffic (or is previewed). The endpoint-resolution API reads only this table;
    the controller writes it after the deployer has made the workloads ready, so a rollout's
    desired state never leaks into what clients are told."""

    __tablename__ = "deployment_route"

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_deployment.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model.id", ondelete="CASCADE"), nullable=False
    )
    environment: Mapped[str] = mapped_column(String(50), nullable=False)
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="CASCADE"), nullable=False
    )
    version_number: Mapped[str] = mapped_column(String(50), nullable=False)
    url: Mapped[str] = mapped_column(String(1024), nullable=False)
    weight: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        CheckConstraint("weight >= 0 AND weight <= 100", name="weight"),
        CheckConstraint(_in("role", ROUTE_ROLES), name="role"),
        Index("idx_deploymentroute_modelid_env", "model_id", "environment"),
    )


class RoutingState(Base):
    """Added by modelreg: one row whose ``generation`` goes up in the same transaction as any
    change to deployment_route. API replicas poll it to drop their endpoint cache."""

    __tablename__ = "routing_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class DeploymentEvent(Base):
    """Added by modelreg: the append-only ledger of every rollout step, verdict, promotion,
    abort and rollback, with its actor and reason. ``traffic`` events carry the full set of
    routes after the change, so "what served model M in environment E at time T" is the last
    ``traffic`` event before T."""

    __tablename__ = "deployment_event"

    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_deployment.id", ondelete="CASCADE"), nullable=False
    )
    model_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model.id", ondelete="CASCADE"), nullable=False
    )
    environment: Mapped[str] = mapped_column(String(50), nullable=False)
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ai_model_version.id", ondelete="SET NULL")
    )
    version_number: Mapped[str | None] = mapped_column(String(50))
    at: Mapped[datetime] = _created_at()
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        Index("idx_deploymentevent_deploymentid", "deployment_id", "id"),
        Index("idx_deploymentevent_modelid_env_at", "model_id", "environment", "at"),
    )


class ControllerLease(Base):
    """Added by modelreg: leader election. The controller that holds an unexpired lease acts;
    the others wait. It works the same on PostgreSQL and SQLite."""

    __tablename__ = "controller_lease"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


TAG_KEY_MAX, TAG_VALUE_MAX = 63, 5000


def _tags_table(name: str, owner: str, parent: str) -> Table:
    """Added by modelreg: MLflow-like tags, unique per (owner, key); they bind nothing."""
    return Table(
        name,
        Base.metadata,
        Column("id", BigSerial, primary_key=True, autoincrement=True),
        Column(owner, Uuid(), ForeignKey(f"{parent}.id", ondelete="CASCADE"), nullable=False),
        Column("key", String(TAG_KEY_MAX), nullable=False),
        Column("value", String(TAG_VALUE_MAX), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, server_default=NOW),
        UniqueConstraint(owner, "key"),
    )


model_tags = _tags_table("model_tags", "model_id", "ai_model")
version_tags = _tags_table("version_tags", "model_version_id", "ai_model_version")
