"""A pass records its outcomes in batches: one transaction per batch, the lease checked once in
it, routes written only when they change, and one failing deployment costing the others
nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from controller import reconcile
from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from deployers.base import Target, WorkloadStatus
from registry.auth import Principal
from registry.models import AIModelDeployment, ControllerLease, DeploymentEvent
from registry.services import Registry
from registry.services.deployments import DeploymentView
from registry.services.ledger import Record, RolloutLedger
from registry.services.routing import RouteEntry, current_routes, read_generation
from registry.types import utcnow
from tests.support.fakes import FakeDeployer, SteadyTraffic
from tests.support.helpers import pass_validation

T0 = datetime.now(UTC).replace(microsecond=0)
MODELS = [f"m{i}" for i in range(5)]


@pytest.fixture
def actor(registry: Registry, admin_token: str) -> Principal:
    return registry.keys.authenticate(admin_token)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "RECORD_BATCH", 2)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_controller(registry: Registry, deployer: FakeDeployer) -> Controller:
    return Controller(
        registry.deployments,
        deployers={"local": deployer},
        analysis=StepAnalysis(scrape=SteadyTraffic()),
        holder="test-1",
    )


def deploy_all(registry: Registry, actor: Principal) -> list[uuid.UUID]:
    """One model per name in MODELS, its version 1.0 deployed (Initiated), in that order."""
    ids = []
    for name in MODELS:
        registry.models.create(actor, name=name, provider="Internal", task_type="ImageGeneration")
        registry.versions.create(actor, name, version_number="1.0")
        registry.versions.upload(actor, name, "1.0", [b"weights"])
        pass_validation(registry)
        dep = registry.deployments.create(
            actor,
            model_name=name,
            version_number="1.0",
            environment="production",
            strategy="canary",
            params={},
        )
        ids.append(dep.id)
    return ids


def statuses(registry: Registry, ids: list[uuid.UUID]) -> list[str]:
    return [registry.deployments.get(i).status for i in ids]


def routed(registry: Registry) -> dict[str, list[str]]:
    with registry.sessions() as s:
        return {
            name: [
                r.url
                for r in current_routes(
                    s, model_id=registry.models.get(name).id, environment="production"
                )
            ]
            for name in MODELS
        }


def generation(registry: Registry) -> int:
    with registry.sessions() as s:
        return read_generation(s)


def event_count(registry: Registry) -> int:
    with registry.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(DeploymentEvent)) or 0)


def test_a_pass_records_in_batches_and_rewrites_no_route_that_did_not_change(
    registry: Registry, actor: Principal, small_batches: None
) -> None:
    ids = deploy_all(registry, actor)
    controller = make_controller(registry, FakeDeployer())
    assert controller.run_pass(now=at(0)).errors == 0
    assert statuses(registry, ids) == ["Deploying"] * 5
    before = generation(registry)
    assert controller.run_pass(now=at(1)).errors == 0
    assert statuses(registry, ids) == ["Active"] * 5
    assert all(len(urls) == 1 for urls in routed(registry).values()), routed(registry)
    # Five routing sets changed in three batches (2 + 2 + 1): one generation bump per batch.
    assert generation(registry) == before + 3
    events, gen, routes = event_count(registry), generation(registry), routed(registry)
    for now in (at(2), at(3)):
        assert controller.run_pass(now=now).errors == 0
    assert (event_count(registry), generation(registry), routed(registry)) == (
        events,
        gen,
        routes,
    ), "a steady pass writes no route, no event and bumps no generation"


def test_one_deployment_that_fails_to_record_costs_the_rest_of_its_batch_nothing(
    registry: Registry, actor: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = deploy_all(registry, actor)
    controller = make_controller(registry, FakeDeployer())
    bad = ids[2]
    record_one = RolloutLedger._record_one

    def fail_for_bad(
        self: RolloutLedger, s: Any, dep: Any, view: DeploymentView, *args: Any, **kwargs: Any
    ) -> bool:
        if view.id == bad:
            raise RuntimeError("boom")
        return record_one(self, s, dep, view, *args, **kwargs)

    # Not monkeypatch.undo(): that would also undo the conftest's T0 (near now).
    with monkeypatch.context() as patched:
        patched.setattr(RolloutLedger, "_record_one", fail_for_bad)
        result = controller.run_pass(now=at(0))
        assert result.errors == 1
        assert set(result.failures) == {str(bad)}
        assert "boom" in result.failures[str(bad)]
        assert statuses(registry, ids) == [
            "Deploying",
            "Deploying",
            "Initiated",
            "Deploying",
            "Deploying",
        ]
        failed = registry.deployments.get(bad)
        assert failed.retry_count == 1
        assert any(
            c["type"] == "ReconcileError" and c["status"] == "True" for c in failed.conditions
        )
    controller.run_pass(now=at(100))  # past the backoff
    assert registry.deployments.get(bad).status == "Deploying"


def test_a_record_that_fails_at_commit_is_isolated_and_the_others_written(
    registry: Registry, actor: Principal
) -> None:
    ids = deploy_all(registry, actor)
    controller = make_controller(registry, FakeDeployer())
    for now in (at(0), at(1)):
        controller.run_pass(now=now)
    views = [registry.deployments.get(i) for i in ids[:3]]
    before = routed(registry)

    def moved(view: DeploymentView, url: str, *, role: str = "stable") -> Record:
        entry = RouteEntry(
            deployment_id=view.id,
            model_version_id=view.version.id,
            version_number=view.version.number,
            url=url,
            weight=100,
            role=role,  # not a role: the route's INSERT fails its CHECK, at the commit
        )
        return Record(
            status=view.status,
            step_index=view.step_index,
            step_started_at=view.step_started_at,
            traffic_weight=100,
            hold_since=view.hold_since,
            reason="moved",
            conditions=view.conditions,
            observed_state=view.observed_state,
            desired_state=view.desired_state,
            endpoint=url,
            routes=[entry],
            events=[("note", "moved", {})],
        )

    done = registry.deployments.ledger.record_many(
        [
            (views[0], moved(views[0], "http://127.0.0.1:9990")),
            (views[1], moved(views[1], "http://127.0.0.1:9991", role="bogus")),
            (views[2], moved(views[2], "http://127.0.0.1:9992")),
        ],
        holder="test-1",
        now=at(2),
    )
    assert done.results[0] is True
    assert done.results[2] is True
    assert isinstance(done.results[1], IntegrityError)
    after = routed(registry)
    assert after["m0"] == ["http://127.0.0.1:9990"]
    assert after["m1"] == before["m1"], "the failing one's routes are as they were"
    assert after["m2"] == ["http://127.0.0.1:9992"]
    assert [e.kind for e in registry.deployments.events(ids[1])][-1] != "note"
    assert [e.kind for e in registry.deployments.events(ids[2])][-2:] == ["note", "traffic"]


def test_a_lost_lease_writes_nothing_of_a_batch(registry: Registry, actor: Principal) -> None:
    ids = deploy_all(registry, actor)
    views = registry.deployments.ledger.worklist(at(0))
    take_over(registry)
    records = [
        (
            v,
            Record(
                status="Deploying",
                step_index=0,
                step_started_at=None,
                traffic_weight=0,
                hold_since=None,
                reason=None,
                conditions=[],
                observed_state=None,
                desired_state=None,
                endpoint=None,
                events=[("deploying", "x", {})],
            ),
        )
        for v in views
    ]
    events = event_count(registry)
    done = registry.deployments.ledger.record_many(records, holder="test-1", now=at(0))
    assert done.lease_lost
    assert done.results == [False] * len(ids)
    assert statuses(registry, ids) == ["Initiated"] * 5
    assert event_count(registry) == events


def take_over(registry: Registry) -> None:
    """Another controller takes the lease (test-1's, if it held one, ran out)."""
    with registry.sessions.begin() as s:
        lease = s.get(ControllerLease, registry.deployments.leases.name)
        if lease is not None:
            lease.expires_at = utcnow() - timedelta(seconds=1)
    assert registry.deployments.leases.acquire("other", ttl=timedelta(seconds=60))


@dataclasses.dataclass
class StealsTheLease(FakeDeployer):
    """Another controller takes the lease while this one observes its third target."""

    registry: Registry | None = None
    observed: int = 0

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        self.observed += 1
        if self.observed == 3 and self.registry is not None:
            take_over(self.registry)
        return super().observe(target)


def test_a_lease_lost_between_batches_keeps_the_first_and_writes_nothing_after(
    registry: Registry, actor: Principal, small_batches: None
) -> None:
    ids = deploy_all(registry, actor)
    deployer = StealsTheLease(registry=registry)
    controller = make_controller(registry, deployer)
    result = controller.run_pass(now=at(0))
    assert result.leader, "it held the lease when the pass began"
    assert not controller.is_leader
    assert statuses(registry, ids) == [
        "Deploying",
        "Deploying",
        "Initiated",
        "Initiated",
        "Initiated",
    ]
    assert result.deployments == 4, "the pass stopped after the batch the lease was lost in"
    with registry.sessions() as s:
        rows = s.scalars(select(AIModelDeployment.status)).all()
    assert sorted(rows) == sorted(statuses(registry, ids))
