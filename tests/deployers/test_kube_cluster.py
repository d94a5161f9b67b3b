"""End to end against a real cluster (kind or k3d): ``pytest -m kube``.

Skipped unless ``KUBECONFIG`` names a kubeconfig whose cluster answers. The model-server image
(``MODELREG_KUBE_IMAGE``) must be pullable by the cluster and the artifact store reachable from
it; ``MODELREG_KUBE_TEST_ARTIFACT_KEY`` and ``MODELREG_KUBE_TEST_SHA256`` name a stored ONNX
artifact. See docs/kubernetes.md.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from deployers.base import Target, TemporaryError, VersionRef, Workload
from deployers.kubernetes import KubernetesDeployer
from deployers.kubernetes.api import KubeApi
from registry import migrate
from registry.services import build_registry
from registry.settings import Settings
from tests.support.deployer_contract import wait_for, wait_ready
from tests.support.helpers import pass_validation
from tests.support.onnx_models import add_model

pytestmark = pytest.mark.kube

READY_TIMEOUT = 300.0


def _skip_reason() -> str | None:
    config = os.environ.get("KUBECONFIG")
    if not config:
        return "KUBECONFIG is not set: no Kubernetes cluster to test against"
    if not Path(config.split(os.pathsep)[0]).is_file():
        return f"KUBECONFIG={config} is not a file"
    for name in ("MODELREG_KUBE_TEST_ARTIFACT_KEY", "MODELREG_KUBE_TEST_SHA256"):
        if not os.environ.get(name):
            return f"{name} is not set: no stored artifact for the cluster to serve"
    return None


@pytest.fixture
def kube() -> Iterator[KubeApi]:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    api = KubeApi.from_settings(Settings())
    try:
        api.list_deployments(Settings().kube_namespace, "app.kubernetes.io/managed-by=modelreg")
    except TemporaryError as exc:
        api.close()
        pytest.skip(f"the cluster in KUBECONFIG does not answer: {exc}")
    yield api
    api.close()


def test_a_workload_becomes_ready_and_scales_to_zero(kube: KubeApi) -> None:
    deployer = KubernetesDeployer(kube, settings=Settings())
    target = Target("kubernetes", "kube-e2e", uuid.uuid4(), "test")
    version = VersionRef(
        uuid.uuid4(),
        "1.0",
        "ONNX",
        sha256=os.environ["MODELREG_KUBE_TEST_SHA256"],
        artifact_key=os.environ["MODELREG_KUBE_TEST_ARTIFACT_KEY"],
    )
    workload = Workload(uuid.uuid4(), version, 1)
    try:
        deployer.apply(target, [workload])
        deployer.apply(target, [workload])  # a repeated apply is a no-op
        status = wait_ready(deployer, target, workload.deployment_id, timeout=READY_TIMEOUT)
        assert status.url is not None
        assert status.url.endswith(".svc.cluster.local:8080")
    finally:
        deployer.apply(target, [Workload(workload.deployment_id, version, 0)])
    wait_for(
        deployer,
        target,
        workload.deployment_id,
        timeout=60,
        until=lambda s: s is None,
        what="gone",
    )


def test_a_canary_rolls_out_on_the_cluster(kube: KubeApi, tmp_path: Path) -> None:
    """The controller, the Kubernetes deployer and a real cluster: v1, then a 50% canary of
    v2, promoted, and v1's objects deleted. Artifacts go to the store configured by MODELREG_*
    (an S3 the cluster's pods can reach)."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'kube-e2e.db'}", kube_enabled=True)
    if settings.storage != "s3":
        pytest.skip("MODELREG_STORAGE=s3 (a store the cluster's pods can reach) is needed")
    migrate.upgrade(settings.database_url)
    registry = build_registry(settings)
    deployer = KubernetesDeployer(kube, settings=settings)
    controller = Controller(
        registry.deployments,
        deployers={"kubernetes": deployer},
        analysis=StepAnalysis(),
        holder="kube-e2e",
    )
    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    actor = registry.keys.authenticate(issued.token)
    model = f"kube-e2e-{uuid.uuid4().hex[:6]}"
    registry.models.create(actor, name=model, provider="Internal", task_type="ImageGeneration")
    for number, constant in (("1.0", 1.0), ("2.0", 2.0)):
        registry.versions.create(actor, model, version_number=number)
        registry.versions.upload(actor, model, number, [add_model(constant=constant)])
    pass_validation(registry)
    ids: list[uuid.UUID] = []

    def deploy(number: str, steps: list[dict[str, object]]) -> uuid.UUID:
        dep = registry.deployments.create(
            actor,
            model_name=model,
            version_number=number,
            environment="staging",
            strategy="canary",
            params={"steps": steps, "scaleDownDelay": "0s", "analysis": {"gates": []}},
            target="kubernetes",
        )
        ids.append(dep.id)
        return dep.id

    def until(dep_id: uuid.UUID, status: str) -> list[int]:
        weights = []
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            controller.run_pass(now=datetime.now(UTC))
            view = registry.deployments.get(dep_id)
            weights.append(view.traffic_weight)
            if view.status == status:
                return weights
            assert view.status not in ("RolledBack", "Failed"), view
            time.sleep(2)
        raise AssertionError(f"{registry.deployments.get(dep_id)} never became {status}")

    try:
        first = deploy("1.0", [{"weight": 100}])
        until(first, "Active")
        old = (registry.deployments.get(first).kubernetes_details or {})["deployment"]
        canary = deploy("2.0", [{"weight": 50, "pause": "10s"}, {"weight": 100}])
        assert 50 in until(canary, "Active")
        details = registry.deployments.get(canary).kubernetes_details or {}
        assert details["namespace"] == settings.kube_namespace
        assert details["readyReplicas"] == 1
        for _ in range(5):  # scaleDownDelay 0s: the old version's objects go
            controller.run_pass(now=datetime.now(UTC) + timedelta(seconds=1))
        selector = "app.kubernetes.io/managed-by=modelreg"
        names = {
            d["metadata"]["name"] for d in kube.list_deployments(settings.kube_namespace, selector)
        }
        assert details["deployment"] in names
        assert old not in names
    finally:
        for dep_id in ids:
            view = registry.deployments.get(dep_id)
            ref = VersionRef(view.version.id, view.version.number, "ONNX", "0" * 64, "cleanup")
            deployer.apply(
                Target("kubernetes", model, view.model_id, "staging"), [Workload(dep_id, ref, 0)]
            )
        registry.close()
