"""End to end against a real cluster (kind or k3d): ``pytest -m kube``.

Skipped unless ``KUBECONFIG`` names a kubeconfig whose cluster answers. The model-server image
(``MODELREG_KUBE_IMAGE``) must be pullable by the cluster and the artifact store reachable from
it; ``MODELREG_KUBE_TEST_ARTIFACT_KEY`` and ``MODELREG_KUBE_TEST_SHA256`` name a stored ONNX
artifact. See docs/kubernetes.md.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployers.base import Target, TemporaryError, VersionRef, Workload
from deployers.kubernetes import KubernetesDeployer
from deployers.kubernetes.api import KubeApi
from registry.settings import Settings
from tests.deployer_contract import wait_for, wait_ready

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
