"""Fakes of our own interfaces (never of HTTP libraries): a deployer that runs nothing, an
in-memory cluster behind our ``KubeApi`` wrapper, and the analysis' ``scrape`` of servers that
answer steady, healthy traffic.

``FakeKubeApi`` keeps applied objects, selects on labels as the API server does, bumps a
Deployment's ``generation`` when its spec changes, and makes its pods ready over ticks (every
``list_deployments`` call is one tick)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deployers.base import (
    Instance,
    OwnedWorkload,
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
    removed: list[uuid.UUID] = field(default_factory=list)
    """Deployment ids whose workloads ``remove`` was called for, in order."""
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

    def owned(self) -> list[OwnedWorkload]:
        return [
            OwnedWorkload(
                deployment_id=dep_id,
                target=fw.target,
                version_number=fw.workload.version.number,
                parts=f"{fw.workload.replicas} fake replica(s) on {fw.url}",
            )
            for dep_id, fw in sorted(self.workloads.items(), key=lambda item: str(item[0]))
        ]

    def remove(self, workload: OwnedWorkload) -> None:
        self.removed.append(workload.deployment_id)
        found = self.workloads.pop(workload.deployment_id, None)
        self.pending.pop(workload.deployment_id, None)
        if found is not None:
            key = (found.target.model_id, found.target.environment)
            self.by_target.get(key, set()).discard(workload.deployment_id)

    def running(self) -> dict[str, int]:
        """version number → replicas running now."""
        return {fw.workload.version.number: fw.workload.replicas for fw in self.workloads.values()}


def _matches(obj: dict[str, Any], label_selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, label_selector.split(",")):
        key, value = term.split("=", 1)
        if labels.get(key) != value:
            return False
    return True


class FakeKubeApi:
    """An in-memory cluster behind the ``KubeApi`` methods the deployer calls."""

    def __init__(self, *, ticks_per_replica: int = 1) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.ticks_per_replica = ticks_per_replica
        self.stuck: set[str] = set()
        """Names of Deployments whose pods never get ready (their deadline then passes)."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj["metadata"]
        key = (obj["kind"], metadata["namespace"], metadata["name"])
        self.calls.append(("apply", *key))
        current = self.objects.get(key)
        stored = copy.deepcopy(obj)
        if obj["kind"] == "Deployment":
            generation = 1
            status: dict[str, Any] = {"observedGeneration": 0}
            if current is not None:
                generation = current["metadata"]["generation"]
                status = current["status"]
                if current["spec"] != obj["spec"]:
                    generation += 1
                    if current["spec"]["template"] != obj["spec"]["template"]:
                        status = {**status, "updatedReplicas": 0, "readyReplicas": 0}
            stored["metadata"]["generation"] = generation
            stored["status"] = status
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get(("Deployment", namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list_deployments(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list", "Deployment", namespace, label_selector))
        self._tick()
        return self._list("Deployment", namespace, label_selector)

    def list_services(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list", "Service", namespace, label_selector))
        return self._list("Service", namespace, label_selector)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind, namespace, name))
        return self.objects.pop((kind, namespace, name), None) is not None

    def _list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and ns == namespace and _matches(obj, label_selector)
        ]

    def _tick(self) -> None:
        """One step of the Deployment controller and the kubelets."""
        for (kind, _, name), obj in self.objects.items():
            if kind != "Deployment":
                continue
            status = obj["status"]
            wanted = obj["spec"]["replicas"]
            status["observedGeneration"] = obj["metadata"]["generation"]
            status["replicas"] = wanted
            if name in self.stuck:
                status["conditions"] = [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{name}-5d8f" has timed out progressing.',
                    }
                ]
                continue
            updated = min(wanted, status.get("updatedReplicas", 0) + 1)
            status["updatedReplicas"] = updated
            status["readyReplicas"] = min(updated, status.get("readyReplicas", 0) + 1)
            status["availableReplicas"] = status["readyReplicas"]


__all__ = ["FakeDeployer", "FakeKubeApi", "PermanentError", "TemporaryError"]


class SteadyTraffic:
    """The analysis' ``scrape`` (``StepAnalysis(scrape=...)``) for servers that run nothing:
    each server answers ``per_scrape`` more healthy inference requests between two scrapes,
    so that a production step (``requireTraffic``) sees traffic, and the stable version's
    window fills as the candidate's does."""

    def __init__(self, *, per_scrape: int = 25, already: int = 0) -> None:
        self.per_scrape = per_scrape
        self.already = already
        """What each server has served before its first scrape."""
        self.served: dict[str, int] = {}

    def __call__(self, url: str) -> str:
        from prometheus_client import generate_latest

        from deployers.model_server.metrics import ServerMetrics as _Metrics

        self.served[url] = self.served.get(url, self.already) + self.per_scrape
        metrics = _Metrics(model="fake", version="fake")
        metrics.requests.labels("fake", "fake", "/v2/models/{name}/infer", "200").inc(
            self.served[url]
        )
        return generate_latest(metrics.registry).decode()
