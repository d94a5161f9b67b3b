"""AIModelVersion: versions, their artifacts and their lifecycle."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import Principal, Scope
from registry.db import DB_UNAVAILABLE_ERRORS, lock_row
from registry.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GateClosed,
    Invalid,
    NotFound,
    TooManyRequests,
)
from registry.metrics import UPLOAD_BYTES, UPLOADS
from registry.models import (
    AIModel,
    AIModelDeployment,
    AIModelValidationResult,
    AIModelVersion,
    ArtifactUpload,
)
from registry.pagination import check_limit, decode_cursor, encode_cursor
from registry.services import audit
from registry.services.models import Page, get_model
from registry.services.validations import lock_budget, queue_validation, validation_gate
from registry.storage import ArtifactStore, HashingReader, StoredObject, artifact_key
from registry.types import utcnow

log = logging.getLogger(__name__)

API_FORMAT = "API"
FORMATS = (
    "ONNX",
    "PyTorch",
    "Pickle",
    "Joblib",
    "SafeTensors",
    "TensorFlow SavedModel",
    API_FORMAT,
)
DEFAULT_FILENAMES = {
    "ONNX": "model.onnx",
    "PyTorch": "model.pt",
    "Pickle": "model.pkl",
    "Joblib": "model.joblib",
    "SafeTensors": "model.safetensors",
    "TensorFlow SavedModel": "model.tar.gz",
}
ARTIFACT_SUFFIXES = (
    ".onnx",
    ".tar.gz",
    ".tgz",
    ".zip",
    ".pt",
    ".pth",
    ".bin",
    ".pkl",
    ".pickle",
    ".joblib",
    ".safetensors",
)
_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

#: The lifecycle. ``any → Archived`` holds for every state but Archived itself.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "Staged": ("Production", "Failed", "Archived"),
    "Production": ("Deprecated", "Archived"),
    "Deprecated": ("Production", "Archived"),
    "Failed": ("Archived",),
    "Archived": (),
}
MUTABLE_FIELDS = ("release_notes", "parameters")
#: What a key at its limit of concurrent uploads is told to wait, in seconds.
UPLOADS_FULL_RETRY_SECONDS = 10


class LeaseLost(Conflict):
    """Another upload took over this version: its object must not be touched."""


@dataclass(frozen=True)
class UploadClaim:
    version_id: uuid.UUID
    token: uuid.UUID
    key: str


@dataclass(frozen=True)
class ArtifactRef:
    """What a download needs: where the object is and what it must hash to."""

    key: str
    sha256: str
    size: int
    filename: str


def sanitize_filename(filename: str) -> str:
    """Keep the last path component, and accept only plain names with a known artifact suffix."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not _FILENAME_RE.match(name) or name in (".", ".."):
        raise Invalid(
            f"artifact filename {filename!r} is not allowed: use letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    if not name.lower().endswith(ARTIFACT_SUFFIXES):
        raise Invalid(
            f"artifact filename {name!r} has an unsupported suffix",
            allowedSuffixes=list(ARTIFACT_SUFFIXES),
        )
    return name


def check_api_parameters(fmt: str | None, parameters: dict[str, Any] | None) -> None:
    """A version of format API has no artifact: its endpoint URL must be in ``parameters``."""
    if fmt != API_FORMAT:
        return
    endpoint = (parameters or {}).get("endpoint")
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^\s/$.?#][^\s]*$", endpoint):
        raise Invalid(
            "a version of format API needs parameters.endpoint, an http:// or https:// URL"
        )


def _immutable(version: AIModelVersion) -> Conflict:
    return Conflict(
        f"version {version.version_number!r} already has an artifact (sha256 {version.sha256}); "
        "versions are immutable, create a new one"
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
    if version.status != "Staged":
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


def get_version(s: Session, model: AIModel, version_number: str) -> AIModelVersion:
    version = s.scalar(
        select(AIModelVersion).where(
            AIModelVersion.model_id == model.id, AIModelVersion.version_number == version_number
        )
    )
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {version_number!r}")
    return version


def promotion_gate(s: Session, version: AIModelVersion) -> list[str]:
    """Why ``version`` may not go to Production; empty when it may.

    This is the one place that gates a move to Production (and, later, production
    deployments): an artifact must exist, and the latest validation of its *current* digest
    must have passed both the security scan and the functional check.
    """
    if version.format != API_FORMAT and version.source_path is None:
        return ["artifact: no artifact has been uploaded to this version"]
    return validation_gate(s, version)


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
        self.store = store
        self.max_artifact_bytes = max_artifact_bytes
        self.lease = timedelta(seconds=lease_seconds)
        self.per_key = per_key

    # -- reading ---------------------------------------------------------------------------

    def get(self, model_name: str, version_number: str) -> AIModelVersion:
        with self.sessions() as s:
            return get_version(s, get_model(s, model_name), version_number)

    def list(
        self,
        model_name: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AIModelVersion]:
        """Newest first."""
        check_limit(limit)
        with self.sessions() as s:
            model = get_model(s, model_name)
            stmt = (
                select(AIModelVersion)
                .where(AIModelVersion.model_id == model.id)
                .order_by(AIModelVersion.created_at.desc(), AIModelVersion.id.desc())
            )
            if status is not None:
                stmt = stmt.where(AIModelVersion.status == status)
            if cursor:
                created, vid = decode_cursor(cursor, arity=2)
                try:
                    after = (datetime.fromisoformat(created), uuid.UUID(vid))
                except (TypeError, ValueError):
                    raise Invalid("cursor is not one this server issued") from None
                stmt = stmt.where(tuple_(AIModelVersion.created_at, AIModelVersion.id) < after)
            rows = list(s.scalars(stmt.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        nxt = encode_cursor([last.created_at.isoformat(), str(last.id)]) if more and last else None
        return Page(rows, nxt)

    def artifact(self, model_name: str, version_number: str) -> ArtifactRef:
        version = self.get(model_name, version_number)
        if version.source_path is None or version.sha256 is None or version.size_bytes is None:
            raise NotFound(
                f"version {version_number!r} of {model_name!r} has no artifact"
                + (" (format API)" if version.format == API_FORMAT else "")
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
        fmt: str = "ONNX",
        release_notes: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> AIModelVersion:
        if fmt not in FORMATS:
            raise Invalid(f"unknown format {fmt!r}", allowedFormats=list(FORMATS))
        check_api_parameters(fmt, parameters)
        try:
            with self.sessions.begin() as s:
                model = get_model(s, model_name)
                version = AIModelVersion(
                    model_id=model.id,
                    version_number=version_number,
                    format=fmt,
                    release_notes=release_notes,
                    parameters=parameters,
                    created_by_user_id=actor.user_id,
                )
                s.add(version)
                s.flush()
                audit.record(
                    s,
                    actor,
                    "version_created",
                    modelId=model.id,
                    modelVersionId=version.id,
                    versionNumber=version_number,
                    format=fmt,
                )
        except IntegrityError:
            with self.sessions() as s:
                get_version(s, get_model(s, model_name), version_number)  # NotFound → re-raise
            raise Conflict(
                f"model {model_name!r} already has a version {version_number!r}"
            ) from None
        return version

    def update(
        self, actor: Principal, model_name: str, version_number: str, changes: dict[str, Any]
    ) -> AIModelVersion:
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
        return version

    def transition(
        self,
        actor: Principal,
        model_name: str,
        version_number: str,
        *,
        status: str,
        reason: str | None = None,
        force: bool = False,
    ) -> AIModelVersion:
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
            if status == "Production":
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
        return version

    # -- artifact upload -------------------------------------------------------------------

    def upload(
        self,
        actor: Principal,
        model_name: str,
        version_number: str,
        chunks: Iterable[bytes],
        *,
        filename: str | None = None,
        expected_sha256: str | None = None,
    ) -> AIModelVersion:
        """Stream ``chunks`` into the version's artifact. All or nothing.

        On any failure (client gone, size limit, digest mismatch, store or database error) the
        version row is unchanged and no object is left at the version's key. Every call counts
        once in ``modelreg_artifact_uploads_total{result}`` (completed or failed).
        """
        try:
            version = self._upload(
                actor,
                model_name,
                version_number,
                chunks,
                filename=filename,
                expected_sha256=expected_sha256,
            )
        except BaseException:
            UPLOADS.labels(result="failed").inc()
            raise
        UPLOADS.labels(result="completed").inc()
        UPLOAD_BYTES.inc(version.size_bytes or 0)
        return version

    def _upload(
        self,
        actor: Principal,
        model_name: str,
        version_number: str,
        chunks: Iterable[bytes],
        *,
        filename: str | None,
        expected_sha256: str | None,
    ) -> AIModelVersion:
        if expected_sha256 is not None and not _SHA256_RE.match(expected_sha256):
            raise BadRequest("X-Checksum-Sha256 must be 64 hexadecimal characters")
        claim = self._claim(actor, model_name, version_number, filename=filename)
        reader = HashingReader(
            self._heartbeat(claim, chunks),
            max_bytes=self.max_artifact_bytes,
            expected_sha256=expected_sha256,
        )
        try:
            stored = self.store.put(claim.key, reader)
        except BaseException:
            self._release(claim)
            raise
        try:
            return self._complete(actor, claim, stored)
        except LeaseLost:
            raise
        except DB_UNAVAILABLE_ERRORS:
            # The commit may have gone through before the connection died, and the row then
            # names the object: keep it. If it did not, `modelreg gc` removes the orphan.
            log.warning(
                "database lost while recording artifact %s; kept it for GC to judge", claim.key
            )
            raise
        except BaseException:
            self._discard(claim)
            raise

    def _claim(
        self, actor: Principal, model_name: str, version_number: str, *, filename: str | None
    ) -> UploadClaim:
        """Take the version's upload lease, within the actor's budget of concurrent uploads.

        The budget (``per_key`` live leases per user) is counted in ``artifact_upload``, so it
        holds across API replicas; the user's row is locked before counting, so that
        concurrent claims cannot both take the last place. A lease a dead process left behind
        counts until it expires (``lease_seconds``).
        """
        try:
            with self.sessions.begin() as s:
                lock_budget(s, actor.user_id)
                model = get_model(s, model_name)
                version = get_version(s, model, version_number)
                if version.format == API_FORMAT:
                    raise Conflict(
                        "a version of format API has no artifact; its endpoint is in parameters"
                    )
                if version.source_path is not None:
                    raise _immutable(version)
                name = sanitize_filename(
                    filename or DEFAULT_FILENAMES.get(version.format or "", "model.onnx")
                )
                now = utcnow()
                held = s.get(ArtifactUpload, version.id)
                if held is not None:
                    if held.expires_at > now:
                        raise Conflict(
                            f"an upload to version {version_number!r} is already in progress",
                            leaseExpiresAt=held.expires_at.isoformat(),
                        )
                    log.info("taking over expired upload lease on version %s", version.id)
                    s.delete(held)
                    s.flush()
                uploading = s.scalar(
                    select(func.count())
                    .select_from(ArtifactUpload)
                    .where(
                        ArtifactUpload.started_by_user_id == actor.user_id,
                        ArtifactUpload.expires_at > now,
                    )
                )
                if (uploading or 0) >= self.per_key:
                    raise TooManyRequests(
                        f"this key already has {uploading} uploads in progress, the most it may "
                        f"have at once (MODELREG_UPLOADS_PER_KEY={self.per_key}); retry when "
                        "one has finished",
                        retry_after=UPLOADS_FULL_RETRY_SECONDS,
                        uploadsInProgress=uploading,
                        limit=self.per_key,
                    )
                claim = UploadClaim(
                    version.id, uuid.uuid4(), artifact_key(model.id, version.id, name)
                )
                s.add(
                    ArtifactUpload(
                        model_version_id=version.id,
                        token=claim.token,
                        object_key=claim.key,
                        started_by_user_id=actor.user_id,
                        started_at=now,
                        expires_at=now + self.lease,
                    )
                )
                s.flush()
                # Another upload may have completed between the reads above (it deletes its
                # lease and fills the row in one transaction). Now that our lease row is
                # written, read the version again, locked: a completed upload is visible.
                s.refresh(version, with_for_update=True)
                if version.source_path is not None:
                    raise _immutable(version)
        except IntegrityError:
            raise Conflict(
                f"an upload to version {version_number!r} is already in progress"
            ) from None
        return claim

    def _heartbeat(self, claim: UploadClaim, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass chunks through, renewing the upload's lease every third of its length."""
        every = self.lease.total_seconds() / 3
        due = time.monotonic() + every
        for chunk in chunks:
            if time.monotonic() >= due:
                self._renew(claim)
                due = time.monotonic() + every
            yield chunk

    def _renew(self, claim: UploadClaim) -> None:
        with self.sessions.begin() as s:
            renewed = s.execute(
                update(ArtifactUpload)
                .where(
                    ArtifactUpload.model_version_id == claim.version_id,
                    ArtifactUpload.token == claim.token,
                )
                .values(expires_at=utcnow() + self.lease)
            ).rowcount  # type: ignore[attr-defined]
        if renewed != 1:
            raise LeaseLost("this upload lost its lease to another upload of the same version")

    def _complete(
        self, actor: Principal, claim: UploadClaim, stored: StoredObject
    ) -> AIModelVersion:
        with self.sessions.begin() as s:
            released = s.execute(
                delete(ArtifactUpload).where(
                    ArtifactUpload.model_version_id == claim.version_id,
                    ArtifactUpload.token == claim.token,
                )
            ).rowcount  # type: ignore[attr-defined]
            if released != 1:
                raise LeaseLost("this upload lost its lease to another upload of the same version")
            version = s.get(AIModelVersion, claim.version_id)
            if version is None:
                raise NotFound("the version was deleted during the upload")
            version.source_path = stored.key
            version.sha256 = stored.sha256
            version.size_bytes = stored.size
            version.artifact_uploaded_at = utcnow()
            s.flush()
            queued = queue_validation(s, version, requested_by=actor.user_id)
            audit.record(
                s,
                actor,
                "version_uploaded",
                modelVersionId=version.id,
                sourcePath=stored.key,
                sha256=stored.sha256,
                sizeBytes=stored.size,
                validationRequestId=queued.id,
            )
        return version

    def _release(self, claim: UploadClaim) -> None:
        try:
            with self.sessions.begin() as s:
                s.execute(
                    delete(ArtifactUpload).where(
                        ArtifactUpload.model_version_id == claim.version_id,
                        ArtifactUpload.token == claim.token,
                    )
                )
        except Exception:
            log.warning(
                "could not release the upload lease on version %s; it expires by itself",
                claim.version_id,
                exc_info=True,
            )

    def _discard(self, claim: UploadClaim) -> None:
        """The object was written but the row could not be: remove the object, then the lease."""
        try:
            self.store.delete(claim.key)
        except Exception:
            log.warning(
                "could not remove artifact %s after a failed upload; GC will",
                claim.key,
                exc_info=True,
            )
        self._release(claim)
