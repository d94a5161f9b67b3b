"""The deployer interface: ``observe(target)`` and ``apply(target, workloads)``.

A *target* is one model in one environment on one kind of infrastructure. Each deployment row
owns one *workload*: the model-server replicas of its version. An action handed to ``apply`` is
an end state ("deployment D runs version V with 2 replicas"; 0 replicas means stopped and
gone), never a delta, so applying the same list twice is harmless. ``apply`` touches only the
workloads it is given; ``observe`` reports every workload of the target that it finds.

``owned()`` lists every workload the deployer runs, on every target, and ``remove(workload)``
stops one and forgets it: the controller's sweep uses them to stop what no deployment row owns
(the row is gone, or it is retired and finished).

Traffic weights are not the deployer's business: the controller records them in the routing
table that the endpoint-resolution API serves.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from registry.serving import unservable_reason
from registry.vocabulary import ArtifactFormat, RouteRole

__all__ = [
    "ClusterRouter",
    "Deployer",
    "DeployerError",
    "Instance",
    "OwnedWorkload",
    "PermanentError",
    "Target",
    "TemporaryError",
    "VersionRef",
    "Workload",
    "WorkloadStatus",
    "check_workload",
]


@dataclass(frozen=True)
class VersionRef:
    """What a deployer needs to know about the version it runs."""

    id: uuid.UUID
    number: str
    format: str
    sha256: str | None = None
    artifact_key: str | None = None
    endpoint: str | None = None
    """For format ``API``: the URL that serves it. No process runs for such a version."""
    model_file: str | None = None
    """``parameters.modelFile``: which model of a bundle to serve (``serve-model --model-file``),
    as the functional check chose it."""


@dataclass(frozen=True)
class Target:
    kind: str
    """``local`` or ``kubernetes``."""
    model: str
    model_id: uuid.UUID
    environment: str


@dataclass(frozen=True)
class Workload:
    """An end state: deployment ``deployment_id`` runs ``version`` with ``replicas`` replicas."""

    deployment_id: uuid.UUID
    version: VersionRef
    replicas: int
    role: str = RouteRole.STABLE
    """A :class:`~registry.vocabulary.RouteRole` (``stable``, ``canary``, ``active`` or
    ``preview``): for names and labels only."""
    resources: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Instance:
    """One running replica."""

    url: str
    ready: bool
    pid: int | None = None
    port: int | None = None
    started_at: datetime | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ready": self.ready,
            "pid": self.pid,
            "port": self.port,
            "startedAt": self.started_at.isoformat() if self.started_at else None,
            "name": self.name,
        }

    def same_as(self, recorded: Any) -> bool:
        """Whether ``to_dict()`` equals ``recorded``, without building it."""
        started = self.started_at.isoformat() if self.started_at else None
        return (
            isinstance(recorded, dict)
            and len(recorded) == 6
            and recorded.get("url") == self.url
            and recorded.get("ready") == self.ready
            and recorded.get("pid", ...) == self.pid
            and recorded.get("port", ...) == self.port
            and recorded.get("startedAt", ...) == started
            and recorded.get("name", ...) == self.name
        )


@dataclass(frozen=True)
class WorkloadStatus:
    """What ``observe`` saw of one deployment's workload."""

    deployment_id: uuid.UUID
    version_id: uuid.UUID
    replicas: int
    """Replicas asked for by the last ``apply``."""
    ready_replicas: int
    url: str | None
    """Where traffic for this workload goes (a Service URL, or the first ready replica)."""
    instances: tuple[Instance, ...] = ()
    failure: str | None = None
    """Set when the workload cannot become ready without a change (a crash loop, a digest
    mismatch, a progress deadline): the reason, for a failed verdict."""
    restarts: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)
    """Deployer-specific facts worth recording (Kubernetes: namespace, resource names and pod
    counts, which the controller stores in ``kubernetesDetails``)."""

    @property
    def ready(self) -> bool:
        return self.failure is None and self.replicas > 0 and self.ready_replicas >= self.replicas

    def to_dict(self) -> dict[str, Any]:
        return {
            "deploymentId": str(self.deployment_id),
            "modelVersionId": str(self.version_id),
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "url": self.url,
            "failure": self.failure,
            "restarts": self.restarts,
            "instances": [i.to_dict() for i in self.instances],
            **({"details": dict(self.details)} if self.details else {}),
        }

    def same_as(self, recorded: Any) -> bool:
        """Whether ``to_dict()`` equals ``recorded``, without building it: a steady pass asks
        this of every deployment, and most of what it costs is building the dicts."""
        if not isinstance(recorded, dict) or len(recorded) != (9 if self.details else 8):
            return False
        instances = recorded.get("instances")
        return (
            recorded.get("replicas") == self.replicas
            and recorded.get("readyReplicas") == self.ready_replicas
            and recorded.get("url", ...) == self.url
            and recorded.get("failure", ...) == self.failure
            and recorded.get("restarts") == self.restarts
            and recorded.get("deploymentId") == str(self.deployment_id)
            and recorded.get("modelVersionId") == str(self.version_id)
            and isinstance(instances, list)
            and len(instances) == len(self.instances)
            and all(i.same_as(r) for i, r in zip(self.instances, instances, strict=True))
            and (not self.details or recorded.get("details") == dict(self.details))
        )


Observed = Mapping[uuid.UUID, WorkloadStatus]


@dataclass(frozen=True)
class OwnedWorkload:
    """A workload the deployer runs, as ``owned()`` found it: whose it says it is, and what it
    is made of (for the log line of the sweep that stops it)."""

    deployment_id: uuid.UUID
    target: Target
    version_number: str | None
    parts: str
    """What runs: ``2 model-server processes (pids 41, 42)``, ``Deployment and Service m-x``."""

    def describe(self) -> str:
        version = f" {self.version_number}" if self.version_number else ""
        return (
            f"{self.target.model}{version} in {self.target.environment} "
            f"(deployment {self.deployment_id}): {self.parts}"
        )


class DeployerError(Exception):
    """Base class of what a deployer raises."""


class TemporaryError(DeployerError):
    """Worth retrying with backoff (a conflict, throttling, a 5xx, a refused connection)."""


class PermanentError(DeployerError):
    """Retrying will not help (a bad request, forbidden, invalid): the rollout fails."""


def check_workload(workload: Workload) -> None:
    """Refuse, before anything changes, a workload no deployer could run: negative replicas,
    a format no target serves (the table in registry/serving.py, which the API also reads),
    an API version without its endpoint, or a version without a stored artifact."""
    version = workload.version
    unservable = unservable_reason(version.format, artifact_key=None, target=None)
    if unservable is not None and workload.replicas > 0:
        raise PermanentError(f"version {version.number} ({version.id}): {unservable}")
    if workload.replicas < 0:
        raise PermanentError(
            f"deployment {workload.deployment_id}: replicas must be 0 or more, "
            f"not {workload.replicas}"
        )
    if workload.replicas == 0:
        return
    if version.format == ArtifactFormat.API:
        if not version.endpoint:
            raise PermanentError(
                f"version {version.number} ({version.id}) has format API but no endpoint"
            )
        return
    if not version.artifact_key or not version.sha256:
        raise PermanentError(
            f"version {version.number} ({version.id}) has no stored artifact (an artifact key "
            "and a SHA-256 are needed): there is nothing to serve"
        )


class Deployer(Protocol):
    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        """Every workload of ``target``, by deployment id. Absent workloads are not listed."""
        ...

    def apply(self, target: Target, workloads: Sequence[Workload]) -> None:
        """Make each workload's end state true. Idempotent; must not block on readiness."""
        ...

    def owned(self) -> list[OwnedWorkload]:
        """Every workload this deployer runs or has records of, on every target, by whichever
        deployment id it carries. Cheap: one listing, no health probes."""
        ...

    def remove(self, workload: OwnedWorkload) -> None:
        """Stop every part of ``workload`` that still runs and forget it (its records, or its
        cluster objects). Harmless when it is already gone."""
        ...


@runtime_checkable
class ClusterRouter(Protocol):
    """A deployer that can also write the traffic split into its platform (Kubernetes with a
    Gateway API HTTPRoute or an Istio VirtualService)."""

    @property
    def writes_routes(self) -> bool: ...

    def apply_routes(self, target: Target, backends: Sequence[tuple[str, int]]) -> None:
        """Make ``(service name, weight)`` pairs the target's split; empty removes it."""
        ...
