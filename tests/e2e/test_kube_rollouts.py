"""Every strategy, through the controller and the Kubernetes deployer, on an in-memory cluster
(``FakeKubeApi``, a fake of our own wrapper), on SQLite and PostgreSQL.

What a user of ``target: kubernetes`` would check: the candidate's Deployment and Service
appear, the routing table and the cluster's HTTPRoute carry the same split at each step, the
deployment records its ``kubernetesDetails`` and Service URL, and the replaced version's
objects are deleted after ``scaleDownDelay``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from deployers.kubernetes import KubernetesDeployer
from registry.auth import Principal
from registry.services import Registry, build_registry
from registry.services.routing import current_routes
from registry.settings import Settings
from tests.support.fakes import FakeKubeApi, SteadyTraffic
from tests.support.helpers import pass_validation

T0 = datetime.now(UTC).replace(microsecond=0)
NS = "models"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        credentials_file=tmp_path / "credentials",
        kube_enabled=True,
        kube_router="gateway-api",
        kube_namespace=NS,
    )


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    reg = build_registry(settings)
    yield reg
    reg.close()


@pytest.fixture
def actor(registry: Registry) -> Principal:
    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    return registry.keys.authenticate(issued.token)


class Cluster:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.api = FakeKubeApi()
        self.registry = registry
        self.controller = Controller(
            registry.deployments,
            deployers={"kubernetes": KubernetesDeployer(self.api, settings=settings)},
            analysis=StepAnalysis(scrape=SteadyTraffic()),
            holder="kube-test",
        )
        self.clock = T0

    def run_until(
        self, dep_id: uuid.UUID, *statuses: str, passes: int = 40
    ) -> list[dict[str, int]]:
        """Passes (one second apart) until the deployment reaches a status; the weights seen."""
        seen: list[dict[str, int]] = []
        for _ in range(passes):
            self.clock += timedelta(seconds=1)
            result = self.controller.run_pass(now=self.clock)
            assert not result.errors, result.failures
            current = self.weights()
            if not seen or seen[-1] != current:
                seen.append(current)
            if self.registry.deployments.get(dep_id).status in statuses:
                return seen
        raise AssertionError(f"{self.registry.deployments.get(dep_id)} never reached {statuses}")

    def weights(self) -> dict[str, int]:
        with self.registry.sessions() as s:
            model_id = self.registry.models.get("text2img").id
            return {
                r.version_number: r.weight
                for r in current_routes(s, model_id=model_id, environment="production")
            }

    def httproute_weights(self) -> dict[str, int]:
        routes = [obj for (kind, _, _), obj in self.api.objects.items() if kind == "HTTPRoute"]
        assert len(routes) == 1
        backends = routes[0]["spec"]["rules"][0]["backendRefs"]
        return {b["name"]: b["weight"] for b in backends}

    def deployments(self) -> dict[str, int]:
        """Deployment name → replicas, in the fake cluster."""
        return {
            name: obj["spec"]["replicas"]
            for (kind, _, name), obj in self.api.objects.items()
            if kind == "Deployment"
        }


def deploy(
    registry: Registry, actor: Principal, number: str, strategy: str, **params: Any
) -> uuid.UUID:
    return registry.deployments.create(
        actor,
        model_name="text2img",
        version_number=number,
        environment="production",
        strategy=strategy,
        params=params,
        target="kubernetes",
    ).id


@pytest.fixture
def cluster(registry: Registry, settings: Settings, actor: Principal) -> Cluster:
    registry.models.create(actor, name="text2img", provider="Internal", task_type="ImageGeneration")
    for number in ("1.0", "2.0"):
        registry.versions.create(actor, "text2img", version_number=number)
        registry.versions.upload(actor, "text2img", number, [f"weights {number}".encode()])
    pass_validation(registry)
    return Cluster(registry, settings)


@pytest.mark.parametrize(
    ("strategy", "params", "middle"),
    [
        pytest.param(
            "canary",
            {"steps": [{"weight": 25, "pause": "3s"}, {"weight": 100}], "scaleDownDelay": "5s"},
            {"1.0": 75, "2.0": 25},
            id="canary",
        ),
        pytest.param(
            "blue_green",
            {"previewDuration": "3s", "scaleDownDelay": "5s"},
            {"1.0": 100, "2.0": 0},
            id="blue-green",
        ),
        pytest.param(
            "rolling_update",
            {"replicas": 2, "pause": "2s"},
            {"1.0": 50, "2.0": 50},
            id="rolling-update",
        ),
    ],
)
def test_every_strategy_rolls_out_on_kubernetes(
    cluster: Cluster,
    registry: Registry,
    actor: Principal,
    strategy: str,
    params: dict[str, Any],
    middle: dict[str, int],
) -> None:
    replicas = params.get("replicas", 1)
    first = deploy(registry, actor, "1.0", strategy, replicas=replicas)
    cluster.run_until(first, "Active")
    stable = registry.deployments.get(first)
    assert stable.endpoint is not None
    assert stable.endpoint.endswith(f".{NS}.svc.cluster.local:8080")
    details = stable.kubernetes_details or {}
    assert details["namespace"] == NS
    assert details["readyReplicas"] == replicas
    old_name = details["deployment"]
    assert cluster.httproute_weights() == {details["service"]: 100}

    second = deploy(registry, actor, "2.0", strategy, **params)
    seen = cluster.run_until(second, "Active")
    assert middle in seen, seen
    assert seen[-1] == {"2.0": 100}
    new = registry.deployments.get(second)
    new_details = new.kubernetes_details or {}
    assert cluster.httproute_weights() == {new_details["service"]: 100}
    assert new.endpoint == f"http://{new_details['service']}.{NS}.svc.cluster.local:8080"
    assert registry.deployments.get(first).status == "Inactive"
    cluster.run_until(second, "Active", passes=1)
    for _ in range(10):  # past scaleDownDelay: the old version's objects go
        cluster.clock += timedelta(seconds=1)
        cluster.controller.run_pass(now=cluster.clock)
    assert old_name not in cluster.deployments()
    assert cluster.deployments() == {new_details["deployment"]: replicas}
    assert registry.deployments.get(first).finished_at is not None


def test_a_candidate_past_its_progress_deadline_is_rolled_back(
    cluster: Cluster, registry: Registry, actor: Principal
) -> None:
    first = deploy(registry, actor, "1.0", "canary", steps=[{"weight": 100}])
    cluster.run_until(first, "Active")
    second = deploy(registry, actor, "2.0", "canary", steps=[{"weight": 50}, {"weight": 100}])
    cluster.controller.run_pass(now=cluster.clock + timedelta(seconds=1))  # creates it
    for name in cluster.deployments():
        if name != (registry.deployments.get(first).kubernetes_details or {}).get("deployment"):
            cluster.api.stuck.add(name)
    cluster.run_until(second, "RolledBack")
    rolled = next(e for e in registry.deployments.events(second) if e.kind == "rolled_back")
    assert "ProgressDeadlineExceeded" in (rolled.reason or "") or "timed out" in (
        rolled.reason or ""
    )
    assert cluster.weights() == {"1.0": 100}
