"""The plans of deployments that are not rolling out: pure, like the strategies.

- An Active deployment keeps its replicas and, once its servers are ready, all the traffic
  (:func:`plan_active`); while a rollout replaces it, the rollout owns its replicas and its
  route, and it is only observed (:func:`plan_observe`).
- An undeploy request takes it out of service (:func:`plan_undeploy`).
- A retired deployment (Inactive, RolledBack, Failed) keeps its servers until its
  ``scale_down_at`` (an Inactive one, so that a rollback is instant), then stops them
  (:func:`plan_retired`).
- A permanent error outside a rollout step fails a rollout, and only says so on any other
  deployment (:func:`plan_failed`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from controller.strategies.base import (
    Event,
    Plan,
    PlanKind,
    Progress,
    RolloutSpec,
    Route,
    ScaleCandidate,
    SlotState,
)
from registry.vocabulary import DeploymentStatus, RouteRole

#: How often an Active deployment is looked at when nothing happens.
ACTIVE_REQUEUE = timedelta(seconds=5)
#: How often a retired one is, until its servers are gone.
RETIRED_REQUEUE = timedelta(seconds=2)


def plan_active(
    spec: RolloutSpec, progress: Progress, *, action: str | None, now: datetime
) -> Plan:
    """Keep the spec's replicas running and route all the traffic to them once ready."""
    if action == "undeploy":
        return plan_undeploy(progress, now=now)
    return Plan(
        progress=progress,
        actions=(ScaleCandidate(spec.replicas), Route(100)),
        requeue_after=ACTIVE_REQUEUE,
        kind=PlanKind.STEADY,
        candidate_role=RouteRole.STABLE,
    )


def plan_observe(progress: Progress) -> Plan:
    """The Active deployment while a rollout owns its replicas and its route: record what is
    observed, change nothing."""
    return Plan(
        progress=progress,
        requeue_after=ACTIVE_REQUEUE,
        kind=PlanKind.STEADY,
        candidate_role=RouteRole.STABLE,
    )


def plan_undeploy(progress: Progress, *, now: datetime) -> Plan:
    """Out of service: no routes, and the servers stop once that is recorded."""
    return Plan(
        progress=replace(
            progress,
            status=DeploymentStatus.INACTIVE,
            weight=0,
            hold_since=None,
            reason="undeployed",
        ),
        actions=(Route(0), ScaleCandidate(0)),
        events=(Event("undeployed", "undeployed by request"),),
        consumed=True,
        kind=PlanKind.UNDEPLOY,
        candidate_role=RouteRole.STABLE,
        stop_servers_at=now,
    )


def plan_retired(
    spec: RolloutSpec,
    progress: Progress,
    *,
    observed: SlotState | None,
    scale_down_at: datetime | None,
    now: datetime,
) -> Plan:
    """Inactive deployments keep their servers until ``scale_down_at`` (so a rollback is
    instant); then they, and rolled-back or failed candidates, are stopped. Once none runs,
    the deployment is finished."""
    keep = (
        progress.status == DeploymentStatus.INACTIVE
        and scale_down_at is not None
        and now < scale_down_at
    )
    steady = Plan(
        progress=replace(progress, weight=0, reason=None),
        requeue_after=RETIRED_REQUEUE,
        kind=PlanKind.STEADY,
        candidate_role=RouteRole.STABLE,
    )
    if not keep and observed is None:
        return replace(steady, finished=True)
    replicas = spec.replicas if keep else 0
    if keep and observed is not None and observed.replicas == 0:
        replicas = 0  # a rolling update already scaled it down
    return replace(steady, actions=(ScaleCandidate(replicas),))


def plan_failed(progress: Progress, *, in_rollout: bool, error: str) -> Plan:
    """A permanent error: a rollout fails (no traffic); any other deployment keeps its status
    and says why in a ``Failed`` condition."""
    return Plan(
        progress=replace(
            progress,
            status=DeploymentStatus.FAILED if in_rollout else progress.status,
            weight=0 if in_rollout else progress.weight,
            hold_since=None,
            reason=error,
        ),
        events=(Event("failed", error),) if in_rollout else (),
        kind=PlanKind.FAILED,
    )
