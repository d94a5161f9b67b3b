"""AIModel: create, find, change and delete registered models.

Also the lookups every service shares (:func:`get_model`, :func:`get_version`) and the views
the services return instead of ORM rows (:class:`ModelView`, :class:`VersionView`): this module
imports no other service, so every service may import it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session, sessionmaker

from registry.auth import Principal
from registry.db import lock_row
from registry.errors import Conflict, Invalid, NotFound
from registry.models import (
    AIModel,
    AIModelDeployment,
    AIModelVersion,
    ArtifactUpload,
    model_tags,
    version_tags,
)
from registry.pagination import check_limit
from registry.search import MODEL_FIELDS, MODEL_SORTING, where_filter
from registry.services import audit
from registry.storage import ArtifactStore
from registry.tags import delete_tag, load_tags, upsert_tag
from registry.validation_summary import ValidationSummary

log = logging.getLogger(__name__)
T = TypeVar("T")

MUTABLE_FIELDS = ("description", "provider", "task_type", "is_active")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class ModelView:
    """A model as the API shows it, read in the transaction that found or changed it."""

    id: uuid.UUID
    name: str
    description: str | None
    provider: str
    task_type: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: AIModel, tags: dict[str, str] | None = None) -> ModelView:
        """``tags`` as a page's one grouped query read them; else read for this model."""
        return cls(
            id=model.id,
            name=model.name,
            description=model.description,
            provider=model.provider,
            task_type=model.task_type,
            is_active=model.is_active,
            created_at=model.created_at,
            updated_at=model.updated_at,
            tags=_own_tags(model, model_tags) if tags is None else tags,
        )


@dataclass(frozen=True)
class VersionView:
    """A version as the API shows it, read in the transaction that found or changed it."""

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
    signature: dict[str, Any] | None
    validation: ValidationSummary | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, version: AIModelVersion, tags: dict[str, str] | None = None) -> VersionView:
        """``tags`` as a page's one grouped query read them; else read for this version (in
        the session that loaded it, so every service that returns a version shows its tags)."""
        return cls(
            id=version.id,
            model_id=version.model_id,
            version_number=version.version_number,
            source_path=version.source_path,
            format=version.format,
            parameters=version.parameters,
            status=version.status,
            validation_result_id=version.validation_result_id,
            created_by_user_id=version.created_by_user_id,
            release_notes=version.release_notes,
            created_at=version.created_at,
            updated_at=version.updated_at,
            sha256=version.sha256,
            size_bytes=version.size_bytes,
            artifact_uploaded_at=version.artifact_uploaded_at,
            signature=version.signature,
            validation=ValidationSummary.of(version),
            tags=_own_tags(version, version_tags) if tags is None else tags,
        )


def _own_tags(row: AIModel | AIModelVersion, table: Any) -> dict[str, str]:
    s = object_session(row)
    return {} if s is None or row.id is None else load_tags(s, table, [row.id])[row.id]


def get_model(s: Session, name: str) -> AIModel:
    model = s.scalar(select(AIModel).where(AIModel.name == name))
    if model is None:
        raise NotFound(f"no model named {name!r}")
    return model


_MODEL_ID = select(AIModel.id).where(AIModel.name == bindparam("name"))


def get_model_id(conn: Connection, name: str) -> uuid.UUID:
    """:func:`get_model`'s id only, for a writer that needs no more of the model."""
    model_id = conn.scalar(_MODEL_ID, {"name": name})
    if model_id is None:
        raise NotFound(f"no model named {name!r}")
    return model_id


def get_version(s: Session, model: AIModel, version_number: str) -> AIModelVersion:
    version = s.scalar(
        select(AIModelVersion).where(
            AIModelVersion.model_id == model.id, AIModelVersion.version_number == version_number
        )
    )
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {version_number!r}")
    return version


class ModelService:
    def __init__(self, sessions: sessionmaker[Session], *, store: ArtifactStore) -> None:
        self.sessions = sessions
        self.store = store

    def create(
        self,
        actor: Principal,
        *,
        name: str,
        provider: str,
        task_type: str,
        description: str | None = None,
        is_active: bool = True,
    ) -> ModelView:
        try:
            with self.sessions.begin() as s:
                model = AIModel(
                    name=name,
                    provider=provider,
                    task_type=task_type,
                    description=description,
                    is_active=is_active,
                )
                s.add(model)
                s.flush()
                audit.record(s, actor, "model_created", modelId=model.id, name=name)
                view = ModelView.of(model)
        except IntegrityError as exc:
            if self.exists(name):
                raise Conflict(f"a model named {name!r} already exists") from None
            raise exc
        return view

    def exists(self, name: str) -> bool:
        with self.sessions() as s:
            return s.scalar(select(AIModel.id).where(AIModel.name == name)) is not None

    def get(self, name: str) -> ModelView:
        with self.sessions() as s:
            return ModelView.of(get_model(s, name))

    def list(
        self,
        *,
        task_type: str | None = None,
        provider: str | None = None,
        is_active: bool | None = None,
        q: str | None = None,
        filter: str | None = None,
        order_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[ModelView]:
        """``filter`` is registry/filters.py's grammar over registry/search.py's model
        fields; ``order_by`` one of its orders (default ``name asc``)."""
        check_limit(limit)
        order = MODEL_SORTING.parse(order_by)
        stmt = where_filter(select(AIModel), filter, MODEL_FIELDS)
        if task_type is not None:
            stmt = stmt.where(AIModel.task_type == task_type)
        if provider is not None:
            stmt = stmt.where(AIModel.provider == provider)
        if is_active is not None:
            stmt = stmt.where(AIModel.is_active == is_active)
        if q:
            pattern = f"%{_escape_like(q.lower())}%"
            stmt = stmt.where(
                or_(
                    func.lower(AIModel.name).like(pattern, escape="\\"),
                    func.lower(AIModel.description).like(pattern, escape="\\"),
                )
            )
        stmt = MODEL_SORTING.apply(stmt, order, cursor)
        with self.sessions() as s:
            found = list(s.scalars(stmt.limit(limit + 1)))[: limit + 1]
            tags = load_tags(s, model_tags, [m.id for m in found[:limit]])
            rows = [ModelView.of(m, tags.get(m.id, {})) for m in found[:limit]]
        more = len(found) > limit
        return Page(rows, MODEL_SORTING.cursor(order, rows[-1]) if more else None)

    def update(self, actor: Principal, name: str, changes: dict[str, Any]) -> ModelView:
        unknown = set(changes) - set(MUTABLE_FIELDS)
        if unknown:
            raise Invalid(f"fields {sorted(unknown)} cannot be changed")
        with self.sessions.begin() as s:
            model = get_model(s, name)
            changed = {k: v for k, v in changes.items() if getattr(model, k) != v}
            for field, value in changed.items():
                setattr(model, field, value)
            if changed:
                s.flush()
                audit.record(
                    s, actor, "model_updated", modelId=model.id, name=name, changes=changed
                )
            return ModelView.of(model)

    # -- tags: labels, not part of what serves (registry/tags.py) ---------------------------

    def set_tag(self, actor: Principal, name: str, key: str, value: str) -> ModelView:
        """Set (or replace) the tag; setting the value it has is a no-op, not audited."""
        try:
            with self.sessions.begin() as s:
                model = get_model(s, name)
                if upsert_tag(s, model_tags, model.id, key, value):
                    audit.record(
                        s, actor, "model_tag_set", modelId=model.id, name=name, key=key, value=value
                    )
                return ModelView.of(model)
        except IntegrityError:  # the model was deleted meanwhile (the tag's foreign key)
            raise NotFound(f"no model named {name!r}") from None

    def delete_tag(self, actor: Principal, name: str, key: str) -> None:
        with self.sessions.begin() as s:
            model = get_model(s, name)
            old = delete_tag(s, model_tags, model.id, key)
            if old is None:
                raise NotFound(f"model {name!r} has no tag {key!r}")
            audit.record(
                s, actor, "model_tag_deleted", modelId=model.id, name=name, key=key, value=old
            )

    def delete(self, actor: Principal, name: str) -> None:
        with self.sessions.begin() as s:
            found = get_model(s, name)
            # Lock first: a deploy locks the model too, so either it sees the model gone or
            # this sees its deployment.
            model = lock_row(s, AIModel, found.id)
            if model is None:
                raise NotFound(f"no model named {name!r}")
            deployments = s.scalar(
                select(func.count())
                .select_from(AIModelDeployment)
                .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
                .where(AIModelVersion.model_id == model.id)
            )
            if deployments:
                # Deleting would take its ledger and deployment rows ("what served at T").
                raise Conflict(
                    f"model {name!r} has been deployed ({deployments} deployment(s)) and its "
                    "history must be kept: set isActive to false instead of deleting it",
                    deployments=deployments,
                    suggestion={"isActive": False},
                )
            keys = [
                k
                for k in s.scalars(
                    select(AIModelVersion.source_path).where(
                        AIModelVersion.model_id == model.id, AIModelVersion.source_path.is_not(None)
                    )
                )
                if k
            ]
            keys += list(
                s.scalars(
                    select(ArtifactUpload.object_key)
                    .join(AIModelVersion, AIModelVersion.id == ArtifactUpload.model_version_id)
                    .where(AIModelVersion.model_id == model.id)
                )
            )
            s.delete(model)
            audit.record(s, actor, "model_deleted", modelId=model.id, name=name, artifacts=keys)
        # The rows are gone; now the objects. A failure here leaves an orphan for GC, never a
        # row pointing at a missing object.
        for key in keys:
            try:
                self.store.delete(key)
            except Exception:
                log.warning(
                    "could not delete artifact %s of deleted model %s; GC will retry",
                    key,
                    name,
                    exc_info=True,
                )


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
