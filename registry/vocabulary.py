"""The registry's words, re-exported from the client's ``modelreg_client.vocabulary``.

The wire vocabulary (statuses, formats, roles, environments, strategies, targets) is defined
once, in the light client that generation services install alone
(``api/python-client/modelreg_client/vocabulary.py``); the server, the CLI and the client all
use that one definition. The client imports nothing of the server, so the registry may depend
on it.
"""

from __future__ import annotations

from modelreg_client.vocabulary import (
    RETIRED,
    ROLLING_OUT,
    SETTLED,
    VALIDATION_PENDING,
    ArtifactFormat,
    CheckStatus,
    DeploymentStatus,
    DeploymentTarget,
    Environment,
    RouteRole,
    Strategy,
    TaskType,
    ValidationRequestStatus,
    VersionStatus,
    values,
)

__all__ = [
    "RETIRED",
    "ROLLING_OUT",
    "SETTLED",
    "VALIDATION_PENDING",
    "ArtifactFormat",
    "CheckStatus",
    "DeploymentStatus",
    "DeploymentTarget",
    "Environment",
    "RouteRole",
    "Strategy",
    "TaskType",
    "ValidationRequestStatus",
    "VersionStatus",
    "values",
]
