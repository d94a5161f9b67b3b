"""Validation runs: the durable queue, the leases workers hold, and the stored results.

The queue is the ``validation_request`` table. On PostgreSQL a worker claims a row with
``SELECT … FOR UPDATE SKIP LOCKED``, so several workers never take the same run; on SQLite,
where writers are serialised anyway, the claim is a compare-and-set UPDATE. A worker renews its
lease while it works; a run whose lease expired is claimed again, up to ``max_attempts`` (then
it is recorded as Failed and the claim goes on to the next run). A worker that stops puts the
runs it holds back in the queue (:meth:`ValidationService.release`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from registry.auth import Principal
from registry.db import lock_row
from registry.errors import Conflict, NotFound, TooManyRequests
from registry.ids import resolve_uuid
from registry.io_signature import normalize_signature
from registry.metrics import VALIDATION_DURATION, VALIDATIONS
from registry.models import (
    AIModel,
    AIModelValidationResult,
    AIModelVersion,
    User,
    ValidationRequest,
)
from registry.services import audit
from registry.services.models import get_model, get_version
from registry.types import utcnow
from registry.validation_outcome import ValidationOutcome
from registry.vocabulary import (
    VALIDATION_PENDING,
    ArtifactFormat,
    CheckStatus,
    ValidationRequestStatus,
    VersionStatus,
)

log = logging.getLogger(__name__)

#: The phase a claimed run starts in: the worker copies the artifact out of the store. The
#: child then reports scan, load, run and benchmark (``validators.run``).
PHASE_FETCH = "fetch"

#: What a key over its budget of pending runs is told to wait, in seconds: about as long as a
#: worker takes to finish a small model's run.
QUEUE_FULL_RETRY_SECONDS = 30


@dataclass(frozen=True)
class ValidationJob:
    """What a worker needs to validate one run, read when it claimed the run."""

    request_id: uuid.UUID
    model_version_id: uuid.UUID
    model_name: str
    version_number: str
    format: str | None
    parameters: dict[str, Any] | None
    sha256: str
    source_path: str
    attempts: int
    baseline_p95_ms: float | None
    baseline_noisy: bool = False
    """The Production version's benchmark was noisy: a ratio against it says so."""


@dataclass(frozen=True)
class ValidationRequestView:
    """A run's place in the queue (a ``validation_request`` row)."""

    id: uuid.UUID
    model_version_id: uuid.UUID
    sha256: str
    status: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    phase: str | None = None
    """What a Running run is doing now: fetch, scan, load, run or benchmark."""

    @classmethod
    def of(cls, req: ValidationRequest) -> ValidationRequestView:
        return cls(
            id=req.id,
            model_version_id=req.model_version_id,
            sha256=req.sha256,
            status=req.status,
            requested_at=req.requested_at,
            started_at=req.started_at,
            finished_at=req.finished_at,
            attempts=req.attempts,
            phase=req.phase if req.status == ValidationRequestStatus.RUNNING else None,
        )


@dataclass(frozen=True)
class ValidationResultView:
    """A stored result (an AIModelValidationResult)."""

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

    @classmethod
    def of(cls, result: AIModelValidationResult) -> ValidationResultView:
        return cls(
            id=result.id,
            model_version_id=result.model_version_id,
            validation_timestamp=result.validation_timestamp,
            security_scan_status=result.security_scan_status,
            functional_status=result.functional_status,
            performance_benchmark=result.performance_benchmark,
            results=result.results,
            validated_by_user_id=result.validated_by_user_id,
            artifact_sha256=result.artifact_sha256,
            created_at=result.created_at,
        )


@dataclass(frozen=True)
class ValidationRun:
    """A run as the API shows it: the request and, once done, its result."""

    request: ValidationRequestView
    result: ValidationResultView | None
    created: bool = True
    """False when a request found this run already pending and returned it."""

    @classmethod
    def of(
        cls,
        req: ValidationRequest,
        result: AIModelValidationResult | None = None,
        *,
        created: bool = True,
    ) -> ValidationRun:
        return cls(
            ValidationRequestView.of(req),
            None if result is None else ValidationResultView.of(result),
            created=created,
        )


def lock_budget(s: Session, user_id: uuid.UUID) -> None:
    """Serialise, until the transaction ends, the decisions that count a user's rows (pending
    validation runs, concurrent uploads): lock the user's row.

    On PostgreSQL the lock is ``FOR NO KEY UPDATE``, not :func:`registry.db.lock_row`'s
    ``FOR UPDATE``: every insert that references the user (an audit row, a feedback item, a
    validation run) takes ``FOR KEY SHARE`` on it, which ``FOR UPDATE`` would block, and a
    worker storing a result while holding a version's lock would then deadlock with a request
    holding the user's. SQLite takes its one write lock, as ``lock_row`` does.
    """
    if s.get_bind().dialect.name == "sqlite":
        lock_row(s, User, user_id)
        return
    s.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


def queue_validation(
    s: Session, version: AIModelVersion, *, requested_by: uuid.UUID | None
) -> ValidationRequest:
    """Queue a run for the version's current artifact, inside the caller's transaction."""
    assert version.sha256 is not None
    request = ValidationRequest(
        model_version_id=version.id,
        sha256=version.sha256,
        status=ValidationRequestStatus.QUEUED,
        requested_by_user_id=requested_by,
        requested_at=utcnow(),
    )
    s.add(request)
    s.flush()
    return request


def latest_result_for_digest(s: Session, version: AIModelVersion) -> AIModelValidationResult | None:
    """The newest validation result bound to the version's *current* artifact digest."""
    if version.sha256 is None:
        return None
    return s.scalar(
        select(AIModelValidationResult)
        .where(
            AIModelValidationResult.model_version_id == version.id,
            AIModelValidationResult.artifact_sha256 == version.sha256,
        )
        .order_by(
            AIModelValidationResult.validation_timestamp.desc(),
            AIModelValidationResult.created_at.desc(),
        )
        .limit(1)
    )


def validation_gate(s: Session, version: AIModelVersion) -> list[str]:
    """Why validation does not allow ``version`` into production; empty when it does."""
    if version.format == ArtifactFormat.API or version.sha256 is None:
        return []
    result = latest_result_for_digest(s, version)
    if result is None:
        return [
            f"validation: no validation of the current artifact (sha256 {version.sha256}) "
            "has finished yet"
        ]
    reasons = []
    if result.security_scan_status != CheckStatus.PASSED:
        reasons.append(
            f"securityScanStatus: {result.security_scan_status} (validation {result.id})"
        )
    if result.functional_status != CheckStatus.PASSED:
        reasons.append(f"functionalStatus: {result.functional_status} (validation {result.id})")
    return reasons


class ValidationService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        lease_seconds: int = 60,
        max_attempts: int = 3,
        per_key: int = 20,
    ) -> None:
        self.sessions = sessions
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.per_key = per_key

    # -- requests from users ---------------------------------------------------------------

    def request(self, actor: Principal, model_name: str, version_number: str) -> ValidationRun:
        """Queue a run of the version's current artifact, or return the one already pending.

        There is at most one pending run per version and digest: a repeated request (a retry,
        an impatient user, a script in a loop) gets that run back, with ``created`` False. The
        database settles concurrent requests: the version's row is locked before the pending
        runs are read. A key's user may have at most ``per_key`` pending runs (uploads'
        included); beyond that :class:`TooManyRequests`. The user's budget is locked first
        (:func:`lock_budget`), so that concurrent requests for different versions cannot both
        take the last place.
        """
        with self.sessions.begin() as s:
            found = get_version(s, get_model(s, model_name), version_number)
            lock_budget(s, actor.user_id)
            version = lock_row(s, AIModelVersion, found.id)
            if version is None:
                raise NotFound(f"model {model_name!r} has no version {version_number!r}")
            if version.sha256 is None:
                raise Conflict(
                    f"version {version_number!r} has no artifact to validate"
                    + (" (format API)" if version.format == ArtifactFormat.API else "")
                )
            pending = s.scalar(
                select(ValidationRequest)
                .where(
                    ValidationRequest.model_version_id == version.id,
                    ValidationRequest.sha256 == version.sha256,
                    ValidationRequest.status.in_(VALIDATION_PENDING),
                )
                .order_by(ValidationRequest.requested_at)
                .limit(1)
            )
            if pending is not None:
                return ValidationRun.of(pending, created=False)
            held = s.scalar(
                select(func.count())
                .select_from(ValidationRequest)
                .where(
                    ValidationRequest.requested_by_user_id == actor.user_id,
                    ValidationRequest.status.in_(VALIDATION_PENDING),
                )
            )
            if (held or 0) >= self.per_key:
                raise TooManyRequests(
                    f"this key already has {held} validation runs waiting or running, the "
                    f"most it may have (MODELREG_VALIDATIONS_PER_KEY={self.per_key}); retry "
                    "when some have finished",
                    retry_after=QUEUE_FULL_RETRY_SECONDS,
                    pendingRuns=held,
                    limit=self.per_key,
                )
            req = queue_validation(s, version, requested_by=actor.user_id)
            audit.record(
                s,
                actor,
                "validation_requested",
                modelVersionId=version.id,
                validationRequestId=req.id,
                sha256=version.sha256,
            )
            return ValidationRun.of(req)

    def list_runs(self, model_name: str, version_number: str) -> list[ValidationRun]:
        """Every run of the version, newest first (results of runs deleted by hand included)."""
        with self.sessions() as s:
            version = get_version(s, get_model(s, model_name), version_number)
            rows = s.execute(
                select(ValidationRequest, AIModelValidationResult)
                .outerjoin(
                    AIModelValidationResult,
                    AIModelValidationResult.id == ValidationRequest.result_id,
                )
                .where(ValidationRequest.model_version_id == version.id)
                .order_by(ValidationRequest.requested_at.desc())
            ).all()
            return [ValidationRun.of(req, res) for req, res in rows]

    def get_run(self, run_id: uuid.UUID | str) -> ValidationRun:
        """A run by its id, or a unique prefix of it (registry/ids.py). A result stored since
        results took their run's id has that id; an older one had its own, which is still
        accepted here."""
        with self.sessions() as s:
            try:
                run_id = resolve_uuid(s, ValidationRequest.id, run_id, what="validation")
            except NotFound:
                run_id = resolve_uuid(s, ValidationRequest.result_id, run_id, what="validation")
            row = s.execute(
                select(ValidationRequest, AIModelValidationResult)
                .outerjoin(
                    AIModelValidationResult,
                    AIModelValidationResult.id == ValidationRequest.result_id,
                )
                .where(or_(ValidationRequest.id == run_id, ValidationRequest.result_id == run_id))
            ).first()
            if row is None:
                raise NotFound(f"no validation {run_id}")
            req, res = row
            return ValidationRun.of(req, res)

    def queue_depth(self) -> int:
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ValidationRequest)
                    .where(ValidationRequest.status != ValidationRequestStatus.DONE)
                )
                or 0
            )

    # -- the worker's side ---------------------------------------------------------------

    def claim(self, worker_id: str, *, now: datetime | None = None) -> ValidationJob | None:
        """Take the oldest runnable request, or None. Safe with many workers."""
        now = now or utcnow()
        with self.sessions.begin() as s:
            runnable = or_(
                ValidationRequest.status == ValidationRequestStatus.QUEUED,
                (ValidationRequest.status == ValidationRequestStatus.RUNNING)
                & (ValidationRequest.lease_expires_at < now),
            )
            stmt = (
                select(ValidationRequest)
                .where(runnable)
                .order_by(ValidationRequest.requested_at)
                .limit(1)
            )
            if s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            while (req := s.scalar(stmt)) is not None and req.attempts >= self.max_attempts:
                self._give_up(s, req, now=now)  # Done now: the next select skips it
            if req is None:
                return None
            claimed = s.execute(
                update(ValidationRequest)
                .where(
                    ValidationRequest.id == req.id,
                    ValidationRequest.status == req.status,
                    ValidationRequest.attempts == req.attempts,
                )
                .values(
                    status=ValidationRequestStatus.RUNNING,
                    lease_owner=worker_id,
                    lease_expires_at=now + self.lease,
                    attempts=req.attempts + 1,
                    started_at=now,
                    phase=PHASE_FETCH,
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            if claimed != 1:
                return None  # another worker got there first (SQLite compare-and-set)
            version = s.get_one(AIModelVersion, req.model_version_id)
            model = s.get_one(AIModel, version.model_id)
            baseline = self._production_benchmark(s, model, exclude=version.id)
            return ValidationJob(
                request_id=req.id,
                model_version_id=version.id,
                model_name=model.name,
                version_number=version.version_number,
                format=version.format,
                parameters=version.parameters,
                sha256=req.sha256,
                source_path=version.source_path or "",
                attempts=req.attempts + 1,
                baseline_p95_ms=baseline[0],
                baseline_noisy=baseline[1],
            )

    def _give_up(self, s: Session, req: ValidationRequest, *, now: datetime) -> None:
        """A run that killed its worker ``max_attempts`` times: record a Failed result."""
        log.error("validation %s failed %d attempts; recording it as Failed", req.id, req.attempts)
        reason = (
            f"the validation did not finish in {req.attempts} attempts "
            "(the worker died or timed out each time)"
        )
        self._store(s, req, ValidationOutcome.failed(reason, sha256=req.sha256), now=now)
        VALIDATIONS.labels(result="failed").inc()

    @staticmethod
    def _production_benchmark(
        s: Session, model: AIModel, *, exclude: uuid.UUID
    ) -> tuple[float | None, bool]:
        """p95 latency of the model's current Production version, for regression checks, and
        whether its benchmark was noisy (``validators.benchmark``)."""
        row = s.execute(
            select(AIModelValidationResult.performance_benchmark)
            .join(AIModelVersion, AIModelVersion.validation_result_id == AIModelValidationResult.id)
            .where(
                AIModelVersion.model_id == model.id,
                AIModelVersion.status == VersionStatus.PRODUCTION,
                AIModelVersion.id != exclude,
            )
            .order_by(AIModelVersion.updated_at.desc())
            .limit(1)
        ).first()
        if row is None or not isinstance(row[0], dict):
            return None, False
        p95 = (row[0].get("latencyMs") or {}).get("p95")
        noisy = bool(row[0].get("noisy"))
        return (float(p95) if isinstance(p95, (int, float)) else None), noisy

    def release(self, job: ValidationJob, worker_id: str) -> bool:
        """Put a run this worker holds back in the queue, as if it had never been claimed
        (the attempt is not counted): the worker is stopping and its child was stopped.
        False if this worker no longer held it."""
        with self.sessions.begin() as s:
            updated = s.execute(
                update(ValidationRequest)
                .where(
                    ValidationRequest.id == job.request_id,
                    ValidationRequest.lease_owner == worker_id,
                    ValidationRequest.status == ValidationRequestStatus.RUNNING,
                    ValidationRequest.attempts == job.attempts,
                )
                .values(
                    status=ValidationRequestStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    started_at=None,
                    phase=None,
                    attempts=job.attempts - 1,
                )
            ).rowcount  # type: ignore[attr-defined]
        return bool(updated == 1)

    def renew(self, job: ValidationJob, worker_id: str) -> bool:
        """Extend the lease; False if this worker no longer holds it."""
        return self._update_held(job, worker_id, lease_expires_at=utcnow() + self.lease)

    def set_phase(self, job: ValidationJob, worker_id: str, phase: str) -> bool:
        """Record what the run is doing now (one UPDATE per phase change); False if this
        worker no longer holds the run."""
        return self._update_held(job, worker_id, phase=phase)

    def _update_held(self, job: ValidationJob, worker_id: str, **values: Any) -> bool:
        """Set ``values`` on the run while this worker holds it; False once it does not."""
        with self.sessions.begin() as s:
            updated = s.execute(
                update(ValidationRequest)
                .where(
                    ValidationRequest.id == job.request_id,
                    ValidationRequest.lease_owner == worker_id,
                    ValidationRequest.status == ValidationRequestStatus.RUNNING,
                )
                .values(**values)
            ).rowcount  # type: ignore[attr-defined]
        return bool(updated == 1)

    def complete(
        self, job: ValidationJob, worker_id: str, outcome: ValidationOutcome
    ) -> ValidationResultView | None:
        """Store the result. None if this worker lost the run to another (its result is
        dropped: exactly one result per run)."""
        with self.sessions.begin() as s:
            req = s.get(ValidationRequest, job.request_id, with_for_update=True)
            if (
                req is None
                or req.status != ValidationRequestStatus.RUNNING
                or req.lease_owner != worker_id
            ):
                log.warning(
                    "validation %s: lease lost; dropping this worker's result", job.request_id
                )
                return None
            now = utcnow()
            started_at = req.started_at
            result = ValidationResultView.of(self._store(s, req, outcome, now=now))
        # Counted once the result is committed: one sample per stored run.
        VALIDATIONS.labels(result="passed" if outcome.passed else "failed").inc()
        if started_at is not None:
            VALIDATION_DURATION.observe(max(0.0, (now - started_at).total_seconds()))
        return result

    def _store(
        self,
        s: Session,
        req: ValidationRequest,
        outcome: ValidationOutcome,
        *,
        now: datetime,
    ) -> AIModelValidationResult:
        result = AIModelValidationResult(
            # The run's id: what a user is shown, asks for and is told by the gate is one id.
            id=req.id,
            model_version_id=req.model_version_id,
            validation_timestamp=now,
            security_scan_status=outcome.security,
            functional_status=outcome.functional,
            performance_benchmark=outcome.benchmark,
            results=outcome.results_json(),
            validated_by_user_id=req.requested_by_user_id,
            artifact_sha256=req.sha256,
            created_at=now,
        )
        s.add(result)
        s.flush()
        req.status = ValidationRequestStatus.DONE
        req.finished_at = now
        req.result_id = result.id
        req.phase = None
        req.lease_owner = None
        req.lease_expires_at = None
        version = s.get(AIModelVersion, req.model_version_id, with_for_update=True)
        if version is not None and version.sha256 == req.sha256:
            version.validation_result_id = result.id
            signature = normalize_signature(outcome.signature)
            if outcome.functional == CheckStatus.PASSED and signature is not None:
                # What the version's artifact takes and gives: rollouts compare it with the
                # stable version's (registry/io_signature.py).
                version.signature = signature
        if req.requested_by_user_id is not None:
            actor = Principal(
                user_id=req.requested_by_user_id, api_client_id=None, scopes=frozenset()
            )
            audit.record(
                s,
                actor,
                "version_validated",
                modelVersionId=req.model_version_id,
                validationResultId=result.id,
                sha256=req.sha256,
                securityScanStatus=outcome.security,
                functionalStatus=outcome.functional,
            )
        s.flush()
        return result
