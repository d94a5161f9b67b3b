"""The record builder, from tables: (view, plan, observed, stable, verdict, now) → what a pass
writes. Pure, like the strategies: no database, no deployer, a fixed clock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from controller.records import plan_step
from controller.strategies.base import (
    Event,
    Outcome,
    Plan,
    PlanKind,
    Progress,
    Route,
    ScaleCandidate,
    ScaleStable,
    SlotState,
    Verdict,
)
from controller.strategies.steady import (
    plan_active,
    plan_failed,
    plan_observe,
    plan_retired,
)
from deployers.base import Instance, WorkloadStatus
from registry.rollout_spec import RolloutSpec
from registry.services.deployment_views import DeploymentView
from tests.support.deployment_views import NOW, view

SPEC = RolloutSpec(strategy="canary", replicas=2)
CANDIDATE_URL = "http://127.0.0.1:9001"
STABLE_URL = "http://127.0.0.1:9000"


def candidate(base: DeploymentView, **changes: Any) -> DeploymentView:
    return replace(base, **changes)


def status_of(
    dep: DeploymentView, *, url: str | None, replicas: int = 2, ready: int = 2
) -> WorkloadStatus:
    return WorkloadStatus(
        deployment_id=dep.id,
        version_id=dep.version.id,
        replicas=replicas,
        ready_replicas=ready,
        url=url,
        instances=(Instance(url=url, ready=ready >= replicas),) if url else (),
    )


def progress_of(dep: DeploymentView) -> Progress:
    return Progress(
        status=dep.status,
        step_index=dep.step_index,
        step_started_at=dep.step_started_at,
        weight=dep.traffic_weight,
        hold_since=dep.hold_since,
    )


STABLE = candidate(
    view("1.0"),
    status="Active",
    traffic_weight=90,
    endpoint=STABLE_URL,
    step_started_at=None,
)
ROLLOUT = candidate(view("2.0"), stable_deployment_id=STABLE.id)
ACTIVE = candidate(view("2.0"), status="Active", traffic_weight=0, step_started_at=None)
PASS = Verdict(Outcome.PASSED, "healthy", {"gates": [{"name": "error-rate", "outcome": "pass"}]})


@dataclass(frozen=True)
class Case:
    dep: DeploymentView
    plan: Plan
    observed: tuple[WorkloadStatus, ...] = ()
    stable: DeploymentView | None = None
    verdict: Verdict | None = None
    # What the record must say:
    status: str = ""
    weight: int = 0
    routes: list[tuple[str, int, str]] | None = None
    """(version, weight, role) of each route, or None: the routes are left as they are."""
    endpoint: str | None = None
    events: list[str] = field(default_factory=list)
    conditions: dict[str, str] = field(default_factory=dict)
    """type → status of the conditions that must be there."""
    grow: list[tuple[str, int, str]] = field(default_factory=list)
    shrink: list[tuple[str, int, str]] = field(default_factory=list)
    """(version, replicas, role) of the workloads applied before and after the record."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other Record fields and their values."""


def canary_step(weight: int, **changes: Any) -> Plan:
    return Plan(
        progress=replace(progress_of(ROLLOUT), weight=weight),
        actions=(ScaleCandidate(2), Route(weight)),
        **changes,
    )


CASES = {
    "a canary step splits the traffic between stable and canary": Case(
        ROLLOUT,
        canary_step(10, events=(Event("step", "10%"),)),
        observed=(status_of(ROLLOUT, url=CANDIDATE_URL), status_of(STABLE, url=STABLE_URL)),
        stable=STABLE,
        verdict=PASS,
        status="Deploying",
        weight=10,
        routes=[("1.0", 90, "stable"), ("2.0", 10, "canary")],
        endpoint=CANDIDATE_URL,
        events=["verdict", "step"],
        conditions={"Progressing": "True", "Ready": "True", "Analysis": "True"},
        grow=[("2.0", 2, "canary")],
    ),
    "a candidate that is not ready gets no traffic: all of it stays on stable": Case(
        ROLLOUT,
        canary_step(50),
        observed=(
            status_of(ROLLOUT, url=CANDIDATE_URL, ready=1),
            status_of(STABLE, url=STABLE_URL),
        ),
        stable=STABLE,
        status="Deploying",
        weight=50,
        routes=[("1.0", 100, "stable")],
        endpoint=CANDIDATE_URL,
        conditions={"Ready": "False"},
        grow=[("2.0", 2, "canary")],
    ),
    "the same routes as last recorded are not written again": Case(
        candidate(
            ROLLOUT,
            desired_state={
                "routes": [
                    {
                        "deploymentId": str(STABLE.id),
                        "modelVersionId": str(STABLE.version.id),
                        "versionNumber": "1.0",
                        "url": STABLE_URL,
                        "weight": 90,
                        "role": "stable",
                    },
                    {
                        "deploymentId": str(ROLLOUT.id),
                        "modelVersionId": str(ROLLOUT.version.id),
                        "versionNumber": "2.0",
                        "url": CANDIDATE_URL,
                        "weight": 10,
                        "role": "canary",
                    },
                ]
            },
        ),
        canary_step(10),
        observed=(status_of(ROLLOUT, url=CANDIDATE_URL), status_of(STABLE, url=STABLE_URL)),
        stable=STABLE,
        status="Deploying",
        weight=10,
        routes=None,
        endpoint=CANDIDATE_URL,
        grow=[("2.0", 2, "canary")],
    ),
    "a first rollout that is ready takes all the traffic, as the canary": Case(
        ROLLOUT,
        canary_step(10),
        observed=(status_of(ROLLOUT, url=CANDIDATE_URL),),
        status="Deploying",
        weight=10,
        routes=[("2.0", 100, "canary")],
        endpoint=CANDIDATE_URL,
        grow=[("2.0", 2, "canary")],
    ),
    "a blue-green preview is listed with no traffic, in the preview role": Case(
        ROLLOUT,
        Plan(
            progress=replace(progress_of(ROLLOUT), weight=0),
            actions=(ScaleCandidate(2), Route(0, preview=True)),
            candidate_role="preview",
        ),
        observed=(status_of(ROLLOUT, url=CANDIDATE_URL), status_of(STABLE, url=STABLE_URL)),
        stable=STABLE,
        status="Deploying",
        routes=[("1.0", 100, "stable"), ("2.0", 0, "preview")],
        endpoint=CANDIDATE_URL,
        grow=[("2.0", 2, "preview")],
    ),
    "a promotion routes everything to the candidate as stable, and retires the old one": Case(
        ROLLOUT,
        Plan(
            progress=replace(progress_of(ROLLOUT), status="Active", weight=100),
            actions=(ScaleCandidate(2), Route(100), ScaleStable(0)),
            events=(Event("promoted", "last step is 100%"),),
            retire_stable=timedelta(seconds=30),
        ),
        observed=(status_of(ROLLOUT, url=CANDIDATE_URL), status_of(STABLE, url=STABLE_URL)),
        stable=STABLE,
        status="Active",
        weight=100,
        routes=[("2.0", 100, "stable")],
        endpoint=CANDIDATE_URL,
        events=["promoted"],
        conditions={"Progressing": "False"},
        grow=[("2.0", 2, "canary")],
        shrink=[("1.0", 0, "stable")],
        extra={"retire_stable": timedelta(seconds=30)},
    ),
    "an Active deployment whose servers became ready takes all the traffic": Case(
        ACTIVE,
        plan_active(SPEC, progress_of(ACTIVE), action=None, now=NOW),
        observed=(status_of(ACTIVE, url=CANDIDATE_URL),),
        status="Active",
        weight=100,
        routes=[("2.0", 100, "stable")],
        endpoint=CANDIDATE_URL,
        conditions={"Ready": "True", "ReconcileError": "False"},
        grow=[("2.0", 2, "stable")],
        extra={"requeue_after": timedelta(seconds=5), "reason": None},
    ),
    "an Active deployment already routed writes no routes": Case(
        candidate(ACTIVE, endpoint=CANDIDATE_URL, traffic_weight=100),
        plan_active(SPEC, replace(progress_of(ACTIVE), weight=100), action=None, now=NOW),
        observed=(status_of(ACTIVE, url=CANDIDATE_URL),),
        status="Active",
        weight=100,
        routes=None,
        endpoint=CANDIDATE_URL,
        grow=[("2.0", 2, "stable")],
    ),
    "an Active deployment while a rollout replaces it is only observed": Case(
        ACTIVE,
        plan_observe(progress_of(ACTIVE)),
        observed=(status_of(ACTIVE, url=CANDIDATE_URL, ready=1),),
        status="Active",
        weight=0,
        routes=None,
        endpoint=None,
        conditions={"Ready": "False"},
    ),
    "an undeploy takes every route away and stops the servers after the record": Case(
        ACTIVE,
        plan_active(SPEC, progress_of(ACTIVE), action="undeploy", now=NOW),
        observed=(status_of(ACTIVE, url=CANDIDATE_URL),),
        status="Inactive",
        weight=0,
        routes=[],
        events=["undeployed"],
        shrink=[("2.0", 0, "stable")],
        extra={
            "desired_state": {"workloads": []},
            "scale_down_at": NOW,
            "consumed_request": True,
            "reason": "undeployed",
        },
    ),
    "a superseded deployment keeps its servers until its scale-down time": Case(
        candidate(ACTIVE, status="Inactive"),
        plan_retired(
            SPEC,
            replace(progress_of(ACTIVE), status="Inactive"),
            observed=None,
            scale_down_at=NOW + timedelta(minutes=1),
            now=NOW,
        ),
        status="Inactive",
        grow=[("2.0", 2, "stable")],
        extra={"finished": False, "requeue_after": timedelta(seconds=2)},
    ),
    "a retired deployment whose servers are gone is finished": Case(
        candidate(ACTIVE, status="RolledBack"),
        plan_retired(
            SPEC,
            replace(progress_of(ACTIVE), status="RolledBack"),
            observed=None,
            scale_down_at=None,
            now=NOW,
        ),
        status="RolledBack",
        extra={"finished": True},
    ),
    "a retired deployment past its scale-down time is stopped after the record": Case(
        candidate(ACTIVE, status="Inactive"),
        plan_retired(
            SPEC,
            replace(progress_of(ACTIVE), status="Inactive"),
            observed=SlotState(replicas=2, ready_replicas=2),
            scale_down_at=NOW - timedelta(seconds=1),
            now=NOW,
        ),
        observed=(status_of(ACTIVE, url=CANDIDATE_URL),),
        status="Inactive",
        endpoint=CANDIDATE_URL,
        shrink=[("2.0", 0, "stable")],
        extra={"finished": False},
    ),
    "a permanent error fails a rollout, with the reason": Case(
        ROLLOUT,
        plan_failed(progress_of(ROLLOUT), in_rollout=True, error="no deployer for target"),
        status="Failed",
        weight=0,
        events=["failed"],
        conditions={"Failed": "True"},
        extra={"reason": "no deployer for target", "routes": None},
    ),
    "a permanent error outside a rollout only says so": Case(
        candidate(ACTIVE, traffic_weight=100),
        plan_failed(replace(progress_of(ACTIVE), weight=100), in_rollout=False, error="bad target"),
        status="Active",
        weight=100,
        conditions={"Failed": "True"},
    ),
}


def routes_of(record: Any) -> list[tuple[str, int, str]] | None:
    if record.routes is None:
        return None
    return [(r.version_number, r.weight, str(r.role)) for r in record.routes]


def workloads_of(workloads: list[Any], names: dict[uuid.UUID, str]) -> list[tuple[str, int, str]]:
    return [(names[w.deployment_id], w.replicas, str(w.role)) for w in workloads]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_build_record(case: Case) -> None:
    observed = {s.deployment_id: s for s in case.observed}
    step = plan_step(
        case.dep,
        case.plan,
        observed=observed,
        stable=case.stable,
        verdict=case.verdict,
        now=NOW,
    )
    record = step.record
    assert record.status == case.status
    assert record.traffic_weight == case.weight
    assert routes_of(record) == case.routes
    assert record.endpoint == case.endpoint
    assert [kind for kind, _, _ in record.events] == case.events
    found = {c["type"]: c["status"] for c in record.conditions}
    assert {k: found.get(k) for k in case.conditions} == case.conditions
    names = {case.dep.id: case.dep.version.number}
    if case.stable is not None:
        names[case.stable.id] = case.stable.version.number
    assert workloads_of(step.grow, names) == case.grow
    assert workloads_of(step.shrink, names) == case.shrink
    for name, value in case.extra.items():
        assert getattr(record, name) == value, name


def test_a_verdict_already_recorded_is_not_recorded_again() -> None:
    observed = {
        s.deployment_id: s
        for s in (status_of(ROLLOUT, url=CANDIDATE_URL), status_of(STABLE, url=STABLE_URL))
    }
    first = plan_step(
        ROLLOUT, canary_step(10), observed=observed, stable=STABLE, verdict=PASS, now=NOW
    ).record
    again = plan_step(
        candidate(ROLLOUT, observed_state=first.observed_state),
        canary_step(10),
        observed=observed,
        stable=STABLE,
        verdict=PASS,
        now=NOW,
    ).record
    assert [kind for kind, _, _ in first.events] == ["verdict"]
    assert again.events == []


def test_a_steady_plan_is_of_kind_steady_and_records_the_row_progress() -> None:
    plan = plan_active(SPEC, progress_of(ACTIVE), action=None, now=NOW)
    assert plan.kind is PlanKind.STEADY
    assert plan.progress == progress_of(ACTIVE)
