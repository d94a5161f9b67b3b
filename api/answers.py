"""JSON answers built from what a service returned, without FastAPI validating them again.

A route that returns a model makes FastAPI validate it against the route's ``response_model``
(in one more hop to the thread pool, for a synchronous route) before it serializes it. The
services' views (``registry.services.models``) already hold exactly the schema's types, built
from the rows the service just read or wrote, so the routes that answer with one build the
output model with ``model_construct`` and return a finished :class:`Response`. The route keeps
its ``response_model``, so the OpenAPI document does not change, and the bytes are those
FastAPI writes (``TypeAdapter.dump_json`` with ``by_alias``, as ``application/json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from api.schemas import (
    DeploymentOut,
    FeedbackBatchOut,
    FeedbackKept,
    FeedbackRejected,
    KeyCreated,
    KeyOut,
    ModelOut,
    SignatureOut,
    ValidationSummaryOut,
    VersionOut,
)
from registry.services.deployment_views import DeploymentView
from registry.services.feedback_ingest import BatchResult
from registry.services.keys import IssuedKey, KeyInfo
from registry.services.models import ModelView, VersionView

JSON = "application/json"


def answer(
    body: BaseModel, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` serialized as FastAPI serializes a ``response_model``."""
    return Response(
        body.model_dump_json(by_alias=True),
        status_code=status_code,
        headers=headers,
        media_type=JSON,
    )


def model_out(view: ModelView) -> ModelOut:
    return ModelOut.model_construct(
        id=view.id,
        name=view.name,
        description=view.description,
        provider=view.provider,
        task_type=view.task_type,
        is_active=view.is_active,
        created_at=view.created_at,
        updated_at=view.updated_at,
        tags=view.tags,
    )


def version_out(view: VersionView) -> VersionOut:
    summary = view.validation
    return VersionOut.model_construct(
        id=view.id,
        model_id=view.model_id,
        version_number=view.version_number,
        source_path=view.source_path,
        format=view.format,
        parameters=view.parameters,
        status=view.status,
        validation_result_id=view.validation_result_id,
        created_by_user_id=view.created_by_user_id,
        release_notes=view.release_notes,
        created_at=view.created_at,
        updated_at=view.updated_at,
        sha256=view.sha256,
        size_bytes=view.size_bytes,
        artifact_uploaded_at=view.artifact_uploaded_at,
        # Stored JSON that the validator wrote: checked against its schema, as before.
        signature=None if view.signature is None else SignatureOut.model_validate(view.signature),
        validation=None
        if summary is None
        else ValidationSummaryOut.model_construct(
            validation_id=summary.validation_id,
            security_scan_status=summary.security_scan_status,
            functional_status=summary.functional_status,
            pending=summary.pending,
        ),
        tags=view.tags,
    )


def deployment_out(view: DeploymentView) -> DeploymentOut:
    return DeploymentOut.model_construct(**DeploymentOut.fields_of(view))


def feedback_batch_out(result: BatchResult) -> FeedbackBatchOut:
    return FeedbackBatchOut.model_construct(
        kept=[FeedbackKept.model_construct(index=k.index, id=k.id) for k in result.kept],
        rejected=[
            FeedbackRejected.model_construct(index=r.index, reason=r.reason)
            for r in result.rejected
        ],
    )


def _key_fields(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "api_key": info.api_key,
        "name": info.name,
        "scopes": list(info.scopes),
        "is_active": info.is_active,
        "user_id": info.user_id,
        "user_email": info.user_email,
        "created_at": info.created_at,
    }


def key_out(info: KeyInfo) -> KeyOut:
    return KeyOut.model_construct(**_key_fields(info))


def key_created(issued: IssuedKey) -> KeyCreated:
    return KeyCreated.model_construct(**_key_fields(issued.info), token=issued.token)
