"""Pure functions that build the Kubernetes objects of a workload, as plain dicts.

Nothing here talks to a cluster: the deployer applies what these return, and the tests validate
every one of them against the API schemas.

- ``deployment_manifest``: the model servers. An initContainer (``modelreg fetch-artifact``)
  copies the artifact from the store into an ``emptyDir`` and verifies its SHA-256 (exit code 2
  on a mismatch); the main container (``modelreg serve-model``) serves it on port 8080.
- ``service_manifest``: one ClusterIP Service per workload (per slot), named like its
  Deployment. A version of format ``API`` runs no pods: its Service is an ``ExternalName``
  pointing at the endpoint, which the deployer reads back from an annotation.
- ``httproute_manifest`` / ``virtualservice_manifest``: the traffic split, for clusters whose
  clients do not resolve endpoints per request.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deployers.base import Target, Workload
from deployers.kubernetes.naming import (
    label_value,
    resource_name,
    route_name,
    slot_for,
)
from registry.vocabulary import ArtifactFormat

if TYPE_CHECKING:
    from registry.settings import Settings

__all__ = [
    "APP_NAME",
    "ISTIO_API_VERSION",
    "MANAGER",
    "MODELS_DIR",
    "SERVER_PORT",
    "deployment_manifest",
    "external_service_manifest",
    "httproute_manifest",
    "router_service_manifest",
    "selector",
    "service_manifest",
    "service_url",
    "virtualservice_manifest",
    "workload_labels",
]

APP_NAME = "modelreg-model-server"
MANAGER = "modelreg"
SERVER_PORT = 8080
MODELS_DIR = "/models"
ARTIFACT_PATH = f"{MODELS_DIR}/model.onnx"
ISTIO_API_VERSION = "networking.istio.io/v1beta1"

# Label keys: the first two are the recommended ones; ours are under modelreg.io/.
NAME = "app.kubernetes.io/name"
MANAGED_BY = "app.kubernetes.io/managed-by"
MODEL = "modelreg.io/model"
MODEL_ID = "modelreg.io/model-id"
ENVIRONMENT = "modelreg.io/environment"
VERSION = "modelreg.io/version"
VERSION_ID = "modelreg.io/version-id"
DEPLOYMENT_ID = "modelreg.io/deployment-id"
SLOT = "modelreg.io/slot"
FORMAT = "modelreg.io/format"
# Annotations: the original (unnormalised) text, and what observe needs back.
MODEL_NAME_ANNOTATION = "modelreg.io/model-name"
VERSION_NUMBER_ANNOTATION = "modelreg.io/version-number"
ENDPOINT_ANNOTATION = "modelreg.io/endpoint"
REPLICAS_ANNOTATION = "modelreg.io/replicas"


def selector(target: Target) -> dict[str, str]:
    """The labels every object of ``target`` carries, and the only ones we select on."""
    return {
        NAME: APP_NAME,
        MANAGED_BY: MANAGER,
        MODEL_ID: str(target.model_id),
        ENVIRONMENT: label_value(target.environment),
    }


def workload_labels(target: Target, workload: Workload) -> dict[str, str]:
    return {
        **selector(target),
        MODEL: label_value(target.model),
        VERSION: label_value(workload.version.number),
        VERSION_ID: str(workload.version.id),
        DEPLOYMENT_ID: str(workload.deployment_id),
        SLOT: slot_for(workload.role),
    }


def _pod_selector(target: Target, deployment_id: uuid.UUID) -> dict[str, str]:
    """What a workload's Deployment and Service select pods on: stable across versions."""
    return {**selector(target), DEPLOYMENT_ID: str(deployment_id)}


def _metadata(
    target: Target, workload: Workload, *, settings: Settings, name: str | None
) -> dict[str, Any]:
    return {
        "name": name or _name(target, workload),
        "namespace": settings.kube_namespace,
        "labels": workload_labels(target, workload),
        "annotations": {
            MODEL_NAME_ANNOTATION: target.model,
            VERSION_NUMBER_ANNOTATION: workload.version.number,
        },
    }


def _name(target: Target, workload: Workload) -> str:
    return resource_name(
        model=target.model,
        environment=target.environment,
        role=workload.role,
        deployment_id=workload.deployment_id,
    )


def service_url(name: str, namespace: str) -> str:
    """The in-cluster URL of a workload's Service."""
    return f"http://{name}.{namespace}.svc.cluster.local:{SERVER_PORT}"


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _store_env(settings: Settings) -> list[dict[str, Any]]:
    """The artifact-store settings fetch-artifact needs; the S3 keys come from a Secret."""
    env: list[dict[str, Any]] = [
        {"name": "MODELREG_STORAGE", "value": settings.storage},
        {"name": "MODELREG_LOG_LEVEL", "value": settings.log_level},
    ]
    if settings.storage == "s3":
        env += [
            {"name": "MODELREG_S3_ENDPOINT", "value": settings.s3_endpoint},
            {"name": "MODELREG_S3_BUCKET", "value": settings.s3_bucket},
            {"name": "MODELREG_S3_SECURE", "value": "true" if settings.s3_secure else "false"},
            {"name": "MODELREG_S3_CREATE_BUCKET", "value": "false"},
        ]
        if settings.s3_region:
            env.append({"name": "MODELREG_S3_REGION", "value": settings.s3_region})
        if settings.kube_artifact_secret:
            env += [
                {
                    "name": key,
                    "valueFrom": {
                        "secretKeyRef": {"name": settings.kube_artifact_secret, "key": key}
                    },
                }
                for key in ("MODELREG_S3_ACCESS_KEY", "MODELREG_S3_SECRET_KEY")
            ]
    return env


def _resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """``Workload.resources`` as a container's ``resources``: ``requests``/``limits`` maps of
    quantities (strings); other keys are ignored."""
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        values = resources.get(kind)
        if isinstance(values, Mapping) and values:
            out[kind] = {str(k): str(v) for k, v in values.items()}
    return out


def deployment_manifest(
    target: Target, workload: Workload, *, settings: Settings, name: str | None = None
) -> dict[str, Any]:
    """The apps/v1 Deployment of a workload (not for a version of format ``API``), named
    ``name`` (default: :func:`resource_name` of the workload)."""
    version = workload.version
    if version.format == ArtifactFormat.API or not version.artifact_key or not version.sha256:
        raise ValueError(f"version {version.number} has no artifact to serve")
    metadata = _metadata(target, workload, settings=settings, name=name)
    # The slot is left out of the pod template: a canary promoted to stable keeps its pods.
    pod_labels = {k: v for k, v in metadata["labels"].items() if k != SLOT}
    fetch = {
        "name": "fetch-artifact",
        "image": settings.kube_image,
        "command": [
            "modelreg",
            "fetch-artifact",
            "--artifact-key",
            version.artifact_key,
            "--sha256",
            version.sha256,
            "--output",
            ARTIFACT_PATH,
        ],
        "env": _store_env(settings),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
        "securityContext": _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    server: dict[str, Any] = {
        "name": "model-server",
        "image": settings.kube_image,
        "command": [
            "modelreg",
            "serve-model",
            "--artifact",
            ARTIFACT_PATH,
            "--sha256",
            version.sha256,
            "--model",
            target.model,
            "--version",
            version.number,
            "--host",
            "0.0.0.0",  # noqa: S104 - a pod listens on its own address
            "--port",
            str(SERVER_PORT),
            *(["--model-file", version.model_file] if version.model_file else []),
        ],
        "env": [{"name": "MODELREG_LOG_LEVEL", "value": settings.log_level}],
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
        "securityContext": _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = _resources(workload.resources)
    if resources:
        server["resources"] = resources
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [fetch],
        "containers": [server],
        "volumes": [{"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    if settings.kube_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.kube_image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": workload.replicas,
            "progressDeadlineSeconds": settings.kube_progress_deadline_seconds,
            "selector": {"matchLabels": _pod_selector(target, workload.deployment_id)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": metadata["annotations"]},
                "spec": pod_spec,
            },
        },
    }


def service_manifest(
    target: Target, workload: Workload, *, settings: Settings, name: str | None = None
) -> dict[str, Any]:
    """The ClusterIP Service of a workload's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(target, workload, settings=settings, name=name),
        "spec": {
            "type": "ClusterIP",
            "selector": _pod_selector(target, workload.deployment_id),
            "ports": [
                {"name": "http", "port": SERVER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def external_service_manifest(
    target: Target, workload: Workload, *, settings: Settings, name: str | None = None
) -> dict[str, Any]:
    """For a version of format ``API``: an ExternalName Service that records the endpoint (in
    an annotation, with the replicas asked for) and runs no pods."""
    endpoint = workload.version.endpoint
    if workload.version.format != ArtifactFormat.API or not endpoint:
        raise ValueError(f"version {workload.version.number} has no endpoint")
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    metadata = _metadata(target, workload, settings=settings, name=name)
    metadata["labels"][FORMAT] = "api"
    metadata["annotations"][ENDPOINT_ANNOTATION] = endpoint
    metadata["annotations"][REPLICAS_ANNOTATION] = str(workload.replicas)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ExternalName",
            "externalName": parts.hostname or "",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    }


def _route_metadata(target: Target, *, settings: Settings) -> dict[str, Any]:
    return {
        "name": route_name(model=target.model, environment=target.environment),
        "namespace": settings.kube_namespace,
        "labels": {**selector(target), MODEL: label_value(target.model)},
        "annotations": {MODEL_NAME_ANNOTATION: target.model},
    }


def router_service_manifest(target: Target, *, settings: Settings) -> dict[str, Any]:
    """A Service over every model server of ``target``: the host a VirtualService routes."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _route_metadata(target, settings=settings),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(target),
            "ports": [
                {"name": "http", "port": SERVER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def httproute_manifest(
    target: Target, backends: Sequence[tuple[str, int]], *, settings: Settings
) -> dict[str, Any]:
    """A gateway.networking.k8s.io/v1 HTTPRoute on the Gateway ``kube_gateway_name`` that
    splits ``/v2/models/MODEL`` (for requests with ``X-Modelreg-Environment: ENV``) over the
    given Services by weight."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _route_metadata(target, settings=settings),
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": settings.kube_gateway_name,
                    "namespace": settings.kube_namespace,
                }
            ],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": f"/v2/models/{target.model}"},
                            "headers": [
                                {
                                    "type": "Exact",
                                    "name": "X-Modelreg-Environment",
                                    "value": target.environment,
                                }
                            ],
                        }
                    ],
                    "backendRefs": [
                        {"kind": "Service", "name": name, "port": SERVER_PORT, "weight": weight}
                        for name, weight in backends
                    ],
                }
            ],
        },
    }


def virtualservice_manifest(
    target: Target, backends: Sequence[tuple[str, int]], *, settings: Settings
) -> dict[str, Any]:
    """An Istio VirtualService for the router Service's host that splits traffic over the given
    Services by weight."""
    metadata = _route_metadata(target, settings=settings)
    host = f"{metadata['name']}.{settings.kube_namespace}.svc.cluster.local"
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": {
            "hosts": [host],
            "http": [
                {
                    "name": "weighted",
                    "route": [
                        {
                            "destination": {
                                "host": f"{name}.{settings.kube_namespace}.svc.cluster.local",
                                "port": {"number": SERVER_PORT},
                            },
                            "weight": weight,
                        }
                        for name, weight in backends
                    ],
                }
            ],
        },
    }
