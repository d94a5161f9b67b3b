"""The Kubernetes deployer: one Deployment and one Service per workload (per slot).

``apply`` server-side applies each workload's objects (idempotent), or deletes them at 0
replicas; ``observe`` lists the Deployments that carry our labels for the target's model and
environment (never anything else: objects a human made are not selected) and reads their
status. Nothing is recorded on disk: the cluster is the state.

A version of format ``API`` runs no pods; its workload is an ``ExternalName`` Service that
records the endpoint, which ``observe`` reports as the URL.

Traffic weights are the controller's: ``apply_routes`` writes them into an HTTPRoute or a
VirtualService when the ``kube_router`` setting asks for one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from deployers.base import (
    Instance,
    OwnedWorkload,
    Target,
    Workload,
    WorkloadStatus,
    check_workload,
)
from deployers.kubernetes import manifests
from deployers.kubernetes.manifests import (
    APP_NAME,
    DEPLOYMENT_ID,
    ENDPOINT_ANNOTATION,
    ENVIRONMENT,
    FORMAT,
    MANAGED_BY,
    MANAGER,
    MODEL,
    MODEL_ID,
    MODEL_NAME_ANNOTATION,
    NAME,
    REPLICAS_ANNOTATION,
    SLOT,
    VERSION,
    VERSION_ID,
    VERSION_NUMBER_ANNOTATION,
    selector,
    service_url,
)
from deployers.kubernetes.naming import resource_name, route_name
from registry.vocabulary import ArtifactFormat, DeploymentTarget

if TYPE_CHECKING:
    from registry.settings import Settings

__all__ = ["KubeApiLike", "KubernetesDeployer", "label_selector"]

PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"

_log = logging.getLogger("modelreg.deployers.kubernetes")


class KubeApiLike(Protocol):
    """What the deployer needs of :class:`deployers.kubernetes.api.KubeApi` (tests use a fake)."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def list_deployments(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    def list_services(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    def delete(self, kind: str, namespace: str, name: str) -> bool: ...


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


class KubernetesDeployer:
    """Runs model servers as Kubernetes Deployments; see the module docstring."""

    def __init__(self, api: KubeApiLike, *, settings: Settings) -> None:
        self._api = api
        self._settings = settings
        self._namespace = settings.kube_namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesDeployer:
        from deployers.kubernetes.api import KubeApi

        return cls(KubeApi.from_settings(settings), settings=settings)

    # -- the interface ---------------------------------------------------------------------

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        """Every workload of ``target`` found in the cluster, by deployment id."""
        ours = selector(target)
        statuses: dict[uuid.UUID, WorkloadStatus] = {}
        for deployment in self._api.list_deployments(self._namespace, label_selector(ours)):
            status = self._deployment_status(deployment)
            if status is not None:
                statuses[status.deployment_id] = status
        external = label_selector({**ours, FORMAT: "api"})
        for service in self._api.list_services(self._namespace, external):
            status = self._external_status(service)
            if status is not None:
                statuses[status.deployment_id] = status
        return dict(sorted(statuses.items(), key=lambda item: str(item[0])))

    def apply(self, target: Target, workloads: Sequence[Workload]) -> None:
        """Make each workload's end state true; never waits for readiness. Raises
        :class:`PermanentError` for a workload that cannot run, before anything is changed."""
        for workload in workloads:
            check_workload(workload)
        for workload in workloads:
            self._apply_workload(target, workload)

    def owned(self) -> list[OwnedWorkload]:
        """Every workload in the namespace: the Deployments and Services that carry our
        ``managed-by`` label and a deployment id, whatever their model and environment.
        Objects without our labels are never listed; ours without a deployment id (a router
        Service) are not workloads."""
        ours = label_selector(_managed())
        parts: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for obj in [
            *self._api.list_deployments(self._namespace, ours),
            *self._api.list_services(self._namespace, ours),
        ]:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if DEPLOYMENT_ID not in labels:
                continue
            try:
                deployment_id = uuid.UUID(labels[DEPLOYMENT_ID])
            except ValueError:
                self._ids(obj)  # says which object, and why it is left alone
                continue
            parts.setdefault(deployment_id, []).append(obj)
        return [self._owned_workload(i, objs) for i, objs in sorted(parts.items(), key=str)]

    def remove(self, workload: OwnedWorkload) -> None:
        """Delete the workload's Deployment and Service, found again by its deployment id
        label (never by a name alone), Deployments first."""
        labels = label_selector({**_managed(), DEPLOYMENT_ID: str(workload.deployment_id)})
        for kind, objs in (
            ("Deployment", self._api.list_deployments(self._namespace, labels)),
            ("Service", self._api.list_services(self._namespace, labels)),
        ):
            for obj in objs:
                self._api.delete(kind, self._namespace, obj["metadata"]["name"])

    def _owned_workload(
        self, deployment_id: uuid.UUID, objs: Sequence[Mapping[str, Any]]
    ) -> OwnedWorkload:
        metadata = objs[0].get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        try:
            model_id = uuid.UUID(labels.get(MODEL_ID, ""))
        except ValueError:
            model_id = uuid.UUID(int=0)
        names = ", ".join(f"{o.get('kind', 'object')} {o['metadata']['name']}" for o in objs)
        return OwnedWorkload(
            deployment_id=deployment_id,
            target=Target(
                kind=DeploymentTarget.KUBERNETES,
                model=annotations.get(MODEL_NAME_ANNOTATION) or labels.get(MODEL, "?"),
                model_id=model_id,
                environment=labels.get(ENVIRONMENT, "?"),
            ),
            version_number=annotations.get(VERSION_NUMBER_ANNOTATION) or labels.get(VERSION),
            parts=f"{names} in namespace {self._namespace}",
        )

    @property
    def writes_routes(self) -> bool:
        """Whether the traffic split is also written into the cluster (``kube_router``)."""
        return self._settings.kube_router != "none"

    def apply_routes(self, target: Target, backends: Sequence[tuple[str, int]]) -> None:
        """Write the traffic split of ``target`` (``(service name, weight)`` pairs) into the
        cluster, as the ``kube_router`` setting asks: an HTTPRoute (``gateway-api``), a
        VirtualService and the router Service it routes (``istio``), or nothing (``none``).
        No backends removes the route."""
        router = self._settings.kube_router
        if router == "none":
            return
        name = route_name(model=target.model, environment=target.environment)
        if router == "gateway-api":
            if not backends:
                self._api.delete("HTTPRoute", self._namespace, name)
                return
            self._api.apply(manifests.httproute_manifest(target, backends, settings=self._settings))
            return
        if not backends:
            self._api.delete("VirtualService", self._namespace, name)
            self._api.delete("Service", self._namespace, name)
            return
        self._api.apply(manifests.router_service_manifest(target, settings=self._settings))
        self._api.apply(
            manifests.virtualservice_manifest(target, backends, settings=self._settings)
        )

    def service_name(self, target: Target, workload: Workload) -> str:
        """The name of the workload's Service (for :meth:`apply_routes`)."""
        return resource_name(
            model=target.model,
            environment=target.environment,
            role=workload.role,
            deployment_id=workload.deployment_id,
        )

    # -- applying --------------------------------------------------------------------------

    def _apply_workload(self, target: Target, workload: Workload) -> None:
        owned = self._owned(target, workload.deployment_id)
        if workload.replicas == 0:
            for kind, name in owned:
                self._api.delete(kind, self._namespace, name)
            return
        # A workload keeps the name it was created with: a canary promoted to stable keeps
        # its pods and its Service URL.
        names = [name for _, name in owned]
        name = names[0] if names else self.service_name(target, workload)
        for kind, other in owned:
            if other != name:  # left over from a partly failed apply: not ours to keep
                self._api.delete(kind, self._namespace, other)
        settings = self._settings
        if workload.version.format == ArtifactFormat.API:
            self._api.apply(
                manifests.external_service_manifest(target, workload, settings=settings, name=name)
            )
            if ("Deployment", name) in owned:
                self._api.delete("Deployment", self._namespace, name)
            return
        self._api.apply(manifests.service_manifest(target, workload, settings=settings, name=name))
        self._api.apply(
            manifests.deployment_manifest(target, workload, settings=settings, name=name)
        )

    def _owned(self, target: Target, deployment_id: uuid.UUID) -> list[tuple[str, str]]:
        """The (kind, name) of the Deployment and Service of a workload, Deployments first."""
        labels = label_selector({**selector(target), DEPLOYMENT_ID: str(deployment_id)})
        found = [
            ("Deployment", d["metadata"]["name"])
            for d in self._api.list_deployments(self._namespace, labels)
        ]
        found += [
            ("Service", s["metadata"]["name"])
            for s in self._api.list_services(self._namespace, labels)
        ]
        return found

    # -- observing -------------------------------------------------------------------------

    def _ids(self, obj: Mapping[str, Any]) -> tuple[uuid.UUID, uuid.UUID] | None:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        try:
            return uuid.UUID(labels[DEPLOYMENT_ID]), uuid.UUID(labels[VERSION_ID])
        except (KeyError, ValueError):
            _log.warning(
                "ignoring %s %s/%s: its modelreg.io labels are incomplete",
                obj.get("kind", "object"),
                metadata.get("namespace"),
                metadata.get("name"),
            )
            return None

    def _deployment_status(self, deployment: Mapping[str, Any]) -> WorkloadStatus | None:
        ids = self._ids(deployment)
        if ids is None:
            return None
        metadata = deployment["metadata"]
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        replicas = int(spec.get("replicas", 1))
        ready = min(int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0))
        generation = metadata.get("generation")
        if generation is not None and int(status.get("observedGeneration") or 0) < generation:
            ready = 0  # the Deployment controller has not seen the latest spec yet
        url = service_url(metadata["name"], metadata.get("namespace") or self._namespace)
        version = (metadata.get("labels") or {}).get(VERSION, "")
        instances = tuple(
            Instance(
                url=url,
                ready=True,
                port=manifests.SERVER_PORT,
                name=f"{metadata['name']}-{version}-{i}",
            )
            for i in range(min(ready, replicas))
        )
        details = {
            "namespace": metadata.get("namespace") or self._namespace,
            "deployment": metadata["name"],
            "service": metadata["name"],
            "slot": (metadata.get("labels") or {}).get(SLOT),
            "replicas": replicas,
            "readyReplicas": int(status.get("readyReplicas") or 0),
            "updatedReplicas": int(status.get("updatedReplicas") or 0),
            "availableReplicas": int(status.get("availableReplicas") or 0),
        }
        return WorkloadStatus(
            deployment_id=ids[0],
            version_id=ids[1],
            replicas=replicas,
            ready_replicas=ready,
            url=url,
            instances=instances,
            failure=_failure(status),
            details=details,
        )

    def _external_status(self, service: Mapping[str, Any]) -> WorkloadStatus | None:
        ids = self._ids(service)
        if ids is None:
            return None
        annotations = service["metadata"].get("annotations") or {}
        try:
            replicas = int(annotations.get(REPLICAS_ANNOTATION, "1"))
        except ValueError:
            replicas = 1
        return WorkloadStatus(
            deployment_id=ids[0],
            version_id=ids[1],
            replicas=replicas,
            ready_replicas=replicas,
            url=annotations.get(ENDPOINT_ANNOTATION),
            details={
                "namespace": service["metadata"].get("namespace") or self._namespace,
                "service": service["metadata"]["name"],
                "externalName": (service.get("spec") or {}).get("externalName"),
            },
        )


def _managed() -> dict[str, str]:
    """The labels every object modelreg made carries, whatever its target."""
    return {NAME: APP_NAME, MANAGED_BY: MANAGER}


def _failure(status: Mapping[str, Any]) -> str | None:
    """Why the Deployment cannot become ready by itself: its progress deadline passed."""
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == PROGRESS_DEADLINE_EXCEEDED
        ):
            message = condition.get("message") or "no progress before the deadline"
            return f"{PROGRESS_DEADLINE_EXCEEDED}: {message}"
    return None
