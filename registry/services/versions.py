"""AIModelVersion: versions, their artifacts and their lifecycle.

The upload of an artifact (its lease, its budget, the stream into the store) is
``registry.services.uploads``; ``VersionService.upload`` hands it over.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import Principal, Scope
from registry.db import lock_row, statement_connection
from registry.errors import Conflict, Forbidden, GateClosed, Invalid, NotFound
from registry.models import (
    AIModelDeployment,
    AIModelValidationResult,
    AIModelVersion,
    version_tags,
)
from registry.pagination import check_limit
from registry.search import VERSION_FIELDS, VERSION_SORTING, where_filter
from registry.services import audit
from registry.services.models import Page, VersionView, get_model, get_model_id, get_version
from registry.services.uploads import ArtifactUploads
from registry.services.validations import validation_gate
from registry.storage import ArtifactStore
from registry.tags import delete_tag, load_tags, upsert_tag
from registry.types import utcnow
from registry.vocabulary import ArtifactFormat, VersionStatus, values

#: The format of a version without an artifact, which ``parameters.endpoint`` serves.
FORMATS = values(ArtifactFormat)

#: The lifecycle. ``any → Archived`` holds for every state but Archived itself.
TRANSITIONS: dict[str, tuple[VersionStatus, ...]] = {
    VersionStatus.STAGED: (VersionStatus.PRODUCTION, VersionStatus.FAILED, VersionStatus.ARCHIVED),
    VersionStatus.PRODUCTION: (VersionStatus.DEPRECATED, VersionStatus.ARCHIVED),
    VersionStatus.DEPRECATED: (VersionStatus.PRODUCTION, VersionStatus.ARCHIVED),
    VersionStatus.FAILED: (VersionStatus.ARCHIVED,),
    VersionStatus.ARCHIVED: (),
}
MUTABLE_FIELDS = ("release_notes", "parameters")


@dataclass(frozen=True)
class ArtifactRef:
    """What a download needs: where the object is and what it must hash to."""

    key: str
    sha256: str
    size: int
    filename: str


def check_api_parameters(fmt: str | None, parameters: dict[str, Any] | None) -> None:
    """A version of format API has no artifact: its endpoint URL must be in ``parameters``."""
    if fmt != ArtifactFormat.API:
        return
    endpoint = (parameters or {}).get("endpoint")
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^\s/$.?#][^\s]*$", endpoint):
        raise Invalid(
            "a version of format API needs parameters.endpoint, an http:// or https:// URL"
        )


class VersionImmutable(Conflict):
    """What a version serves (an API version's ``parameters``) cannot change any more."""

    title = "Version immutable"
    TYPE = "https://modelreg.dev/problems/version-immutable"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, type=self.TYPE, **extra)


def why_frozen(s: Session, version: AIModelVersion) -> list[str]:
    """Why ``version``'s ``parameters`` may no longer change; empty while they may. For an API
    version they *are* what serves; for any version a validation, a deployment or a lifecycle
    move was decided on them."""
    reasons = []
    if version.status != VersionStatus.STAGED:
        reasons.append(f"it is {version.status}")
    validated = version.validation_result_id is not None or s.scalar(
        select(AIModelValidationResult.id)
        .where(AIModelValidationResult.model_version_id == version.id)
        .limit(1)
    )
    if validated:
        reasons.append("it has been validated")
    deployed = s.scalar(
        select(AIModelDeployment.id)
        .where(AIModelDeployment.model_version_id == version.id)
        .limit(1)
    )
    if deployed is not None:
        reasons.append("it has been deployed")
    return reasons


def promotion_gate(s: Session, version: AIModelVersion) -> list[str]:
    """Why ``version`` may not go to Production; empty when it may.

    This is the one place that gates a move to Production (and, later, production
    deployments): an artifact must exist, and the latest validation of its *current* digest
    must have passed both the security scan and the functional check.
    """
    if version.format != ArtifactFormat.API and version.source_path is None:
        return ["artifact: no artifact has been uploaded to this version"]
    return validation_gate(s, version)


_INSERT_VERSION = audit.audited_insert(
    cast(Table, AIModelVersion.__table__),
    (
        "id",
        "model_id",
        "version_number",
        "format",
        "parameters",
        "status",
        "created_by_user_id",
        "release_notes",
        "created_at",
        "updated_at",
    ),
)


class VersionService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        store: ArtifactStore,
        max_artifact_bytes: int,
        lease_seconds: int = 120,
        per_key: int = 4,
    ) -> None:
        self.sessions = sessions
        self.uploads = ArtifactUploads(
            sessions,
            store=store,
            max_artifact_bytes=max_artifact_bytes,
            lease_seconds=lease_seconds,
            per_key=per_key,
        )

    # -- reading ---------------------------------------------------------------------------

    def get(self, model_name: str, version_number: str) -> VersionView:
        with self.sessions() as s:
            return VersionView.of(get_version(s, get_model(s, model_name), version_number))

    def list(
        self,
        model_name: str,
        *,
        status: str | None = None,
        filter: str | None = None,
        order_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[VersionView]:
        """Newest first, unless ``order_by`` says otherwise; ``filter`` is registry/filters.py's
        grammar over registry/search.py's version fields."""
        check_limit(limit)
        order = VERSION_SORTING.parse(order_by)
        with self.sessions() as s:
            model = get_model(s, model_name)
            stmt = select(AIModelVersion).where(AIModelVersion.model_id == model.id)
            if status is not None:
                stmt = stmt.where(AIModelVersion.status == status)
            stmt = VERSION_SORTING.apply(where_filter(stmt, filter, VERSION_FIELDS), order, cursor)
            found = list(s.scalars(stmt.limit(limit + 1)))
            tags = load_tags(s, version_tags, [v.id for v in found[:limit]])
            rows = [VersionView.of(v, tags.get(v.id, {})) for v in found[:limit]]
        more = len(found) > limit
        return Page(rows, VERSION_SORTING.cursor(order, rows[-1]) if more else None)

    def artifact(self, model_name: str, version_number: str) -> ArtifactRef:
        version = self.get(model_name, version_number)
        if version.source_path is None or version.sha256 is None or version.size_bytes is None:
            raise NotFound(
                f"version {version_number!r} of {model_name!r} has no artifact"
                + (" (format API)" if version.format == ArtifactFormat.API else "")
            )
        return ArtifactRef(
            key=version.source_path,
            sha256=version.sha256,
            size=version.size_bytes,
            filename=version.source_path.rsplit("/", 1)[-1],
        )

    # -- writing ---------------------------------------------------------------------------

    def create(
        self,
        actor: Principal,
        model_name: str,
        *,
        version_number: str,
        fmt: str = ArtifactFormat.ONNX,
        release_notes: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> VersionView:
        if fmt not in FORMATS:
            raise Invalid(f"unknown format {fmt!r}", allowedFormats=list(FORMATS))
        check_api_parameters(fmt, parameters)
        now = utcnow()
        row: dict[str, Any] = {
            "id": uuid.uuid4(),
            "version_number": version_number,
            "format": fmt,
            "parameters": parameters,
            "status": VersionStatus.STAGED.value,
            "created_by_user_id": actor.user_id,
            "release_notes": release_notes,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.sessions.begin() as s:
                # Two statements, each atomic: should the model go in between, the version's
                # foreign key refuses it (IntegrityError, then NotFound below).
                conn = statement_connection(s)
                row["model_id"] = get_model_id(conn, model_name)
                # The version and its audit row in one round trip (where the database allows
                # it), through Core: the ORM's unit of work costs more than both inserts.
                audit.execute_audited(
                    conn,
                    _INSERT_VERSION,
                    row,
                    audit.entry(
                        actor,
                        "version_created",
                        modelId=row["model_id"],
                        modelVersionId=row["id"],
                        versionNumber=version_number,
                        format=fmt,
                    ),
                )
        except IntegrityError:
            with self.sessions() as s:
                get_version(s, get_model(s, model_name), version_number)  # NotFound → re-raise
            raise Conflict(
                f"model {model_name!r} already has a version {version_number!r}"
            ) from None
        # What a new version is: no artifact, no validation, no tags yet.
        return VersionView(
            **row,
            source_path=None,
            validation_result_id=None,
            sha256=None,
            size_bytes=None,
            artifact_uploaded_at=None,
            signature=None,
        )

    def update(
        self, actor: Principal, model_name: str, version_number: str, changes: dict[str, Any]
    ) -> VersionView:
        unknown = set(changes) - set(MUTABLE_FIELDS)
        if unknown:
            raise Invalid(f"fields {sorted(unknown)} cannot be changed")
        with self.sessions.begin() as s:
            found = get_version(s, get_model(s, model_name), version_number)
            # Lock first: a deploy of this version locks it too, so one of us goes first.
            version = lock_row(s, AIModelVersion, found.id)
            if version is None:
                raise NotFound(f"model {model_name!r} has no version {version_number!r}")
            if "parameters" in changes:
                check_api_parameters(version.format, changes["parameters"])
            changed = {k: v for k, v in changes.items() if getattr(version, k) != v}
            if "parameters" in changed:
                frozen = why_frozen(s, version)
                if frozen:
                    raise VersionImmutable(
                        f"the parameters of version {version_number!r} cannot change: "
                        + ", ".join(frozen)
                        + "; create a new version (release notes stay editable)",
                        reasons=frozen,
                    )
            for field, value in changed.items():
                setattr(version, field, value)
            if changed:
                s.flush()
                audit.record(
                    s, actor, "version_updated", modelVersionId=version.id, fields=sorted(changed)
                )
            return VersionView.of(version)

    # -- tags: labels, editable on any status; never the digest or validation -------------

    def set_tag(
        self, actor: Principal, model_name: str, version_number: str, key: str, value: str
    ) -> VersionView:
        """Set (or replace) the tag; setting the value it has is a no-op, not audited. The
        version's row is not touched, so neither its status nor its digest matters."""
        try:
            with self.sessions.begin() as s:
                version = get_version(s, get_model(s, model_name), version_number)
                if upsert_tag(s, version_tags, version.id, key, value):
                    audit.record(
                        s,
                        actor,
                        "version_tag_set",
                        modelVersionId=version.id,
                        versionNumber=version_number,
                        key=key,
                        value=value,
                    )
                return VersionView.of(version)
        except IntegrityError:  # the version was deleted meanwhile (the tag's foreign key)
            raise NotFound(f"model {model_name!r} has no version {version_number!r}") from None

    def delete_tag(self, actor: Principal, model_name: str, version_number: str, key: str) -> None:
        with self.sessions.begin() as s:
            version = get_version(s, get_model(s, model_name), version_number)
            old = delete_tag(s, version_tags, version.id, key)
            if old is None:
                raise NotFound(f"version {version_number!r} of {model_name!r} has no tag {key!r}")
            audit.record(
                s,
                actor,
                "version_tag_deleted",
                modelVersionId=version.id,
                versionNumber=version_number,
                key=key,
                value=old,
            )

    def transition(
        self,
        actor: Principal,
        model_name: str,
        version_number: str,
        *,
        status: str,
        reason: str | None = None,
        force: bool = False,
    ) -> VersionView:
        """Move the version. ``force`` (admin only, with a reason) overrides a closed gate;
        the audit row then says ``forced`` and lists the checks it overrode."""
        with self.sessions.begin() as s:
            model = get_model(s, model_name)
            found = get_version(s, model, version_number)
            # Lock before reading the status: of two racing moves, the second sees the first.
            version = lock_row(s, AIModelVersion, found.id)
            if version is None:
                raise NotFound(f"model {model_name!r} has no version {version_number!r}")
            current = version.status
            overridden: list[str] = []
            allowed = TRANSITIONS.get(current, ())
            if status not in allowed:
                raise Conflict(
                    f"a version cannot move from {current} to {status}",
                    currentStatus=current,
                    allowedTransitions=list(allowed),
                )
            if status == VersionStatus.PRODUCTION:
                reasons = promotion_gate(s, version)
                if reasons and force:
                    if not actor.allows(Scope.ADMIN):
                        raise Forbidden(
                            "only an admin key may force a closed gate",
                            requiredScope=Scope.ADMIN.value,
                        )
                    if not reason:
                        raise Invalid("forcing a closed gate needs a reason")
                    overridden = reasons
                elif reasons:
                    raise GateClosed(
                        f"version {version_number!r} cannot go to Production: "
                        + "; ".join(reasons),
                        failedChecks=reasons,
                    )
            version.status = status
            s.flush()
            audit.record(
                s,
                actor,
                "version_transitioned",
                modelVersionId=version.id,
                versionNumber=version_number,
                fromStatus=current,
                toStatus=status,
                reason=reason,
                **({"forced": True, "overriddenChecks": overridden} if overridden else {}),
            )
            return VersionView.of(version)

    def upload(
        self,
        actor: Principal,
        model_name: str,
        version_number: str,
        chunks: Iterable[bytes],
        *,
        filename: str | None = None,
        expected_sha256: str | None = None,
    ) -> VersionView:
        """Stream ``chunks`` into the version's artifact, all or nothing (see
        :meth:`ArtifactUploads.upload`)."""
        return self.uploads.upload(
            actor,
            model_name,
            version_number,
            chunks,
            filename=filename,
            expected_sha256=expected_sha256,
        )
