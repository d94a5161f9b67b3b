"""Request and response bodies. JSON uses the seed's camelCase names."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from registry import vocabulary
from registry.auth import ALL_SCOPES
from registry.models import (
    DEPLOYMENT_STATUSES,
    DEPLOYMENT_STRATEGIES,
    DEPLOYMENT_TARGETS,
    ENVIRONMENTS,
    ROUTE_ROLES,
    TASK_TYPES,
    VALIDATION_REQUEST_STATUSES,
    VERSION_STATUSES,
)
from registry.services.versions import FORMATS
from registry.storable import unstorable

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
VERSION_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9 ._+-]{0,48}[A-Za-z0-9._+-])?$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"

#: What a 422 says instead of the regex a value failed (api/problems.py), after the field name.
PATTERN_RULES = {
    MODEL_NAME_PATTERN: "must start with a letter or digit and contain only letters, digits, "
    "'.', '_' and '-' (at most 100 characters)",
    VERSION_PATTERN: "must start with a letter or digit, contain only letters, digits, spaces, "
    "'.', '_', '+' and '-', and not end with a space (at most 50 characters)",
    EMAIL_PATTERN: "must be an email address, such as ada@example.com",
}

TaskType = Literal[TASK_TYPES]  # type: ignore[valid-type]
VersionStatus = Literal[VERSION_STATUSES]  # type: ignore[valid-type]
ModelFormat = Literal[FORMATS]  # type: ignore[valid-type]
ScopeName = Literal[ALL_SCOPES]  # type: ignore[valid-type]
RunStatus = Literal[VALIDATION_REQUEST_STATUSES]  # type: ignore[valid-type]
RouteRole = Literal[ROUTE_ROLES]  # type: ignore[valid-type]

ModelName = Annotated[
    str, Path(pattern=MODEL_NAME_PATTERN, description="Model name", examples=["text2img"])
]
VersionNumber = Annotated[
    str, Path(pattern=VERSION_PATTERN, description="Version number", examples=["1.0"])
]
IdOrPrefix = Annotated[
    str,
    Path(
        max_length=64,
        description="The full id, or a unique prefix of at least 8 characters (as lists show "
        "it): 409 with `candidates` when several ids start with it, 422 when it is shorter",
        examples=["0f8e2c1a"],
    ),
]


class InBody(BaseModel):
    """Inputs: camelCase, and unknown fields are an error rather than silently ignored.

    Every field of every input, however deep (a string, a key or a number inside
    ``parameters``, ``strategyParams``, ``details``...), must be storable: no NUL character,
    no ``NaN`` or infinite number (see registry/storable.py). A value that is not answers 422
    naming the field. ``UNCHECKED`` fields are left to the service, which checks them item by
    item (a feedback batch keeps its good items).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    UNCHECKED: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in cls.UNCHECKED:
            return value
        field = cls.model_fields[info.field_name or ""].alias or info.field_name or "value"
        reason = unstorable(value, field)
        if reason is not None:
            raise ValueError(reason)
        return value


class OutBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class ModelCreate(InBody):
    name: str = Field(pattern=MODEL_NAME_PATTERN, examples=["text2img"])
    provider: str = Field(min_length=1, max_length=50, examples=["Internal"])
    task_type: TaskType
    description: str | None = Field(default=None, max_length=10_000)
    is_active: bool = True


class ModelUpdate(InBody):
    provider: str | None = Field(default=None, min_length=1, max_length=50)
    task_type: TaskType | None = None
    description: str | None = Field(default=None, max_length=10_000)
    is_active: bool | None = None


TAGS_DOC = "Key/value labels (PUT and DELETE …/tags/{key}); not part of what a version serves"


class TagIn(InBody):
    value: str = Field(description="At most 5000 characters", examples=["candidate"])


class ModelOut(OutBody):
    id: uuid.UUID
    name: str
    description: str | None
    provider: str
    task_type: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str] = Field(default_factory=dict, description=TAGS_DOC)


class ModelPage(OutBody):
    items: list[ModelOut]
    next_cursor: str | None


class VersionCreate(InBody):
    version_number: str = Field(pattern=VERSION_PATTERN, examples=["1.0"])
    format: ModelFormat = vocabulary.ArtifactFormat.ONNX.value
    release_notes: str | None = Field(default=None, max_length=100_000)
    parameters: dict[str, Any] | None = None


class VersionUpdate(InBody):
    release_notes: str | None = Field(default=None, max_length=100_000)
    parameters: dict[str, Any] | None = None


class TensorOut(OutBody):
    name: str
    type: str | None = Field(description="onnxruntime's type, e.g. tensor(float)")
    shape: list[int | str | None] | None = Field(
        description="Dimensions: a number (fixed), a name (symbolic) or null (unknown)"
    )


class SignatureOut(OutBody):
    inputs: list[TensorOut]
    outputs: list[TensorOut]


class ValidationSummaryOut(OutBody):
    """The verdicts of the latest finished validation of the version's current artifact."""

    validation_id: uuid.UUID | None = Field(
        description="The run the verdicts come from (GET /validations/{id}); null before any "
        "run of the current artifact finished"
    )
    security_scan_status: str | None
    functional_status: str | None
    pending: RunStatus | None = Field(
        description="Queued or Running when a run of the current artifact is waiting or "
        "running, else null"
    )


class VersionOut(OutBody):
    id: uuid.UUID
    model_id: uuid.UUID
    version_number: str
    source_path: str | None
    format: str | None
    parameters: dict[str, Any] | None
    status: str
    validation_result_id: uuid.UUID | None
    created_by_user_id: uuid.UUID | None
    release_notes: str | None
    created_at: datetime
    updated_at: datetime
    sha256: str | None = Field(description="SHA-256 of the artifact, bound at upload")
    size_bytes: int | None
    artifact_uploaded_at: datetime | None
    signature: SignatureOut | None = Field(
        default=None,
        description="The ONNX inputs and outputs its passed functional check found (null for "
        "API versions and before validation); canary, blue-green and rolling rollouts compare "
        "it with the stable version's",
    )
    validation: ValidationSummaryOut | None = Field(
        default=None,
        description="The verdicts of the current artifact's latest validation (null when "
        "there is neither a result nor a run in progress)",
    )
    tags: dict[str, str] = Field(default_factory=dict, description=TAGS_DOC)


class VersionPage(OutBody):
    items: list[VersionOut]
    next_cursor: str | None


class TransitionIn(InBody):
    status: VersionStatus
    reason: str | None = Field(default=None, max_length=2_000)
    force: bool = Field(
        default=False,
        description="Override a closed promotion gate (admin keys only; needs a reason). "
        "The override is audited.",
    )


class KeyCreate(InBody):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[ScopeName] = Field(min_length=1)
    user: str | None = Field(
        default=None,
        max_length=255,
        pattern=EMAIL_PATTERN,
        description="Email of the user the key acts for; created as a service account if new. "
        "Default: the caller's user.",
    )


class KeyOut(OutBody):
    id: uuid.UUID
    api_key: str
    name: str
    scopes: list[str]
    is_active: bool
    user_id: uuid.UUID
    user_email: str
    created_at: datetime


class KeyCreated(KeyOut):
    token: str = Field(description="The full token, shown once. Only its hash is stored.")


class Health(OutBody):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


class ValidationResultOut(OutBody):
    """An AIModelValidationResult."""

    id: uuid.UUID = Field(
        description="The run's id (results stored before results took their run's id keep "
        "their own; GET /validations/{id} accepts both)"
    )
    model_version_id: uuid.UUID
    validation_timestamp: datetime
    security_scan_status: str
    functional_status: str
    performance_benchmark: dict[str, Any] | None
    results: dict[str, Any] | None
    validated_by_user_id: uuid.UUID | None
    artifact_sha256: str | None
    created_at: datetime


class ValidationRunOut(OutBody):
    """One validation run: its place in the queue and, once done, its result."""

    id: uuid.UUID
    model_version_id: uuid.UUID
    sha256: str
    status: RunStatus
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    phase: str | None = Field(
        default=None,
        description="While Running, what the worker is doing: fetch, scan, load, run or benchmark",
    )
    result: ValidationResultOut | None

    @classmethod
    def of(cls, run: Any) -> ValidationRunOut:
        req = run.request
        return cls(
            id=req.id,
            model_version_id=req.model_version_id,
            sha256=req.sha256,
            status=req.status,
            requested_at=req.requested_at,
            started_at=req.started_at,
            finished_at=req.finished_at,
            attempts=req.attempts,
            phase=req.phase,
            result=ValidationResultOut.model_validate(run.result) if run.result else None,
        )


Environment = Literal[ENVIRONMENTS]  # type: ignore[valid-type]
DeploymentStatus = Literal[DEPLOYMENT_STATUSES]  # type: ignore[valid-type]
Strategy = Literal[DEPLOYMENT_STRATEGIES]  # type: ignore[valid-type]
DeployTarget = Literal[DEPLOYMENT_TARGETS]  # type: ignore[valid-type]


class DeploymentCreate(InBody):
    model: str = Field(pattern=MODEL_NAME_PATTERN, examples=["text2img"])
    version_number: str | None = Field(default=None, pattern=VERSION_PATTERN, examples=["1.1"])
    model_version_id: uuid.UUID | None = None
    environment: Environment = vocabulary.Environment.PRODUCTION.value
    deployment_strategy: Strategy = vocabulary.Strategy.CANARY.value
    strategy_params: dict[str, Any] | None = Field(
        default=None,
        examples=[
            {
                "steps": [{"weight": 10, "pause": "60s"}, {"weight": 50, "pause": "60s"}],
                "replicas": 1,
            }
        ],
        description="canary: `steps` [{weight, pause}]; blue_green: `previewDuration`, "
        "`autoPromote`; rolling_update: `pause`; all: `replicas`, `resources`, "
        "`scaleDownDelay`, `maxHold`, `onHoldTimeout`, `analysis` {maxErrorRate, minRequests, "
        "requireTraffic}. See docs/rollouts.md.",
    )
    target: DeployTarget = vocabulary.DeploymentTarget.LOCAL.value


class ActionIn(InBody):
    reason: str | None = Field(default=None, max_length=2_000)


class RollbackIn(ActionIn):
    environment: Environment | None = Field(
        default=None,
        description="The environment to roll back (like a deploy's); the `environment` query "
        "parameter is still accepted. Default: production.",
    )


class DeploymentProgress(OutBody):
    step_index: int
    step_count: int | None
    step_started_at: datetime | None
    traffic_weight: int = Field(description="The candidate's share of traffic, 0-100")
    paused: bool
    hold_since: datetime | None


class DeploymentOut(OutBody):
    id: uuid.UUID
    model: str
    model_id: uuid.UUID
    model_version_id: uuid.UUID
    version_number: str
    environment: str
    status: str
    deployment_strategy: str
    strategy_params: dict[str, Any]
    target: str
    endpoint: str | None
    kubernetes_details: dict[str, Any] | None = Field(
        default=None, description="target kubernetes: namespace, resource names, pod counts"
    )
    progress: DeploymentProgress
    conditions: list[dict[str, Any]]
    requested_action: dict[str, Any] | None
    stable_deployment_id: uuid.UUID | None
    spec_hash: str | None
    desired_state: dict[str, Any] | None
    observed_state: dict[str, Any] | None
    scale_down_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime | None

    @staticmethod
    def steps_of(view: Any) -> int | None:
        """``progress.stepCount`` of a deployment view: its strategy's number of steps."""
        if view.strategy == vocabulary.Strategy.CANARY:
            return len(view.params.get("steps") or ()) or 3
        if view.strategy == vocabulary.Strategy.ROLLING_UPDATE:
            return int(view.params.get("replicas", 1))
        if view.strategy == vocabulary.Strategy.BLUE_GREEN:
            return 1
        return None

    @classmethod
    def fields_of(cls, view: Any) -> dict[str, Any]:
        """The fields of a deployment view's answer: :meth:`of` validates them, and
        ``api.answers`` constructs them for a write's answer."""
        return {
            "id": view.id,
            "model": view.model_name,
            "model_id": view.model_id,
            "model_version_id": view.version.id,
            "version_number": view.version.number,
            "environment": view.environment,
            "status": view.status,
            "deployment_strategy": view.strategy,
            "strategy_params": view.params,
            "target": view.target,
            "endpoint": view.endpoint,
            "kubernetes_details": view.kubernetes_details,
            "progress": DeploymentProgress.model_construct(
                step_index=view.step_index,
                step_count=cls.steps_of(view),
                step_started_at=view.step_started_at,
                traffic_weight=view.traffic_weight,
                paused=view.paused,
                hold_since=view.hold_since,
            ),
            "conditions": view.conditions,
            "requested_action": view.requested_action,
            "stable_deployment_id": view.stable_deployment_id,
            "spec_hash": view.spec_hash,
            "desired_state": view.desired_state,
            "observed_state": view.observed_state,
            "scale_down_at": view.scale_down_at,
            "finished_at": view.finished_at,
            "created_at": view.created_at,
            "updated_at": view.updated_at,
        }

    @classmethod
    def of(cls, view: Any) -> DeploymentOut:
        return cls(**cls.fields_of(view))


class DeploymentPage(OutBody):
    items: list[DeploymentOut]
    next_cursor: str | None


class DeploymentEventOut(OutBody):
    id: int
    deployment_id: uuid.UUID
    at: datetime
    kind: str
    actor: str
    actor_email: str | None = Field(
        default=None,
        description="The email of the user behind `actor`; null for the controller's own steps",
    )
    reason: str | None
    version_number: str | None
    details: dict[str, Any]


class HistoryOut(OutBody):
    model: str
    environment: str
    events: list[DeploymentEventOut]
    serving_at: list[dict[str, Any]] | None = Field(
        default=None,
        description="With `at`: the endpoints (version, url, weight) that served at that time",
    )


# -- feedback ----------------------------------------------------------------------------------

MAX_FEEDBACK_BATCH = 1_000


class FeedbackIn(InBody):
    """One item of feedback: on ``modelVersionId``, or on ``model`` and ``versionNumber``."""

    model_version_id: uuid.UUID | None = None
    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN, examples=["text2img"])
    version_number: str | None = Field(default=None, pattern=VERSION_PATTERN, examples=["1.0"])
    generation_request_id: uuid.UUID | None = None
    rating: int | None = Field(default=None, ge=1, le=5, strict=True)
    comment: str | None = Field(default=None, max_length=10_000)
    details: dict[str, Any] | None = None


class FeedbackBatchIn(InBody):
    """Up to 1,000 items. Each is checked on its own: bad ones are rejected with their index
    and reason, good ones are kept."""

    UNCHECKED: ClassVar[frozenset[str]] = frozenset({"items"})

    items: list[Any] = Field(
        min_length=1,
        json_schema_extra={"maxItems": MAX_FEEDBACK_BATCH, "items": FeedbackIn.model_json_schema()},
        description="Feedback items (the fields of a single item)",
    )


class FeedbackKept(OutBody):
    index: int
    id: uuid.UUID


class FeedbackRejected(OutBody):
    index: int
    reason: str


class FeedbackBatchOut(OutBody):
    kept: list[FeedbackKept]
    rejected: list[FeedbackRejected]


class FeedbackOut(OutBody):
    id: uuid.UUID
    user_id: uuid.UUID
    model_version_id: uuid.UUID | None
    generation_request_id: uuid.UUID | None
    rating: int | None
    comment: str | None
    details: dict[str, Any] | None
    feedback_timestamp: datetime


class FeedbackPage(OutBody):
    items: list[FeedbackOut]
    next_cursor: str | None


class FeedbackSummaryOut(OutBody):
    model_version_id: uuid.UUID
    count: int = Field(description="Items in the window, rated or not")
    rated: int = Field(description="Items with a rating")
    mean: float | None = Field(description="Mean rating; null without ratings")
    distribution: dict[str, int] = Field(description='Ratings by value, "1" to "5"')
    positive_share: float | None = Field(description="Share of ratings >= 4")
    positive_low: float | None = Field(description="Wilson 95% interval of positiveShare: low")
    positive_high: float | None = Field(description="Wilson 95% interval of positiveShare: high")
    since: datetime | None
    until: datetime | None

    @classmethod
    def of(cls, summary: Any) -> FeedbackSummaryOut:
        return cls(
            model_version_id=summary.model_version_id,
            count=summary.count,
            rated=summary.rated,
            mean=summary.mean,
            distribution={str(k): n for k, n in summary.distribution.items()},
            positive_share=summary.positive_share,
            positive_low=summary.positive_low,
            positive_high=summary.positive_high,
            since=summary.since,
            until=summary.until,
        )


class ServingFeedbackOut(OutBody):
    deployment_id: uuid.UUID
    model_version_id: uuid.UUID
    version_number: str
    role: str
    weight: int
    summary: FeedbackSummaryOut


class FeedbackCompareOut(OutBody):
    model: str
    environment: str
    window_start: datetime | None = Field(
        description="Start of the current window: the rollout step's start, else the last "
        "traffic change; null when neither exists (all feedback counts)"
    )
    window_source: Literal["rollout step", "traffic change", "all time"]
    until: datetime
    versions: list[ServingFeedbackOut]

    @classmethod
    def of(cls, comparison: Any) -> FeedbackCompareOut:
        return cls(
            model=comparison.model,
            environment=comparison.environment,
            window_start=comparison.window_start,
            window_source=comparison.window_source,
            until=comparison.until,
            versions=[
                ServingFeedbackOut(
                    deployment_id=route.deployment_id,
                    model_version_id=route.model_version_id,
                    version_number=route.version_number,
                    role=route.role,
                    weight=route.weight,
                    summary=FeedbackSummaryOut.of(summary),
                )
                for route, summary in comparison.serving
            ],
        )
