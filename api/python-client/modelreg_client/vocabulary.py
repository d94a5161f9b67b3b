"""The registry's words: every status, format, role, environment, strategy and target, once.

This module is canonical: ``registry.vocabulary`` re-exports it, so the server, the CLI and
this client share one definition. It imports nothing but the standard library.

Each is a ``StrEnum``, so a member *is* its string: it compares equal to what the database
holds, serialises to JSON as itself, and formats with ``f"{status}"`` as its value. Use the
members in code and the values only at the edges the seed fixes: the migrations, the table
constraints (built here from these enums) and the API's documented schema.

Beware ``repr``: ``f"{status!r}"`` is ``<DeploymentStatus.ACTIVE: 'Active'>``. Messages quote
``f"'{status}'"`` instead.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    """1.20 AIModelDeployment.status: where a deployment is in its life."""

    INITIATED = "Initiated"  # created; the controller has not acted yet
    DEPLOYING = "Deploying"  # a rollout is in flight
    ACTIVE = "Active"  # serves (the environment's stable deployment)
    INACTIVE = "Inactive"  # retired: superseded or undeployed
    FAILED = "Failed"  # the rollout failed or was aborted
    ROLLED_BACK = "RolledBack"  # a rollback moved traffic away from it


#: The statuses of a rollout in flight: the controller's worklist.
ROLLING_OUT: tuple[DeploymentStatus, ...] = (DeploymentStatus.INITIATED, DeploymentStatus.DEPLOYING)
#: The statuses of a deployment that serves nothing any more, and never will again.
RETIRED: tuple[DeploymentStatus, ...] = (
    DeploymentStatus.INACTIVE,
    DeploymentStatus.ROLLED_BACK,
    DeploymentStatus.FAILED,
)
#: The statuses a watcher (``deployments create --wait``) stops on.
SETTLED: tuple[DeploymentStatus, ...] = (DeploymentStatus.ACTIVE, *RETIRED)


class VersionStatus(StrEnum):
    """1.19 AIModelVersion.status: a version's lifecycle stage."""

    STAGED = "Staged"
    PRODUCTION = "Production"
    DEPRECATED = "Deprecated"
    ARCHIVED = "Archived"
    FAILED = "Failed"


class CheckStatus(StrEnum):
    """1.19 securityScanStatus / functionalStatus: one validation check's result."""

    PASSED = "Passed"
    FAILED = "Failed"
    PENDING = "Pending"
    SKIPPED = "Skipped"


class ValidationRequestStatus(StrEnum):
    """A queued validation's place in the worker's queue."""

    QUEUED = "Queued"
    RUNNING = "Running"
    DONE = "Done"


#: A validation not yet finished.
VALIDATION_PENDING: tuple[ValidationRequestStatus, ...] = (
    ValidationRequestStatus.QUEUED,
    ValidationRequestStatus.RUNNING,
)


class ArtifactFormat(StrEnum):
    """1.19 AIModelVersion.format: what the artifact is. ``API`` has no artifact: its
    ``parameters.endpoint`` serves it."""

    ONNX = "ONNX"
    PYTORCH = "PyTorch"
    PICKLE = "Pickle"
    JOBLIB = "Joblib"
    SAFETENSORS = "SafeTensors"
    TF_SAVEDMODEL = "TensorFlow SavedModel"
    API = "API"


class Environment(StrEnum):
    """1.20 AIModelDeployment.environment."""

    STAGING = "staging"
    PRODUCTION = "production"
    TESTING = "testing"


class DeploymentTarget(StrEnum):
    """Where a deployment's servers run."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"


class Strategy(StrEnum):
    """1.20 AIModelDeployment.deploymentStrategy: how a rollout moves traffic."""

    CANARY = "canary"
    BLUE_GREEN = "blue_green"
    ROLLING_UPDATE = "rolling_update"


class RouteRole(StrEnum):
    """A route's part in what an environment serves (DeploymentRoute.role)."""

    STABLE = "stable"  # the Active deployment
    CANARY = "canary"  # a candidate taking a share of traffic
    ACTIVE = "active"  # reserved by the seed's schema; no strategy produces it
    PREVIEW = "preview"  # a blue-green candidate: reachable, but no traffic


class TaskType(StrEnum):
    """1.18 AIModel.taskType."""

    IMAGE_GENERATION = "ImageGeneration"
    TEXT_GENERATION = "TextGeneration"
    IMAGE_TRANSFORMATION = "ImageTransformation"
    STYLE_TRANSFER = "StyleTransfer"
    CONTENT_SAFETY = "ContentSafety"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The plain string values of ``enum``, in order: for table constraints and schemas."""
    return tuple(member.value for member in enum)
