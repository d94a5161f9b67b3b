"""Artifact garbage collection: remove the objects that nothing in the database references.

Orphans come from crashes: an upload whose object was written but whose version row was not,
or whose removal after a failure did not happen. An object is kept when any of these holds:

- a version names it (``AIModelVersion.source_path``), and with it every deployment and every
  validation result of that version;
- an upload whose lease has not expired names it (``ArtifactUpload.object_key``);
- it was modified less than ``older_than`` ago, so an upload in flight is never touched.

Unfinished uploads (a local ``.tmp`` file, an S3 multipart upload) whose writer died are
removed by the same rules: older than ``older_than``, and not meant for a key that a live
upload lease or a version names.

The references are read *after* the listing, so a version completed while the listing ran is
seen and its object kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import NotFound
from registry.models import (
    AIModelDeployment,
    AIModelValidationResult,
    AIModelVersion,
    ArtifactUpload,
)
from registry.storage import ArtifactStore, ObjectInfo, PartialUpload
from registry.types import utcnow

log = logging.getLogger(__name__)

ARTIFACT_PREFIX = "models/"
SAMPLE_KEYS = 50


@dataclass
class GcReport:
    """What a pass found and did. ``keys`` lists the first ``SAMPLE_KEYS`` removed (or, on a
    dry run, removable) objects."""

    dry_run: bool
    older_than_seconds: float
    scanned: int = 0
    referenced: int = 0
    too_young: int = 0
    removed: int = 0
    removed_bytes: int = 0
    failed: int = 0
    partial_removed: int = 0
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "dryRun": self.dry_run,
            "olderThanSeconds": self.older_than_seconds,
            "scanned": self.scanned,
            "referenced": self.referenced,
            "tooYoung": self.too_young,
            "removed": self.removed,
            "removedBytes": self.removed_bytes,
            "failed": self.failed,
            "partialRemoved": self.partial_removed,
            "keys": list(self.keys),
        }


def referenced_keys(s: Session, *, now: datetime) -> set[str]:
    """Every object key the database still needs."""
    keys: set[str] = set()
    keys.update(
        path
        for path in s.scalars(
            select(AIModelVersion.source_path).where(AIModelVersion.source_path.is_not(None))
        )
        if path
    )
    # A deployment or a validation result always points at a version, whose key is above
    # already; read them again anyway, so that no future change to the version query can
    # orphan what a deployment or a validation result depends on.
    for owner in (AIModelDeployment.model_version_id, AIModelValidationResult.model_version_id):
        keys.update(
            path
            for path in s.scalars(
                select(AIModelVersion.source_path)
                .join_from(owner.class_, AIModelVersion, owner == AIModelVersion.id)
                .where(AIModelVersion.source_path.is_not(None))
            )
            if path
        )
    keys.update(s.scalars(select(ArtifactUpload.object_key).where(ArtifactUpload.expires_at > now)))
    return keys


def collect_garbage(
    store: ArtifactStore,
    sessions: sessionmaker[Session],
    *,
    older_than: timedelta,
    dry_run: bool,
    now: datetime | None = None,
    prefix: str = ARTIFACT_PREFIX,
) -> GcReport:
    """Remove (or, with ``dry_run``, only count) the unreferenced objects older than
    ``older_than`` under ``prefix``."""
    now = now or utcnow()
    report = GcReport(dry_run=dry_run, older_than_seconds=older_than.total_seconds())
    objects: list[ObjectInfo] = list(store.list_objects(prefix))
    partials: list[PartialUpload] = list(store.list_partial(prefix))
    with sessions() as s:
        keep = referenced_keys(s, now=now)
    cutoff = now - older_than
    for obj in objects:
        report.scanned += 1
        if obj.key in keep:
            report.referenced += 1
            continue
        if obj.last_modified > cutoff:
            report.too_young += 1
            continue
        if not dry_run:
            try:
                store.delete(obj.key)
            except NotFound:
                continue
            except Exception:
                report.failed += 1
                log.warning("gc: could not remove %s", obj.key, exc_info=True)
                continue
        report.removed += 1
        report.removed_bytes += obj.size
        if len(report.keys) < SAMPLE_KEYS:
            report.keys.append(obj.key)
    for partial in partials:
        if partial.key in keep or partial.last_modified > cutoff:
            continue
        if not dry_run:
            try:
                store.discard_partial(partial)
            except Exception:
                report.failed += 1
                log.warning(
                    "gc: could not remove unfinished upload %s", partial.handle, exc_info=True
                )
                continue
        report.partial_removed += 1
    log.info(
        "gc%s: scanned %d objects in %s, %s %d orphans (%d bytes) and %d unfinished uploads, "
        "kept %d referenced and %d younger than %s, %d failed",
        " (dry run)" if dry_run else "",
        report.scanned,
        store.describe(),
        "would remove" if dry_run else "removed",
        report.removed,
        report.removed_bytes,
        report.partial_removed,
        report.referenced,
        report.too_young,
        older_than,
        report.failed,
    )
    return report


class GcService:
    """``collect_garbage`` bound to the registry's store and database."""

    def __init__(self, sessions: sessionmaker[Session], *, store: ArtifactStore) -> None:
        self.sessions = sessions
        self.store = store

    def collect(
        self, *, older_than: timedelta, dry_run: bool, now: datetime | None = None
    ) -> GcReport:
        return collect_garbage(
            self.store, self.sessions, older_than=older_than, dry_run=dry_run, now=now
        )
