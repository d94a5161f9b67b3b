"""The settings the Kubernetes deployer runs with in the tests: S3 artifacts, one namespace and
the artifact Secret's name."""

from __future__ import annotations

from typing import Any

from registry.settings import Settings


def make_settings(**overrides: Any) -> Settings:
    return Settings(
        storage="s3",
        s3_endpoint="minio.storage:9000",
        s3_secure=False,
        kube_namespace="models",
        kube_artifact_secret="modelreg-s3",
        **overrides,
    )
