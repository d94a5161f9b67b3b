"""Fakes of our own interfaces (never of HTTP libraries): a deployer that runs nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from deployers.base import (
    Instance,
    PermanentError,
    Target,
    TemporaryError,
    Workload,
    WorkloadStatus,
)


@dataclass
class FakeWorkload:
    target: Target
    workload: Workload
    url: str
    ready_replicas: int = 0
    failure: str | None = None


@dataclass
class FakeDeployer:
    """Workloads become ready ``ready_after`` observations after they are applied (0: at the
    next observe). Tests can make a deployment fail, or make calls raise."""

    ready_after: int = 0
    workloads: dict[uuid.UUID, FakeWorkload] = field(default_factory=dict)
    pending: dict[uuid.UUID, int] = field(default_factory=dict)
    fail_versions: dict[str, str] = field(default_factory=dict)
    """version number → the failure its workload reports."""
    raise_on_apply: Exception | None = None
    raise_on_observe: Exception | None = None
    applied: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    next_port: int = 9100
    by_target: dict[tuple[uuid.UUID, str], set[uuid.UUID]] = field(default_factory=dict)
    """(model id, environment) → deployment ids: observe stays O(workloads of the target)."""

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        if self.raise_on_observe is not None:
            raise self.raise_on_observe
        seen: dict[uuid.UUID, WorkloadStatus] = {}
        for dep_id in list(self.by_target.get((target.model_id, target.environment), ())):
            fw = self.workloads.get(dep_id)
            if fw is None:
                continue
            wanted = fw.workload.replicas
            left = self.pending.get(dep_id, 0)
            if left > 0:
                self.pending[dep_id] = left - 1
            else:
                fw.ready_replicas = wanted
            failure = self.fail_versions.get(fw.workload.version.number)
            ready = fw.ready_replicas if failure is None else 0
            seen[dep_id] = WorkloadStatus(
                deployment_id=dep_id,
                version_id=fw.workload.version.id,
                replicas=wanted,
                ready_replicas=ready,
                url=fw.url,
                instances=tuple(Instance(url=fw.url, ready=i < ready) for i in range(wanted)),
                failure=failure,
            )
        return seen

    def apply(self, target: Target, workloads: Sequence[Workload]) -> None:
        if self.raise_on_apply is not None:
            raise self.raise_on_apply
        for w in workloads:
            if w.version.format != "API" and w.version.artifact_key is None:
                raise PermanentError(f"version {w.version.number} has no artifact")
            self.applied.append((w.deployment_id, w.replicas))
            current = self.workloads.get(w.deployment_id)
            key = (target.model_id, target.environment)
            if w.replicas == 0:
                self.workloads.pop(w.deployment_id, None)
                self.pending.pop(w.deployment_id, None)
                self.by_target.get(key, set()).discard(w.deployment_id)
                continue
            if current is None:
                url = w.version.endpoint or f"http://127.0.0.1:{self.next_port}"
                self.next_port += 1
                self.workloads[w.deployment_id] = FakeWorkload(target, w, url)
                self.by_target.setdefault(key, set()).add(w.deployment_id)
                self.pending[w.deployment_id] = self.ready_after
            elif current.workload.replicas != w.replicas:
                if w.replicas > current.workload.replicas:
                    self.pending[w.deployment_id] = self.ready_after
                else:
                    current.ready_replicas = min(current.ready_replicas, w.replicas)
                current.workload = w

    def running(self) -> dict[str, int]:
        """version number → replicas running now."""
        return {fw.workload.version.number: fw.workload.replicas for fw in self.workloads.values()}


__all__ = ["FakeDeployer", "PermanentError", "TemporaryError"]
