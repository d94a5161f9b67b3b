"""``KubeApi`` and the deployer against an HTTP test double of the API server.

A real ``kubernetes.client.ApiClient`` talks to ``pytest-httpserver``; the tests assert the
exact requests (method, path, query, content type, body) and how each answer is handled.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from deployers.base import PermanentError, Target, TemporaryError, VersionRef, Workload
from deployers.kubernetes import KubernetesDeployer
from deployers.kubernetes.api import KubeApi
from deployers.kubernetes.manifests import deployment_manifest, service_manifest
from tests.support.kube_settings import make_settings

SHA = "cd" * 32
NS = "models"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
APPLY_QUERY = {"fieldManager": "modelreg", "force": "true"}


@pytest.fixture
def kube(httpserver: HTTPServer) -> Iterator[KubeApi]:
    configuration = Configuration()
    configuration.host = httpserver.url_for("").rstrip("/")
    configuration.retries = False  # a refused connection fails at once
    api = KubeApi(ApiClient(configuration))
    yield api
    api.close()


@pytest.fixture
def target() -> Target:
    return Target("kubernetes", "m", uuid.uuid4(), "production")


@pytest.fixture
def workload() -> Workload:
    version_id = uuid.uuid4()
    version = VersionRef(
        version_id, "1.0", "ONNX", sha256=SHA, artifact_key=f"models/m/versions/{version_id}"
    )
    return Workload(uuid.uuid4(), version, 2, "canary")


def status_body(code: int, reason: str, message: str) -> str:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    )


def served(manifest: dict[str, Any], *, ready: int, generation: int = 1) -> dict[str, Any]:
    """``manifest`` as the API server would return it, with a status."""
    obj = json.loads(json.dumps(manifest))
    obj["metadata"].update(
        {
            "uid": str(uuid.uuid4()),
            "resourceVersion": "4711",
            "generation": generation,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "managedFields": [{"manager": "modelreg", "operation": "Apply"}],
        }
    )
    if obj["kind"] == "Deployment":
        replicas = obj["spec"]["replicas"]
        obj["status"] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if ready == replicas else "False",
                    "reason": "MinimumReplicasAvailable",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": 'ReplicaSet "m-5d8f" has successfully progressed.',
                },
            ],
        }
    return obj


def a_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    for item in items:
        item.pop("kind", None)
        item.pop("apiVersion", None)
    return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {}, "items": items}


def our_selector(target: Target, **extra: str) -> str:
    labels = {
        "app.kubernetes.io/managed-by": "modelreg",
        "app.kubernetes.io/name": "modelreg-model-server",
        "modelreg.io/environment": target.environment,
        "modelreg.io/model-id": str(target.model_id),
        **extra,
    }
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# -- KubeApi ---------------------------------------------------------------------------------


def test_apply_is_a_server_side_apply_patch(
    httpserver: HTTPServer, kube: KubeApi, target: Target, workload: Workload
) -> None:
    manifest = deployment_manifest(target, workload, settings=make_settings())
    name = manifest["metadata"]["name"]
    httpserver.expect_oneshot_request(
        f"{DEPLOYMENTS}/{name}",
        method="PATCH",
        query_string=APPLY_QUERY,
        headers={"Content-Type": "application/apply-patch+yaml"},
        json=manifest,
    ).respond_with_json(served(manifest, ready=0))
    answer = kube.apply(manifest)
    assert answer["metadata"]["resourceVersion"] == "4711"
    httpserver.check_assertions()
    (request, _) = httpserver.log[0]
    assert request.headers["Accept"] == "application/json"


def test_list_selects_on_labels_and_delete_is_in_the_background(
    httpserver: HTTPServer, kube: KubeApi
) -> None:
    httpserver.expect_oneshot_request(
        DEPLOYMENTS, method="GET", query_string={"labelSelector": "a=b,c=d"}
    ).respond_with_json(a_list("Deployment", [{"metadata": {"name": "x"}}]))
    httpserver.expect_oneshot_request(
        f"{SERVICES}/x",
        method="DELETE",
        json={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
    ).respond_with_json({"kind": "Status", "apiVersion": "v1", "status": "Success"})
    httpserver.expect_oneshot_request(f"{SERVICES}/gone", method="DELETE").respond_with_data(
        status_body(404, "NotFound", 'services "gone" not found'), status=404
    )
    assert kube.list_deployments(NS, "a=b,c=d") == [
        {"metadata": {"name": "x"}, "kind": "Deployment"}
    ]
    assert kube.delete("Service", NS, "x") is True
    assert kube.delete("Service", NS, "gone") is False
    httpserver.check_assertions()


def test_404_on_observe_is_absent(httpserver: HTTPServer, kube: KubeApi) -> None:
    httpserver.expect_request(f"{DEPLOYMENTS}/nope", method="GET").respond_with_data(
        status_body(404, "NotFound", 'deployments.apps "nope" not found'), status=404
    )
    httpserver.expect_request(DEPLOYMENTS, method="GET").respond_with_data(
        status_body(404, "NotFound", 'namespaces "models" not found'), status=404
    )
    assert kube.get_deployment(NS, "nope") is None
    assert kube.list_deployments(NS, "a=b") == []


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (409, "Conflict", TemporaryError),
        (429, "TooManyRequests", TemporaryError),
        (500, "InternalError", TemporaryError),
        (503, "ServiceUnavailable", TemporaryError),
        (400, "BadRequest", PermanentError),
        (403, "Forbidden", PermanentError),
        (422, "Invalid", PermanentError),
    ],
)
def test_api_errors_are_mapped(
    httpserver: HTTPServer,
    kube: KubeApi,
    target: Target,
    workload: Workload,
    code: int,
    reason: str,
    error: type[Exception],
) -> None:
    manifest = service_manifest(target, workload, settings=make_settings())
    message = f'Service "{manifest["metadata"]["name"]}" is {reason.lower()}: spec.ports: oops'
    httpserver.expect_request(
        f"{SERVICES}/{manifest['metadata']['name']}", method="PATCH"
    ).respond_with_data(status_body(code, reason, message), status=code)
    with pytest.raises(error) as caught:
        kube.apply(manifest)
    assert message in str(caught.value)
    assert str(code) in str(caught.value)
    other = PermanentError if error is TemporaryError else TemporaryError
    assert not isinstance(caught.value, other)


def test_a_refused_connection_is_temporary() -> None:
    configuration = Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = False
    with (
        KubeApi(ApiClient(configuration)) as kube,
        pytest.raises(TemporaryError, match="unreachable"),
    ):
        kube.list_deployments(NS, "a=b")


def test_no_kubernetes_configuration_is_permanent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PermanentError, match="no usable Kubernetes configuration"):
        KubeApi.from_settings(make_settings())


# -- the deployer over HTTP ------------------------------------------------------------------


def test_deployer_apply_observe_and_scale_to_zero(
    httpserver: HTTPServer, kube: KubeApi, target: Target, workload: Workload
) -> None:
    settings = make_settings()
    deployer = KubernetesDeployer(kube, settings=settings)
    deployment = deployment_manifest(target, workload, settings=settings)
    service = service_manifest(target, workload, settings=settings)
    name = deployment["metadata"]["name"]
    owned = our_selector(target, **{"modelreg.io/deployment-id": str(workload.deployment_id)})

    # apply: nothing yet, so the Service and the Deployment are applied under the new name.
    httpserver.expect_ordered_request(
        DEPLOYMENTS, method="GET", query_string={"labelSelector": owned}
    ).respond_with_json(a_list("Deployment", []))
    httpserver.expect_ordered_request(
        SERVICES, method="GET", query_string={"labelSelector": owned}
    ).respond_with_json(a_list("Service", []))
    httpserver.expect_ordered_request(
        f"{SERVICES}/{name}",
        method="PATCH",
        query_string=APPLY_QUERY,
        headers={"Content-Type": "application/apply-patch+yaml"},
        json=service,
    ).respond_with_json(served(service, ready=0))
    httpserver.expect_ordered_request(
        f"{DEPLOYMENTS}/{name}",
        method="PATCH",
        query_string=APPLY_QUERY,
        headers={"Content-Type": "application/apply-patch+yaml"},
        json=deployment,
    ).respond_with_json(served(deployment, ready=0))
    deployer.apply(target, [workload])

    # observe: a list of Deployments by our labels, and of our ExternalName Services.
    httpserver.expect_ordered_request(
        DEPLOYMENTS, method="GET", query_string={"labelSelector": our_selector(target)}
    ).respond_with_json(a_list("Deployment", [served(deployment, ready=2)]))
    httpserver.expect_ordered_request(
        SERVICES,
        method="GET",
        query_string={"labelSelector": our_selector(target, **{"modelreg.io/format": "api"})},
    ).respond_with_json(a_list("Service", []))
    status = deployer.observe(target)[workload.deployment_id]
    assert status.ready
    assert status.version_id == workload.version.id
    assert (status.replicas, status.ready_replicas) == (2, 2)
    assert status.url == f"http://{name}.{NS}.svc.cluster.local:8080"
    assert status.details == {
        "namespace": NS,
        "deployment": name,
        "service": name,
        "slot": "canary",
        "replicas": 2,
        "readyReplicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
    }

    # scale to 0: both objects found by the deployment id are deleted.
    httpserver.expect_ordered_request(
        DEPLOYMENTS, method="GET", query_string={"labelSelector": owned}
    ).respond_with_json(a_list("Deployment", [served(deployment, ready=2)]))
    httpserver.expect_ordered_request(
        SERVICES, method="GET", query_string={"labelSelector": owned}
    ).respond_with_json(a_list("Service", [served(service, ready=0)]))
    for path in (f"{DEPLOYMENTS}/{name}", f"{SERVICES}/{name}"):
        httpserver.expect_ordered_request(path, method="DELETE").respond_with_json(
            {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        )
    deployer.apply(target, [Workload(workload.deployment_id, workload.version, 0, "canary")])
    httpserver.check_assertions()
    assert [(r.method, r.path) for r, _ in httpserver.log] == [
        ("GET", DEPLOYMENTS),
        ("GET", SERVICES),
        ("PATCH", f"{SERVICES}/{name}"),
        ("PATCH", f"{DEPLOYMENTS}/{name}"),
        ("GET", DEPLOYMENTS),
        ("GET", SERVICES),
        ("GET", DEPLOYMENTS),
        ("GET", SERVICES),
        ("DELETE", f"{DEPLOYMENTS}/{name}"),
        ("DELETE", f"{SERVICES}/{name}"),
    ]


def test_observe_reports_a_progress_deadline(
    httpserver: HTTPServer, kube: KubeApi, target: Target, workload: Workload
) -> None:
    settings = make_settings()
    deployment = served(deployment_manifest(target, workload, settings=settings), ready=0)
    deployment["status"]["updatedReplicas"] = 1
    deployment["status"]["conditions"][1] = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "m-5d8f" has timed out progressing.',
    }
    httpserver.expect_request(DEPLOYMENTS, method="GET").respond_with_json(
        a_list("Deployment", [deployment])
    )
    httpserver.expect_request(SERVICES, method="GET").respond_with_json(a_list("Service", []))
    status = KubernetesDeployer(kube, settings=settings).observe(target)[workload.deployment_id]
    assert status.failure == (
        'ProgressDeadlineExceeded: ReplicaSet "m-5d8f" has timed out progressing.'
    )
    assert not status.ready


def test_a_rejected_apply_fails_the_step_with_the_server_message(
    httpserver: HTTPServer, kube: KubeApi, target: Target, workload: Workload
) -> None:
    httpserver.expect_request(DEPLOYMENTS, method="GET").respond_with_json(a_list("Deployment", []))
    httpserver.expect_request(SERVICES, method="GET").respond_with_json(a_list("Service", []))

    def forbidden(request: Request) -> Response:
        message = 'services is forbidden: User "system:serviceaccount:x:modelreg" cannot patch'
        return Response(status_body(403, "Forbidden", message), status=403)

    deployer = KubernetesDeployer(kube, settings=make_settings())
    name = deployer.service_name(target, workload)
    httpserver.expect_request(f"{SERVICES}/{name}", method="PATCH").respond_with_handler(forbidden)
    with pytest.raises(PermanentError, match="cannot patch"):
        deployer.apply(target, [workload])
    assert [r.method for r, _ in httpserver.log] == ["GET", "GET", "PATCH"]


def test_owned_lists_by_our_labels_and_remove_deletes_by_the_deployment_id(
    httpserver: HTTPServer, kube: KubeApi, target: Target, workload: Workload
) -> None:
    settings = make_settings()
    deployer = KubernetesDeployer(kube, settings=settings)
    deployment = deployment_manifest(target, workload, settings=settings)
    service = service_manifest(target, workload, settings=settings)
    name = deployment["metadata"]["name"]
    managed = "app.kubernetes.io/managed-by=modelreg,app.kubernetes.io/name=modelreg-model-server"
    by_id = f"{managed},modelreg.io/deployment-id={workload.deployment_id}"

    for path, kind, items in (
        (DEPLOYMENTS, "Deployment", [served(deployment, ready=2)]),
        (SERVICES, "Service", [served(service, ready=0)]),
    ):
        httpserver.expect_ordered_request(
            path, method="GET", query_string={"labelSelector": managed}
        ).respond_with_json(a_list(kind, items))
    [found] = deployer.owned()
    assert found.deployment_id == workload.deployment_id
    assert found.target == target
    assert found.version_number == "1.0"
    assert found.parts == f"Deployment {name}, Service {name} in namespace {NS}"

    for path, kind, item in (
        (DEPLOYMENTS, "Deployment", served(deployment, ready=2)),
        (SERVICES, "Service", served(service, ready=0)),
    ):
        httpserver.expect_ordered_request(
            path, method="GET", query_string={"labelSelector": by_id}
        ).respond_with_json(a_list(kind, [item]))
    for path in (f"{DEPLOYMENTS}/{name}", f"{SERVICES}/{name}"):
        httpserver.expect_ordered_request(
            path,
            method="DELETE",
            json={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
        ).respond_with_json({"kind": "Status", "apiVersion": "v1", "status": "Success"})
    deployer.remove(found)
    httpserver.check_assertions()
    assert [(r.method, r.path) for r, _ in httpserver.log] == [
        ("GET", DEPLOYMENTS),
        ("GET", SERVICES),
        ("GET", DEPLOYMENTS),
        ("GET", SERVICES),
        ("DELETE", f"{DEPLOYMENTS}/{name}"),
        ("DELETE", f"{SERVICES}/{name}"),
    ]
