"""Artifact upload: a version's one artifact, streamed into the store, all or nothing.

An upload holds the version's lease (an ``artifact_upload`` row) while it streams, renews it
while the body comes in, and fills the version's row and queues its validation in the
transaction that releases it. A key may hold ``per_key`` leases at once.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import Principal
from registry.db import DB_UNAVAILABLE_ERRORS
from registry.errors import BadRequest, Conflict, Invalid, NotFound, TooManyRequests
from registry.formats import HEAD_BYTES, contradiction
from registry.metrics import UPLOAD_BYTES, UPLOADS
from registry.models import AIModelVersion, ArtifactUpload
from registry.services import audit
from registry.services.models import VersionView, get_model, get_version
from registry.services.validations import lock_budget, queue_validation
from registry.storage import ArtifactStore, HashingReader, StoredObject, artifact_key
from registry.types import utcnow
from registry.vocabulary import ArtifactFormat, VersionStatus

log = logging.getLogger(__name__)

DEFAULT_FILENAMES: dict[str, str] = {
    ArtifactFormat.ONNX: "model.onnx",
    ArtifactFormat.PYTORCH: "model.pt",
    ArtifactFormat.PICKLE: "model.pkl",
    ArtifactFormat.JOBLIB: "model.joblib",
    ArtifactFormat.SAFETENSORS: "model.safetensors",
    ArtifactFormat.TF_SAVEDMODEL: "model.tar.gz",
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
#: What a key at its limit of concurrent uploads is told to wait, in seconds.
UPLOADS_FULL_RETRY_SECONDS = 10


class LeaseLost(Conflict):
    """Another upload took over this version: its object must not be touched."""


@dataclass(frozen=True)
class UploadClaim:
    version_id: uuid.UUID
    token: uuid.UUID
    key: str
    declared_format: str | None


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


#: Lifecycle stages that take no artifact: the version is out of use.
NO_ARTIFACTS = (VersionStatus.ARCHIVED, VersionStatus.FAILED)


def _keeping_head(chunks: Iterable[bytes], head: bytearray) -> Iterator[bytes]:
    """Pass chunks through, keeping their first ``HEAD_BYTES`` in ``head`` for the sniffers."""
    for chunk in chunks:
        if len(head) < HEAD_BYTES:
            head += chunk[: HEAD_BYTES - len(head)]
        yield chunk


def _check_takes_artifacts(version: AIModelVersion) -> None:
    if version.status in NO_ARTIFACTS:
        raise Conflict(
            f"version {version.version_number!r} is {version.status}: it takes no artifact; "
            "create a new version",
            currentStatus=version.status,
        )


def _immutable(version: AIModelVersion) -> Conflict:
    return Conflict(
        f"version {version.version_number!r} already has an artifact (sha256 {version.sha256}); "
        "versions are immutable, create a new one"
    )


class ArtifactUploads:
    """Uploads of versions' artifacts (``VersionService.upload`` is this one's ``upload``)."""

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
    ) -> VersionView:
        if expected_sha256 is not None and not _SHA256_RE.match(expected_sha256):
            raise BadRequest("X-Checksum-Sha256 must be 64 hexadecimal characters")
        claim = self._claim(actor, model_name, version_number, filename=filename)
        head = bytearray()
        reader = HashingReader(
            _keeping_head(self._heartbeat(claim, chunks), head),
            max_bytes=self.max_artifact_bytes,
            expected_sha256=expected_sha256,
        )
        try:
            stored = self.store.put(claim.key, reader)
        except BaseException:
            reader.close()  # stops its hashing thread
            self._release(claim)
            raise
        if stored.size == 0:
            self._discard(claim)
            raise Invalid("the artifact is empty (0 bytes): upload the model file itself")
        if claim.declared_format is not None:
            problem = contradiction(claim.declared_format, bytes(head), size=stored.size)
            if problem is not None:
                self._discard(claim)
                raise Invalid(
                    f"{problem}: upload it to a version of its own format, or declare the "
                    "format the file really has",
                    declaredFormat=claim.declared_format,
                )
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
                if version.format == ArtifactFormat.API:
                    raise Conflict(
                        "a version of format API has no artifact; its endpoint is in parameters"
                    )
                if version.source_path is not None:
                    raise _immutable(version)
                _check_takes_artifacts(version)
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
                    version.id,
                    uuid.uuid4(),
                    artifact_key(model.id, version.id, name),
                    version.format,
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
                _check_takes_artifacts(version)
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

    def _complete(self, actor: Principal, claim: UploadClaim, stored: StoredObject) -> VersionView:
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
            return VersionView.of(version)

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
