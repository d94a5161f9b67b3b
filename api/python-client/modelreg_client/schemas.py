"""What the API answers, as light typed objects: frozen dataclasses, standard library only.

They mirror the server's response models (``api.schemas``) field for field, with the same
snake_case attribute names, so code written against either reads the same:
``version.version_number``, ``deployment.progress.traffic_weight``. Timestamps are
``datetime``, ids ``uuid.UUID``. The JSON on the wire is camelCase; ``from_wire`` reads it and
``model_dump`` gives it back (its keywords are pydantic's, so callers of either work).

``tests/api/test_client_contract.py`` checks every class here against the server's OpenAPI
document, so a field added, renamed or retyped on the server fails a test until it is here too.

We do not use pydantic: importing it costs about as much as the rest of the client together,
and a generation service that only resolves endpoints should not pay for it.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from modelreg_client.wire import Endpoint, EndpointAnswer, SelectedEndpoint, Wire, camel

__all__ = ["ALL", "Endpoint", "EndpointAnswer", "SelectedEndpoint", "Wire", "camel"]


# -- models and versions ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOut(Wire):
    SCHEMA = "ModelOut"
    id: uuid.UUID
    name: str
    description: str | None
    provider: str
    task_type: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorOut(Wire):
    SCHEMA = "TensorOut"
    name: str
    type: str | None
    shape: list[int | str | None] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SignatureOut(Wire):
    SCHEMA = "SignatureOut"
    inputs: list[TensorOut]
    outputs: list[TensorOut]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidationSummaryOut(Wire):
    SCHEMA = "ValidationSummaryOut"
    validation_id: uuid.UUID | None
    security_scan_status: str | None
    functional_status: str | None
    pending: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class VersionOut(Wire):
    SCHEMA = "VersionOut"
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
    sha256: str | None
    size_bytes: int | None
    artifact_uploaded_at: datetime | None
    signature: SignatureOut | None = None
    validation: ValidationSummaryOut | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


# -- validations ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidationResultOut(Wire):
    SCHEMA = "ValidationResultOut"
    id: uuid.UUID
    model_version_id: uuid.UUID
    validation_timestamp: datetime
    security_scan_status: str
    functional_status: str
    performance_benchmark: dict[str, Any] | None
    results: dict[str, Any] | None
    validated_by_user_id: uuid.UUID | None
    artifact_sha256: str | None
    created_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidationRunOut(Wire):
    SCHEMA = "ValidationRunOut"
    id: uuid.UUID
    model_version_id: uuid.UUID
    sha256: str
    status: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    phase: str | None = None
    result: ValidationResultOut | None


# -- deployments ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeploymentProgress(Wire):
    SCHEMA = "DeploymentProgress"
    step_index: int
    step_count: int | None
    step_started_at: datetime | None
    traffic_weight: int
    paused: bool
    hold_since: datetime | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeploymentOut(Wire):
    SCHEMA = "DeploymentOut"
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
    kubernetes_details: dict[str, Any] | None = None
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeploymentPage(Wire):
    SCHEMA = "DeploymentPage"
    items: list[DeploymentOut]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeploymentEventOut(Wire):
    SCHEMA = "DeploymentEventOut"
    id: int
    deployment_id: uuid.UUID
    at: datetime
    kind: str
    actor: str
    reason: str | None
    version_number: str | None
    details: dict[str, Any]
    actor_email: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class HistoryOut(Wire):
    SCHEMA = "HistoryOut"
    model: str
    environment: str
    events: list[DeploymentEventOut]
    serving_at: list[dict[str, Any]] | None = None


# -- keys -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyOut(Wire):
    SCHEMA = "KeyOut"
    id: uuid.UUID
    api_key: str
    name: str
    scopes: list[str]
    is_active: bool
    user_id: uuid.UUID
    user_email: str
    created_at: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyCreated(KeyOut):
    SCHEMA = "KeyCreated"
    token: str


# -- feedback -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackKept(Wire):
    SCHEMA = "FeedbackKept"
    index: int
    id: uuid.UUID


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackRejected(Wire):
    SCHEMA = "FeedbackRejected"
    index: int
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackBatchOut(Wire):
    SCHEMA = "FeedbackBatchOut"
    kept: list[FeedbackKept]
    rejected: list[FeedbackRejected]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackOut(Wire):
    SCHEMA = "FeedbackOut"
    id: uuid.UUID
    user_id: uuid.UUID
    model_version_id: uuid.UUID | None
    generation_request_id: uuid.UUID | None
    rating: int | None
    comment: str | None
    details: dict[str, Any] | None
    feedback_timestamp: datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackPage(Wire):
    SCHEMA = "FeedbackPage"
    items: list[FeedbackOut]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackSummaryOut(Wire):
    SCHEMA = "FeedbackSummaryOut"
    model_version_id: uuid.UUID
    count: int
    rated: int
    mean: float | None
    distribution: dict[str, int]
    positive_share: float | None
    positive_low: float | None
    positive_high: float | None
    since: datetime | None
    until: datetime | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServingFeedbackOut(Wire):
    SCHEMA = "ServingFeedbackOut"
    deployment_id: uuid.UUID
    model_version_id: uuid.UUID
    version_number: str
    role: str
    weight: int
    summary: FeedbackSummaryOut


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackCompareOut(Wire):
    SCHEMA = "FeedbackCompareOut"
    model: str
    environment: str
    window_start: datetime | None
    window_source: str
    until: datetime
    versions: list[ServingFeedbackOut]


#: Every response body the client reads, for the contract test.
ALL: tuple[type[Wire], ...] = (
    ModelOut,
    TensorOut,
    SignatureOut,
    ValidationSummaryOut,
    VersionOut,
    ValidationResultOut,
    ValidationRunOut,
    DeploymentProgress,
    DeploymentOut,
    DeploymentPage,
    DeploymentEventOut,
    HistoryOut,
    KeyOut,
    KeyCreated,
    FeedbackKept,
    FeedbackRejected,
    FeedbackBatchOut,
    FeedbackOut,
    FeedbackPage,
    FeedbackSummaryOut,
    ServingFeedbackOut,
    FeedbackCompareOut,
    Endpoint,
    SelectedEndpoint,
    EndpointAnswer,
)
