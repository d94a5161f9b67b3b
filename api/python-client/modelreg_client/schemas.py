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

import copy
import dataclasses
import types
import typing
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

W = TypeVar("W", bound="Wire")

_HINTS: dict[type, dict[str, Any]] = {}


def camel(name: str) -> str:
    """``model_version_id`` → ``modelVersionId``: the wire name of an attribute."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _read(hint: Any, value: Any) -> Any:
    """``value`` from JSON, as the annotation ``hint`` says."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _read(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_read(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _read(item, v) for k, v in value.items()}
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is uuid.UUID:
        return uuid.UUID(value)
    if isinstance(hint, type) and issubclass(hint, Wire):
        return hint.from_wire(value)
    return value


Mode = Literal["python", "json"]


def _dump(value: Any, *, mode: Mode, by_alias: bool) -> Any:
    if isinstance(value, Wire):
        return value.model_dump(mode=mode, by_alias=by_alias)
    if isinstance(value, list):
        return [_dump(v, mode=mode, by_alias=by_alias) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, mode=mode, by_alias=by_alias) for k, v in value.items()}
    if mode == "json":
        if isinstance(value, datetime):
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, uuid.UUID):
            return str(value)
    return copy.deepcopy(value)


@dataclasses.dataclass(frozen=True)
class Wire:
    """A response body. ``wire`` keeps the JSON exactly as the server sent it."""

    wire: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, repr=False, compare=False, kw_only=True
    )
    #: The server's name for this body (``components.schemas`` in its OpenAPI document).
    SCHEMA: ClassVar[str] = ""

    @classmethod
    def from_wire(cls: type[W], data: Mapping[str, Any]) -> W:
        """Read a JSON object; a field the server did not send takes its default, or None."""
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "wire":
                continue
            key = camel(field.name)
            if key in data:
                values[field.name] = _read(hints[field.name], data[key])
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                values[field.name] = None
        return cls(**values, wire=data)

    def model_dump(self, *, mode: Mode = "python", by_alias: bool = False) -> dict[str, Any]:
        """The fields as a dict: with ``by_alias`` under their camelCase wire names; in
        ``json`` mode with JSON values only. ``mode="json", by_alias=True`` is the body as the
        server sent it."""
        if mode == "json" and by_alias and self.wire:
            return copy.deepcopy(dict(self.wire))
        return {
            (camel(f.name) if by_alias else f.name): _dump(
                getattr(self, f.name), mode=mode, by_alias=by_alias
            )
            for f in dataclasses.fields(self)
            if f.name != "wire"
        }


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


# -- endpoints ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint(Wire):
    SCHEMA = "Endpoint"
    version_number: str
    model_version_id: str
    deployment_id: str
    url: str
    weight: int
    role: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectedEndpoint(Wire):
    SCHEMA = "SelectedEndpoint"
    version_number: str
    model_version_id: str
    url: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class EndpointAnswer(Wire):
    SCHEMA = "EndpointAnswer"
    model: str
    environment: str
    generation: int
    endpoints: list[Endpoint]
    selected: SelectedEndpoint | None


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
