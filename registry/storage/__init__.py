"""Artifact storage: one interface, a local-directory store and an S3 store."""

from __future__ import annotations

from registry.settings import Settings
from registry.storage.base import (
    ArtifactStore,
    DigestMismatch,
    HashingReader,
    ObjectInfo,
    PartialUpload,
    StoredObject,
    StoreUnavailable,
    UploadAborted,
    artifact_key,
)

__all__ = [
    "ArtifactStore",
    "DigestMismatch",
    "HashingReader",
    "ObjectInfo",
    "PartialUpload",
    "StoreUnavailable",
    "StoredObject",
    "UploadAborted",
    "artifact_key",
    "create_store",
]


def create_store(settings: Settings) -> ArtifactStore:
    if settings.storage == "s3":
        from registry.storage.s3 import S3Store

        return S3Store(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            part_size=settings.s3_part_size,
            create_bucket=settings.s3_create_bucket,
        )
    from registry.storage.local import LocalStore

    return LocalStore(settings.artifact_root)
