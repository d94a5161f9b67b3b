"""What a pass writes for one deployment: the workloads a plan asks for, and the record.

Everything here is pure: :func:`build_record` turns (view, plan, observed, stable, verdict,
now) into the :class:`Record` the ledger writes, with the routing set, the conditions and the
observed and desired state. The reconcile step applies the workloads around it (growing ones
before the record, shrinking ones after).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.strategies.base import (
    Outcome,
    Plan,
    PlanKind,
    Route,
    ScaleCandidate,
    ScaleStable,
    SlotState,
    Verdict,
)
from deployers.base import Target, VersionRef, Workload, WorkloadStatus
from registry.conditions import condition, merge_conditions, merges_to_same
from registry.services.deployment_views import DeploymentView
from registry.services.outcomes import Record
from registry.services.routing import RouteEntry
from registry.vocabulary import ROLLING_OUT, DeploymentStatus, DeploymentTarget, RouteRole


@dataclass(frozen=True)
class Step:
    """One deployment's step of a pass: what to apply before recording, the record, and
    what to apply after it."""

    grow: list[Workload]
    record: Record
    shrink: list[Workload]


def plan_step(
    view: DeploymentView,
    plan: Plan,
    *,
    observed: Mapping[uuid.UUID, WorkloadStatus],
    stable: DeploymentView | None,
    verdict: Verdict | None,
    now: datetime,
) -> Step:
    """The workloads ``plan`` asks for, split into growing and shrinking ones, and the
    record that goes between them."""
    workloads = workloads_for(view, plan, stable=stable)
    grow, shrink = split(workloads, observed)
    record = build_record(
        view,
        plan,
        observed=observed,
        stable=stable,
        verdict=verdict,
        now=now,
        workloads=workloads,
    )
    return Step(grow=grow, record=record, shrink=shrink)


def build_record(
    view: DeploymentView,
    plan: Plan,
    *,
    observed: Mapping[uuid.UUID, WorkloadStatus],
    stable: DeploymentView | None,
    verdict: Verdict | None,
    now: datetime,
    workloads: Sequence[Workload] = (),
) -> Record:
    """The record of ``plan`` for ``view``."""
    if plan.kind is PlanKind.ROLLOUT:
        return _rollout_record(
            view,
            plan,
            observed=observed,
            stable=stable,
            verdict=verdict,
            now=now,
            workloads=workloads,
        )
    if plan.kind is PlanKind.STEADY:
        return _steady_record(view, plan, observed=observed, now=now)
    progress = plan.progress
    common: dict[str, Any] = {
        "status": progress.status,
        "step_index": progress.step_index,
        "step_started_at": progress.step_started_at,
        "traffic_weight": progress.weight,
        "hold_since": progress.hold_since,
        "reason": progress.reason,
        "observed_state": view.observed_state,
        "endpoint": view.endpoint,
        "events": _events(plan),
        "consumed_request": plan.consumed,
    }
    if plan.kind is PlanKind.UNDEPLOY:
        return Record(
            **common,
            conditions=view.conditions,
            desired_state={"workloads": []},
            routes=[],
            scale_down_at=plan.stop_servers_at,
        )
    failed = condition("Failed", True, "PermanentError", progress.reason or "", now)
    return Record(
        **common,
        conditions=merge_conditions(view.conditions, [failed]),
        desired_state=view.desired_state,
    )


def workloads_for(
    view: DeploymentView, plan: Plan, *, stable: DeploymentView | None
) -> list[Workload]:
    """The end states ``plan``'s scale actions describe, as the deployer's workloads."""
    workloads: list[Workload] = []
    for action in plan.actions:
        if isinstance(action, ScaleCandidate):
            workloads.append(
                Workload(
                    deployment_id=view.id,
                    version=version_ref(view),
                    replicas=action.replicas,
                    role=plan.candidate_role,
                    resources=view.spec_or_default().resources,
                )
            )
        elif isinstance(action, ScaleStable) and stable is not None:
            stable_spec = stable.spec
            workloads.append(
                Workload(
                    deployment_id=stable.id,
                    version=version_ref(stable),
                    replicas=action.replicas,
                    role=RouteRole.STABLE,
                    resources=stable_spec.resources if stable_spec else {},
                )
            )
    return workloads


def split(
    workloads: Sequence[Workload], observed: Mapping[uuid.UUID, WorkloadStatus]
) -> tuple[list[Workload], list[Workload]]:
    """Workloads that keep or grow their replicas, and those that shrink."""
    grow: list[Workload] = []
    shrink: list[Workload] = []
    for w in workloads:
        current = observed.get(w.deployment_id)
        if w.replicas == 0 or (current is not None and w.replicas < current.replicas):
            shrink.append(w)
        else:
            grow.append(w)
    return grow, shrink


def routes_for(
    view: DeploymentView,
    route: Route,
    *,
    status: str,
    candidate_url: str | None,
    stable: DeploymentView | None,
    stable_url: str | None,
) -> list[RouteEntry] | None:
    """The routing set for ``route``; None to leave the routes as they are.

    ``candidate_url`` is None while the candidate is not ready: its share then goes to the
    stable version until it is ready again, so clients are never sent to a dead server.
    """
    weight = route.weight if candidate_url is not None else 0
    if stable is None:
        if candidate_url is None or weight == 0:
            return None if candidate_url is None and route.weight > 0 else []
        weight = 100
    routes: list[RouteEntry] = []
    if stable is not None and weight < 100:
        if stable_url is None:
            return None
        routes.append(_entry(stable, url=stable_url, weight=100 - weight, role=RouteRole.STABLE))
    if candidate_url is not None and (weight > 0 or route.preview):
        if status == DeploymentStatus.ACTIVE:
            role = RouteRole.STABLE
        else:
            role = RouteRole.CANARY if weight > 0 else RouteRole.PREVIEW
        routes.append(_entry(view, url=candidate_url, weight=weight, role=role))
    return routes


def observed_state(
    observed: Mapping[uuid.UUID, WorkloadStatus],
    view: DeploymentView,
    stable: DeploymentView | None,
    *,
    verdict: Verdict | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    mine = observed.get(view.id)
    state["workload"] = mine.to_dict() if mine else None
    if stable is not None:
        theirs = observed.get(stable.id)
        state["stable"] = theirs.to_dict() if theirs else None
    if verdict is not None:
        state["analysis"] = {
            **dict(verdict.details.get("counters") or {}),
            "signature": verdict_signature(verdict),
        }
        if verdict.details.get("baselines"):  # the gates' windows (see controller/analysis)
            state["analysis"]["baselines"] = verdict.details["baselines"]
    return state


def verdict_signature(verdict: Verdict) -> str:
    gates = verdict.details.get("gates") or []
    parts = [verdict.outcome.value, *(f"{g['name']}={g['outcome']}" for g in gates)]
    return " ".join(parts)


def version_ref(view: DeploymentView) -> VersionRef:
    v = view.version
    return VersionRef(
        id=v.id,
        number=v.number,
        format=v.format,
        sha256=v.sha256,
        artifact_key=v.source_path,
        endpoint=v.endpoint,
        model_file=v.model_file,
    )


def target_of(view: DeploymentView) -> Target:
    return Target(
        kind=view.target,
        model=view.model_name,
        model_id=view.model_id,
        environment=view.environment,
    )


def slot_state(status: WorkloadStatus | None) -> SlotState | None:
    if status is None:
        return None
    return SlotState(
        replicas=status.replicas, ready_replicas=status.ready_replicas, failure=status.failure
    )


# -- the records of each kind of plan --------------------------------------------------------


def _rollout_record(
    view: DeploymentView,
    plan: Plan,
    *,
    observed: Mapping[uuid.UUID, WorkloadStatus],
    stable: DeploymentView | None,
    verdict: Verdict | None,
    now: datetime,
    workloads: Sequence[Workload],
) -> Record:
    progress = plan.progress
    candidate = observed.get(view.id)
    stable_status = observed.get(stable.id) if stable else None
    route = next((a for a in plan.actions if isinstance(a, Route)), None)
    routes = None
    if route is not None:
        routes = routes_for(
            view,
            route,
            status=progress.status,
            candidate_url=candidate.url if candidate is not None and candidate.ready else None,
            stable=stable,
            stable_url=(stable_status.url if stable_status else None)
            or (stable.endpoint if stable else None),
        )
    events = _events(plan)
    previous_signature = ((view.observed_state or {}).get("analysis") or {}).get("signature")
    ready = bool(candidate and candidate.ready)
    conditions = [
        condition(
            "Progressing",
            progress.status in ROLLING_OUT,
            progress.status,
            progress.reason or progress.status,
            now,
        ),
        condition("Ready", ready, "Ready" if ready else "NotReady", _readiness(candidate), now),
        condition("ReconcileError", False, "None", "", now),
    ]
    if verdict is not None:
        conditions.append(
            condition(
                "Analysis",
                verdict.outcome is Outcome.PASSED,
                verdict.outcome.value,
                verdict.reason,
                now,
            )
        )
        # Every change of verdict, or of any gate's outcome, goes into the ledger with the
        # gates' inputs (queries, values, thresholds, sample counts).
        if verdict_signature(verdict) != previous_signature:
            events.insert(0, ("verdict", verdict.reason, verdict.to_dict()))
    desired: dict[str, Any] = {
        "workloads": [_workload_dict(w) for w in workloads],
        "route": {"weight": route.weight, "preview": route.preview} if route else None,
        "routes": [r.to_dict() for r in routes] if routes is not None else None,
    }
    recorded_routes = (view.desired_state or {}).get("routes")
    # The routes this deployment last wrote are in its desired state: rewriting the same set
    # would be a no-op, and skipping it keeps a steady pass free of writes.
    changed_routes = routes is not None and (
        desired["routes"] != recorded_routes or progress.status != view.status
    )
    if routes is None and recorded_routes is not None:
        desired["routes"] = recorded_routes
    return Record(
        status=progress.status,
        step_index=progress.step_index,
        step_started_at=progress.step_started_at,
        traffic_weight=progress.weight,
        hold_since=progress.hold_since,
        reason=progress.reason,
        conditions=merge_conditions(view.conditions, conditions),
        observed_state=observed_state(observed, view, stable, verdict=verdict),
        desired_state=desired,
        endpoint=candidate.url if candidate else view.endpoint,
        routes=routes if changed_routes else None,
        events=events,
        consumed_request=plan.consumed,
        requeue_after=plan.requeue_after,
        retire_stable=plan.retire_stable if progress.status == DeploymentStatus.ACTIVE else None,
        kubernetes_details=_kubernetes_details(view, candidate),
    )


def _steady_record(
    view: DeploymentView,
    plan: Plan,
    *,
    observed: Mapping[uuid.UUID, WorkloadStatus],
    now: datetime,
) -> Record:
    """An Active or retired deployment: its readiness, and (Active) all the traffic on its
    servers once they are ready and not yet routed."""
    progress = plan.progress
    status = observed.get(view.id)
    url = status.url if status is not None and status.ready else None
    routes = None
    weight = progress.weight
    routed = any(isinstance(a, Route) for a in plan.actions)
    if routed and url is not None and (url != view.endpoint or view.traffic_weight != 100):
        routes = [_entry(view, url=url, weight=100, role=RouteRole.STABLE)]
        weight = 100
    ready = bool(status and status.ready)
    updates = [
        ("Ready", ready, "Ready" if ready else "NotReady", _readiness(status)),
        ("ReconcileError", False, "None", ""),
    ]
    if _observed_as_recorded(view, status) and merges_to_same(view.conditions, updates):
        # Nothing observed changed (most deployments of most passes): the conditions and the
        # observed state are the row's own, not built again only to be found equal to it.
        conditions, seen = view.conditions, view.observed_state
    else:
        conditions = merge_conditions(view.conditions, [condition(*u, now) for u in updates])
        seen = observed_state(observed, view, None)
    return Record(
        status=progress.status,
        step_index=progress.step_index,
        step_started_at=progress.step_started_at,
        traffic_weight=weight,
        hold_since=progress.hold_since,
        reason=progress.reason,
        conditions=conditions,
        observed_state=seen,
        desired_state=view.desired_state,
        endpoint=url or view.endpoint,
        routes=routes,
        requeue_after=plan.requeue_after,
        finished=plan.finished,
        kubernetes_details=_kubernetes_details(view, status),
    )


def _observed_as_recorded(view: DeploymentView, status: WorkloadStatus | None) -> bool:
    """Whether ``observed_state(observed, view, None)`` equals the row's observed state."""
    recorded = view.observed_state
    if not isinstance(recorded, dict) or len(recorded) != 1 or "workload" not in recorded:
        return False
    workload = recorded["workload"]
    return workload is None if status is None else status.same_as(workload)


def _events(plan: Plan) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.kind, e.reason, dict(e.details)) for e in plan.events]


def _entry(view: DeploymentView, *, url: str, weight: int, role: RouteRole) -> RouteEntry:
    return RouteEntry(
        deployment_id=view.id,
        model_version_id=view.version.id,
        version_number=view.version.number,
        url=url,
        weight=weight,
        role=role,
    )


def _readiness(status: WorkloadStatus | None) -> str:
    if status is None:
        return "no servers"
    if status.failure:
        return status.failure
    return f"{status.ready_replicas}/{status.replicas} replicas ready"


def _kubernetes_details(
    view: DeploymentView, status: WorkloadStatus | None
) -> dict[str, Any] | None:
    """What the Kubernetes deployer reported, for the seed's ``kubernetesDetails``."""
    if view.target != DeploymentTarget.KUBERNETES or status is None or not status.details:
        return None
    return dict(status.details)


def _workload_dict(w: Workload) -> dict[str, Any]:
    return {
        "deploymentId": str(w.deployment_id),
        "modelVersionId": str(w.version.id),
        "versionNumber": w.version.number,
        "replicas": w.replicas,
        "role": w.role,
    }
