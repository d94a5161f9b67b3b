"""The deployer contract, run by the Kubernetes deployer against an in-memory cluster.

``FakeKubeApi`` is a fake of our own ``KubeApi`` wrapper: it keeps applied objects, selects on
labels as the API server does, bumps a Deployment's ``generation`` when its spec changes, and
makes its pods ready over ticks (every ``list_deployments`` call is one tick).
"""

from __future__ import annotations

import copy
import uuid

import pytest

from deployers.base import PermanentError, Target, VersionRef, Workload
from deployers.kubernetes import KubernetesDeployer
from tests.support.deployer_contract import DeployerContract, wait_for, wait_ready
from tests.support.fakes import FakeKubeApi
from tests.support.kube_settings import make_settings

SHA = "ab" * 32


def make_version(number: str) -> VersionRef:
    version_id = uuid.uuid4()
    return VersionRef(
        id=version_id,
        number=number,
        format="ONNX",
        sha256=SHA,
        artifact_key=f"models/m/versions/{version_id}/model.onnx",
    )


@pytest.fixture
def fake_api() -> FakeKubeApi:
    return FakeKubeApi()


class TestKubernetesDeployer(DeployerContract):
    target_kind = "kubernetes"

    @pytest.fixture
    def deployer(self, fake_api: FakeKubeApi) -> KubernetesDeployer:
        return KubernetesDeployer(fake_api, settings=make_settings())

    @pytest.fixture
    def versions(self) -> list[VersionRef]:
        return [make_version("1.0"), make_version("2.0")]

    def test_the_url_is_the_service_of_the_workload(
        self, deployer: KubernetesDeployer, target: Target, versions: list[VersionRef]
    ) -> None:
        canary = Workload(uuid.uuid4(), versions[1], 1, "canary")
        deployer.apply(target, [canary])
        status = wait_ready(deployer, target, canary.deployment_id)
        name = deployer.service_name(target, canary)
        assert name.startswith("m-test-canary-")
        assert status.url == f"http://{name}.models.svc.cluster.local:8080"
        assert [i.url for i in status.instances] == [status.url]

    def test_a_progress_deadline_is_a_failure_with_the_reason(
        self,
        deployer: KubernetesDeployer,
        fake_api: FakeKubeApi,
        target: Target,
        versions: list[VersionRef],
    ) -> None:
        workload = Workload(uuid.uuid4(), versions[0], 1)
        fake_api.stuck.add(deployer.service_name(target, workload))
        deployer.apply(target, [workload])
        failed = wait_for(
            deployer,
            target,
            workload.deployment_id,
            timeout=5,
            until=lambda s: s is not None and s.failure is not None,
            what="failed",
        )
        assert failed is not None
        assert failed.failure is not None
        assert failed.failure.startswith("ProgressDeadlineExceeded: ReplicaSet")
        assert not failed.ready

    def test_an_api_version_runs_no_pods(
        self, deployer: KubernetesDeployer, fake_api: FakeKubeApi, target: Target
    ) -> None:
        endpoint = "https://models.example.com/v2/models/m"
        version = VersionRef(id=uuid.uuid4(), number="5.0", format="API", endpoint=endpoint)
        deployment = uuid.uuid4()
        deployer.apply(target, [Workload(deployment, version, 2)])
        status = deployer.observe(target)[deployment]
        assert status.ready
        assert status.url == endpoint
        assert status.replicas == status.ready_replicas == 2
        assert status.instances == ()
        assert [k for k in fake_api.objects if k[0] == "Deployment"] == []
        (service,) = fake_api.objects.values()
        assert service["spec"] == {
            "type": "ExternalName",
            "externalName": "models.example.com",
            "ports": [{"name": "http", "port": 443, "protocol": "TCP"}],
        }
        deployer.apply(target, [Workload(deployment, version, 0)])
        assert deployer.observe(target) == {}
        assert fake_api.objects == {}

    def test_objects_without_our_labels_are_never_selected(
        self,
        deployer: KubernetesDeployer,
        fake_api: FakeKubeApi,
        target: Target,
        versions: list[VersionRef],
    ) -> None:
        mine = Workload(uuid.uuid4(), versions[0], 1)
        deployer.apply(target, [mine])
        name = deployer.service_name(target, mine)
        theirs = copy.deepcopy(fake_api.objects[("Deployment", "models", name)])
        theirs["metadata"]["name"] = "hand-made"
        del theirs["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        fake_api.objects[("Deployment", "models", "hand-made")] = theirs
        assert set(deployer.observe(target)) == {mine.deployment_id}
        selectors = {c[3] for c in fake_api.calls if c[0] == "list"}
        for selector in selectors:
            assert "app.kubernetes.io/managed-by=modelreg" in selector
            assert f"modelreg.io/model-id={target.model_id}" in selector
        deployer.apply(target, [Workload(mine.deployment_id, versions[0], 0)])
        assert ("Deployment", "models", "hand-made") in fake_api.objects

    def test_owned_lists_only_our_workloads_and_remove_deletes_only_theirs(
        self,
        fake_api: FakeKubeApi,
        target: Target,
        versions: list[VersionRef],
    ) -> None:
        deployer = KubernetesDeployer(fake_api, settings=make_settings(kube_router="istio"))
        endpoint = VersionRef(uuid.uuid4(), "9.0", "API", endpoint="https://api.example.com/m")
        mine, api_version = (
            Workload(uuid.uuid4(), versions[0], 1),
            Workload(uuid.uuid4(), endpoint, 1),
        )
        deployer.apply(target, [mine, api_version])
        name = deployer.service_name(target, mine)
        deployer.apply_routes(target, [(name, 100)])
        # Someone copies our Deployment by hand, labels and all, but not managed-by.
        theirs = copy.deepcopy(fake_api.objects[("Deployment", "models", name)])
        theirs["metadata"]["name"] = "hand-made"
        del theirs["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        fake_api.objects[("Deployment", "models", "hand-made")] = theirs
        owned = {w.deployment_id: w for w in deployer.owned()}
        assert set(owned) == {mine.deployment_id, api_version.deployment_id}
        assert owned[mine.deployment_id].parts == (
            f"Deployment {name}, Service {name} in namespace models"
        )
        assert owned[mine.deployment_id].target == target
        assert owned[api_version.deployment_id].version_number == "9.0"
        deployer.remove(owned[mine.deployment_id])
        deployer.remove(owned[api_version.deployment_id])
        assert deployer.owned() == []
        left = {(kind, name) for kind, _, name in fake_api.objects}
        router = f"m-{target.environment}"
        assert left == {
            ("Deployment", "hand-made"),
            ("Service", router),
            ("VirtualService", router),
        }, "the hand-made Deployment and the model's router are not workloads"

    def test_a_promoted_canary_keeps_its_objects(
        self,
        deployer: KubernetesDeployer,
        fake_api: FakeKubeApi,
        target: Target,
        versions: list[VersionRef],
    ) -> None:
        canary = Workload(uuid.uuid4(), versions[1], 1, "canary")
        deployer.apply(target, [canary])
        before = wait_ready(deployer, target, canary.deployment_id)
        promoted = Workload(canary.deployment_id, versions[1], 1, "stable")
        deployer.apply(target, [promoted])
        after = deployer.observe(target)[canary.deployment_id]
        assert after.ready
        assert after.url == before.url
        assert (
            sorted(name for _, _, name in fake_api.objects)
            == [deployer.service_name(target, canary)] * 2
        )
        deployment = next(iter(fake_api.objects.values()))
        assert deployment["metadata"]["labels"]["modelreg.io/slot"] == "stable"

    @pytest.mark.parametrize(
        ("version", "needle"),
        [
            pytest.param(
                VersionRef(id=uuid.uuid4(), number="6.0", format="ONNX"),
                "no stored artifact",
                id="no-artifact",
            ),
            pytest.param(
                VersionRef(id=uuid.uuid4(), number="6.0", format="API"),
                "no endpoint",
                id="api-without-endpoint",
            ),
        ],
    )
    def test_a_version_that_cannot_run_is_refused(
        self,
        deployer: KubernetesDeployer,
        fake_api: FakeKubeApi,
        target: Target,
        versions: list[VersionRef],
        version: VersionRef,
        needle: str,
    ) -> None:
        runnable = Workload(uuid.uuid4(), versions[0], 1)
        with pytest.raises(PermanentError, match=needle):
            deployer.apply(target, [runnable, Workload(uuid.uuid4(), version, 1)])
        assert fake_api.objects == {}


@pytest.mark.parametrize("router", ["gateway-api", "istio"])
def test_apply_routes_writes_the_split_and_removes_it(router: str) -> None:
    api = FakeKubeApi()
    deployer = KubernetesDeployer(api, settings=make_settings(kube_router=router))
    target = Target("kubernetes", "m", uuid.uuid4(), "production")
    stable = Workload(uuid.uuid4(), make_version("1.0"), 2)
    canary = Workload(uuid.uuid4(), make_version("2.0"), 1, "canary")
    backends = [
        (deployer.service_name(target, stable), 90),
        (deployer.service_name(target, canary), 10),
    ]
    deployer.apply_routes(target, backends)
    deployer.apply_routes(target, backends)  # idempotent
    kinds = sorted(kind for kind, _, _ in api.objects)
    if router == "gateway-api":
        assert kinds == ["HTTPRoute"]
        route = api.objects[("HTTPRoute", "models", "m-production")]
        refs = route["spec"]["rules"][0]["backendRefs"]
        assert [(r["name"], r["weight"]) for r in refs] == backends
    else:
        assert kinds == ["Service", "VirtualService"]
        vs = api.objects[("VirtualService", "models", "m-production")]
        routes = vs["spec"]["http"][0]["route"]
        assert [(r["destination"]["host"].split(".")[0], r["weight"]) for r in routes] == backends
    deployer.apply_routes(target, [])
    assert api.objects == {}


def test_apply_routes_does_nothing_without_a_router() -> None:
    api = FakeKubeApi()
    deployer = KubernetesDeployer(api, settings=make_settings())
    deployer.apply_routes(Target("kubernetes", "m", uuid.uuid4(), "production"), [("x", 100)])
    assert api.calls == []
