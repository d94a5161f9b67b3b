"""One controller pass: for each deployment, observe → plan → apply → record.

Deployments are grouped by target (one model in one environment on one kind of
infrastructure): the deployer observes each target once per pass, and its rollout (at most one)
is planned first, then its Active deployment, then retired ones whose servers must go.

Ordering keeps clients safe: workloads that grow are applied before the new routes are
recorded, and workloads that shrink only after, so the routing table never points at a server
that is not ready or already stopped for longer than one pass.

Errors stay with their deployment. A :class:`TemporaryError` (or anything unexpected) is
retried with exponential backoff and shown as a ``ReconcileError`` condition; a
:class:`PermanentError` fails the rollout, with the reason, and traffic goes back to stable.
An unreachable database is not a deployment's error: it ends the pass (nothing could be
recorded anyway), and the runner retries the next one with backoff. Every step is re-planned
from what the deployer observes, so a pass cut short is simply done again.

At most every ``sweep_every``, the lease holder also sweeps for orphans: workloads a deployer
runs that no deployment row owns (the row is gone, or it is retired and finished). The
deployers are listed first and the rows read after, by the ids found: a workload exists only
once its row did, so one of a deployment created after the pass read its worklist is seen as
owned and kept.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller import strategies
from controller.analysis import Analysis, StepAnalysis
from controller.strategies.base import (
    Observed,
    Outcome,
    Plan,
    Progress,
    Request,
    Route,
    ScaleCandidate,
    ScaleStable,
    SlotState,
    Verdict,
    roll_back,
)
from deployers.base import (
    ClusterRouter,
    Deployer,
    PermanentError,
    Target,
    TemporaryError,
    VersionRef,
    Workload,
    WorkloadStatus,
)
from registry import metrics
from registry.db import db_unavailable
from registry.rollout_spec import RolloutSpec, SpecError, parse_spec
from registry.services.deployments import (
    DeploymentService,
    DeploymentView,
    Record,
    condition,
    merge_conditions,
)
from registry.services.routing import RouteEntry
from registry.types import utcnow

log = logging.getLogger("modelreg.controller")

ACTIVE_REQUEUE = timedelta(seconds=5)
OUTCOME_EVENTS = ("promoted", "aborted", "rolled_back", "failed")
RETIRED_REQUEUE = timedelta(seconds=2)
SWEEP_EVERY = timedelta(seconds=30)
"""How often the lease holder looks for workloads that no deployment row owns."""
SWEEP_BATCH = 500
"""Deployment ids per query of the sweep (SQLite limits the parameters of one statement)."""


@dataclass
class PassResult:
    leader: bool
    deployments: int = 0
    errors: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    orphans_stopped: int = 0


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


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Controller:
    def __init__(
        self,
        deployments: DeploymentService,
        *,
        deployers: Mapping[str, Deployer],
        analysis: Analysis | None = None,
        holder: str | None = None,
        lease_ttl: timedelta = timedelta(seconds=15),
        sweep_every: timedelta = SWEEP_EVERY,
    ) -> None:
        self.deployments = deployments
        self.deployers = deployers
        self.analysis = analysis or StepAnalysis()
        self.holder = holder or default_holder()
        self.lease_ttl = lease_ttl
        self.is_leader = False
        self.sweep_every = sweep_every
        self._swept_at: datetime | None = None
        self._cluster_routes: dict[tuple[str, uuid.UUID, str], list[tuple[str, int]]] = {}

    # -- the pass ----------------------------------------------------------------------------

    def run_pass(self, now: datetime | None = None) -> PassResult:
        """One pass over every deployment, if this controller holds the lease."""
        started = time.perf_counter()
        leader = self.deployments.acquire_lease(self.holder, ttl=self.lease_ttl)
        if leader != self.is_leader:
            log.info(
                "controller %s %s",
                self.holder,
                "is the leader now" if leader else "is no longer the leader; standing by",
            )
            self.is_leader = leader
        result = PassResult(leader=leader)
        metrics.CONTROLLER_LEADER.set(1 if leader else 0)
        if not leader:
            return result
        now = now or utcnow()
        groups: dict[tuple[str, uuid.UUID, str], list[DeploymentView]] = defaultdict(list)
        for view in self.deployments.worklist(now):
            groups[(view.target, view.model_id, view.environment)].append(view)
        renew_every = self.lease_ttl.total_seconds() / 3
        renewed = time.monotonic()
        for views in groups.values():
            if time.monotonic() - renewed > renew_every:
                # A long pass keeps its lease; one that lost it stops (its writes would be
                # refused anyway) and leaves the rest to the new leader.
                if not self.deployments.acquire_lease(self.holder, ttl=self.lease_ttl):
                    log.warning("controller %s lost its lease during a pass", self.holder)
                    self.is_leader = False
                    break
                renewed = time.monotonic()
            result.deployments += len(views)
            self._reconcile_target(views, now=now, result=result)
        if self.is_leader and self._sweep_due(now):
            # Only the lease holder stops anything: make sure it still is one.
            if self.deployments.acquire_lease(self.holder, ttl=self.lease_ttl):
                result.orphans_stopped = self.sweep_orphans()
                self._swept_at = now
            else:
                log.warning("controller %s lost its lease during a pass", self.holder)
                self.is_leader = False
        result.seconds = time.perf_counter() - started
        metrics.CONTROLLER_PASS_DURATION.observe(result.seconds)
        return result

    def _sweep_due(self, now: datetime) -> bool:
        last = self._swept_at
        return last is None or now < last or now - last >= self.sweep_every

    def sweep_orphans(self) -> int:
        """Stop, and forget, every workload no deployment row owns; one log line each. Returns
        how many were stopped. Call it only while holding the lease."""
        stopped = 0
        for kind, deployer in self.deployers.items():
            try:
                found = deployer.owned()
            except Exception as exc:  # the next sweep tries again
                metrics.CONTROLLER_ERRORS.labels("temporary").inc()
                log.warning("orphan sweep: cannot list the %s workloads: %s", kind, exc)
                continue
            if not found:
                continue
            # The rows are read after the listing, never before: see the module docstring.
            ids = [w.deployment_id for w in found]
            rows = {
                v.id: v
                for start in range(0, len(ids), SWEEP_BATCH)
                for v in self.deployments.load(ids[start : start + SWEEP_BATCH])
            }
            for workload in found:
                why = orphaned_because(rows.get(workload.deployment_id), kind=kind)
                if why is None:
                    continue
                try:
                    deployer.remove(workload)
                except Exception as exc:
                    metrics.CONTROLLER_ERRORS.labels("temporary").inc()
                    log.warning(
                        "orphan sweep: cannot stop %s (%s): %s; the next sweep retries",
                        workload.describe(),
                        why,
                        exc,
                    )
                    continue
                stopped += 1
                log.warning("stopped orphaned workload %s, because %s", workload.describe(), why)
        return stopped

    def release(self) -> None:
        self.deployments.release_lease(self.holder)
        self.is_leader = False

    def stand_by(self) -> None:
        """The database cannot be reached: this controller cannot know whether it still holds
        the lease, so it acts as if it did not until a pass renews it."""
        self.is_leader = False
        metrics.CONTROLLER_LEADER.set(0)

    def _reconcile_target(
        self, views: list[DeploymentView], *, now: datetime, result: PassResult
    ) -> None:
        first = views[0]
        deployer = self.deployers.get(first.target)
        if deployer is None:
            for view in views:
                self._fail(view, f"no deployer for target {view.target!r}", now=now, result=result)
            return
        try:
            observed = deployer.observe(target_of(first))
        except Exception as exc:
            for view in views:
                self._retry(view, f"observe failed: {exc}", now=now, result=result)
            return
        rollouts = [v for v in views if v.in_rollout]
        actives = [v for v in views if v.status == "Active"]
        retired = [v for v in views if not v.in_rollout and v.status != "Active"]
        stable = actives[-1] if actives else None
        for view in rollouts[:1]:
            self._guarded(
                view,
                lambda v=view: self.reconcile_rollout(
                    v, stable=stable, observed=observed, deployer=deployer, now=now
                ),
                now=now,
                result=result,
                deployer=deployer,
                observed=observed,
                stable=stable,
            )
        if not rollouts:
            for view in actives:
                self._guarded(
                    view,
                    lambda v=view: self.reconcile_active(
                        v, observed=observed, deployer=deployer, now=now
                    ),
                    now=now,
                    result=result,
                )
        else:
            for view in actives:
                self._guarded(
                    view,
                    lambda v=view: self._observe_only(v, observed=observed, now=now),
                    now=now,
                    result=result,
                )
        for view in retired:
            self._guarded(
                view,
                lambda v=view: self.reconcile_retired(
                    v, observed=observed, deployer=deployer, now=now
                ),
                now=now,
                result=result,
            )
        if isinstance(deployer, ClusterRouter) and deployer.writes_routes:
            self._sync_cluster_routes(first, deployer=deployer, observed=observed)

    def _sync_cluster_routes(
        self,
        view: DeploymentView,
        *,
        deployer: ClusterRouter,
        observed: Mapping[uuid.UUID, WorkloadStatus],
    ) -> None:
        """Write the routing table's split into the cluster's router (an HTTPRoute, a
        VirtualService) for deployers that have one; only when it changed."""
        routes = self.deployments.routes(view.model_id, view.environment)
        backends = []
        for route in routes:
            status = observed.get(route.deployment_id)
            service = (status.details or {}).get("service") if status is not None else None
            if route.weight > 0 and service:
                backends.append((str(service), route.weight))
        key = (view.target, view.model_id, view.environment)
        if self._cluster_routes.get(key) == backends:
            return
        try:
            deployer.apply_routes(target_of(view), backends)
        except Exception as exc:  # the routing table stays right; retried on the next pass
            metrics.CONTROLLER_ERRORS.labels("temporary").inc()
            log.warning(
                "%s in %s: cannot write the cluster route: %s",
                view.model_name,
                view.environment,
                exc,
            )
            return
        self._cluster_routes[key] = backends
        log.info("%s in %s: cluster route now %s", view.model_name, view.environment, backends)

    def _guarded(
        self,
        view: DeploymentView,
        step: Any,
        *,
        now: datetime,
        result: PassResult,
        deployer: Deployer | None = None,
        observed: Mapping[uuid.UUID, WorkloadStatus] | None = None,
        stable: DeploymentView | None = None,
    ) -> None:
        try:
            step()
        except PermanentError as exc:
            result.errors += 1
            if deployer is not None and observed is not None and view.in_rollout:
                self._abandon(view, str(exc), stable=stable, observed=observed, deployer=deployer)
            else:
                self._fail(view, str(exc), now=now, result=result)
        except (TemporaryError, Exception) as exc:  # one deployment never stops the pass
            if db_unavailable(exc):
                raise  # ... but an unreachable database does: see the module docstring
            if not isinstance(exc, TemporaryError):
                metrics.CONTROLLER_ERRORS.labels("unexpected").inc()
                log.exception("deployment %s: unexpected error", view.id)
            self._retry(view, f"{type(exc).__name__}: {exc}", now=now, result=result)

    # -- a rollout ---------------------------------------------------------------------------

    def reconcile_rollout(
        self,
        view: DeploymentView,
        *,
        stable: DeploymentView | None,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        now: datetime,
    ) -> None:
        try:
            spec = parse_spec(view.strategy, view.params)
        except SpecError as exc:
            raise PermanentError(f"strategyParams: {exc}") from None
        candidate = observed.get(view.id)
        stable_spec = _spec_or_none(stable)
        seen = Observed(
            candidate=slot_state(candidate),
            has_stable=stable is not None,
            stable_replicas=stable_spec.replicas if stable_spec else 0,
        )
        verdict = self.analysis.judge(
            view,
            workload=candidate,
            now=now,
            stable=stable,
            stable_workload=observed.get(stable.id) if stable is not None else None,
        )
        action = (view.requested_action or {}).get("action")
        plan = strategies.plan(
            spec,
            observed=seen,
            progress=Progress(
                status=view.status,
                step_index=view.step_index,
                step_started_at=view.step_started_at,
                weight=view.traffic_weight,
                hold_since=view.hold_since,
            ),
            verdict=verdict,
            now=now,
            request=Request(
                paused=view.paused, action=action if action in ("promote", "abort") else None
            ),
        )
        self._carry_out(
            view,
            plan,
            spec=spec,
            stable=stable,
            observed=observed,
            deployer=deployer,
            verdict=verdict if view.status != "Initiated" else None,
            now=now,
        )

    def _carry_out(
        self,
        view: DeploymentView,
        plan: Plan,
        *,
        spec: RolloutSpec,
        stable: DeploymentView | None,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        verdict: Verdict | None,
        now: datetime,
    ) -> None:
        candidate = observed.get(view.id)
        stable_status = observed.get(stable.id) if stable else None
        role = "canary" if view.strategy != "blue_green" else "preview"
        workloads: list[Workload] = []
        route: Route | None = None
        for action in plan.actions:
            if isinstance(action, ScaleCandidate):
                workloads.append(
                    Workload(
                        deployment_id=view.id,
                        version=version_ref(view),
                        replicas=action.replicas,
                        role=role,
                        resources=spec.resources,
                    )
                )
            elif isinstance(action, ScaleStable) and stable is not None:
                stable_spec = _spec_or_none(stable)
                workloads.append(
                    Workload(
                        deployment_id=stable.id,
                        version=version_ref(stable),
                        replicas=action.replicas,
                        role="stable",
                        resources=stable_spec.resources if stable_spec else {},
                    )
                )
            elif isinstance(action, Route):
                route = action
        grow, shrink = _split(workloads, observed)
        if grow:
            deployer.apply(target_of(view), grow)
        routes = None
        if route is not None:
            routes = _routes(
                view,
                route,
                status=plan.progress.status,
                candidate_url=candidate.url if candidate is not None and candidate.ready else None,
                stable=stable,
                stable_url=(stable_status.url if stable_status else None)
                or (stable.endpoint if stable else None),
            )
        events = [(e.kind, e.reason, dict(e.details)) for e in plan.events]
        previous_signature = ((view.observed_state or {}).get("analysis") or {}).get("signature")
        conditions = [
            condition(
                "Progressing",
                plan.progress.status in ("Initiated", "Deploying"),
                plan.progress.status,
                plan.progress.reason or plan.progress.status,
                now,
            ),
            condition(
                "Ready",
                bool(candidate and candidate.ready),
                "Ready" if candidate and candidate.ready else "NotReady",
                _readiness(candidate),
                now,
            ),
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
            # Every change of verdict, or of any gate's outcome, goes into the ledger with
            # the gates' inputs (queries, values, thresholds, sample counts).
            if _verdict_signature(verdict) != previous_signature:
                events.insert(0, ("verdict", verdict.reason, verdict.to_dict()))
        desired: dict[str, Any] = {
            "workloads": [_workload_dict(w) for w in workloads],
            "route": {"weight": route.weight, "preview": route.preview} if route else None,
            "routes": [r.to_dict() for r in routes] if routes is not None else None,
        }
        recorded_routes = (view.desired_state or {}).get("routes")
        # The routes this deployment last wrote are in its desired state: rewriting the same
        # set would be a no-op, and skipping it keeps a steady pass free of writes.
        changed_routes = routes is not None and (
            desired["routes"] != recorded_routes or plan.progress.status != view.status
        )
        if routes is None and recorded_routes is not None:
            desired["routes"] = recorded_routes
        retire = None
        if plan.progress.status == "Active":
            retire = timedelta(0) if view.strategy == "rolling_update" else spec.scale_down_delay
        recorded = self.deployments.record(
            view,
            Record(
                status=plan.progress.status,
                step_index=plan.progress.step_index,
                step_started_at=plan.progress.step_started_at,
                traffic_weight=plan.progress.weight,
                hold_since=plan.progress.hold_since,
                reason=plan.progress.reason,
                conditions=merge_conditions(view.conditions, conditions),
                observed_state=_observed_state(observed, view, stable, verdict=verdict),
                desired_state=desired,
                endpoint=candidate.url if candidate else view.endpoint,
                routes=routes if changed_routes else None,
                events=events,
                consumed_request=plan.consumed,
                requeue_after=plan.requeue_after,
                retire_stable=retire,
                kubernetes_details=_kubernetes_details(view, candidate),
            ),
            holder=self.holder,
            now=now,
        )
        if recorded and shrink:
            try:
                deployer.apply(target_of(view), shrink)
            except Exception as exc:  # the routes no longer point there; the next pass retries
                log.warning("deployment %s: scaling down failed, will retry: %s", view.id, exc)
        if recorded:
            for kind, reason, _ in events:
                if kind in OUTCOME_EVENTS:
                    metrics.DEPLOYMENT_OUTCOMES.labels(
                        view.model_name, view.environment, view.strategy, kind
                    ).inc()
                if kind != "verdict":
                    log.info(
                        "%s %s in %s: %s: %s",
                        view.model_name,
                        view.version.number,
                        view.environment,
                        kind,
                        reason,
                    )

    def _abandon(
        self,
        view: DeploymentView,
        error: str,
        *,
        stable: DeploymentView | None,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
    ) -> None:
        """A permanent error in a rollout: traffic back to stable, the candidate stopped."""
        now = utcnow()
        metrics.CONTROLLER_ERRORS.labels("permanent").inc()
        log.error("deployment %s failed permanently: %s", view.id, error)
        spec = _spec_or_none(view) or RolloutSpec(strategy=view.strategy)
        plan = roll_back(
            Progress(status=view.status, step_index=view.step_index, weight=view.traffic_weight),
            observed=Observed(candidate=None, has_stable=stable is not None),
            kind="failed",
            reason=error,
        )
        try:
            self._carry_out(
                view,
                plan,
                spec=spec,
                stable=stable,
                observed=observed,
                deployer=deployer,
                verdict=None,
                now=now,
            )
        except Exception as exc:
            if db_unavailable(exc):
                raise
            log.exception("deployment %s: could not roll back", view.id)
            self._retry(view, f"rolling back after {error}: {exc}", now=now, result=None)

    # -- an Active deployment ------------------------------------------------------------------

    def reconcile_active(
        self,
        view: DeploymentView,
        *,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        now: datetime,
    ) -> None:
        spec = _spec_or_none(view) or RolloutSpec(strategy=view.strategy)
        if (view.requested_action or {}).get("action") == "undeploy":
            recorded = self.deployments.record(
                view,
                Record(
                    status="Inactive",
                    step_index=view.step_index,
                    step_started_at=view.step_started_at,
                    traffic_weight=0,
                    hold_since=None,
                    reason="undeployed",
                    conditions=view.conditions,
                    observed_state=view.observed_state,
                    desired_state={"workloads": []},
                    endpoint=view.endpoint,
                    routes=[],
                    events=[("undeployed", "undeployed by request", {})],
                    consumed_request=True,
                    scale_down_at=now,
                ),
                holder=self.holder,
                now=now,
            )
            if not recorded:  # the row changed, or the lease was lost: the next pass plans again
                return
            deployer.apply(target_of(view), [self._own_workload(view, spec, 0)])
            log.info(
                "%s %s undeployed from %s", view.model_name, view.version.number, view.environment
            )
            return
        deployer.apply(target_of(view), [self._own_workload(view, spec, spec.replicas)])
        status = observed.get(view.id)
        url = status.url if status is not None and status.ready else None
        routes = None
        if url is not None and (url != view.endpoint or view.traffic_weight != 100):
            routes = [
                RouteEntry(
                    deployment_id=view.id,
                    model_version_id=view.version.id,
                    version_number=view.version.number,
                    url=url,
                    weight=100,
                    role="stable",
                )
            ]
        self._record_steady(
            view,
            status=status,
            now=now,
            routes=routes,
            endpoint=url or view.endpoint,
            weight=100 if routes else view.traffic_weight,
            requeue=ACTIVE_REQUEUE,
            observed=observed,
        )

    def _observe_only(
        self, view: DeploymentView, *, observed: Mapping[uuid.UUID, WorkloadStatus], now: datetime
    ) -> None:
        """The Active deployment while a rollout owns its replicas and its route."""
        status = observed.get(view.id)
        url = status.url if status is not None and status.ready else None
        self._record_steady(
            view,
            status=status,
            now=now,
            routes=None,
            endpoint=url or view.endpoint,
            weight=view.traffic_weight,
            requeue=ACTIVE_REQUEUE,
            observed=observed,
        )

    def _record_steady(
        self,
        view: DeploymentView,
        *,
        status: WorkloadStatus | None,
        now: datetime,
        routes: list[RouteEntry] | None,
        endpoint: str | None,
        weight: int,
        requeue: timedelta,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        finished: bool = False,
    ) -> None:
        ready = bool(status and status.ready)
        conditions = merge_conditions(
            view.conditions,
            [
                condition(
                    "Ready", ready, "Ready" if ready else "NotReady", _readiness(status), now
                ),
                condition("ReconcileError", False, "None", "", now),
            ],
        )
        self.deployments.record(
            view,
            Record(
                status=view.status,
                step_index=view.step_index,
                step_started_at=view.step_started_at,
                traffic_weight=weight,
                hold_since=view.hold_since,
                reason=None,
                conditions=conditions,
                observed_state=_observed_state(observed, view, None),
                desired_state=view.desired_state,
                endpoint=endpoint,
                routes=routes,
                requeue_after=requeue,
                finished=finished,
                kubernetes_details=_kubernetes_details(view, status),
            ),
            holder=self.holder,
            now=now,
        )

    # -- retired deployments -------------------------------------------------------------------

    def reconcile_retired(
        self,
        view: DeploymentView,
        *,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        now: datetime,
    ) -> None:
        """Inactive ones keep their servers until ``scale_down_at`` (so a rollback is
        instant); then they, and rolled-back or failed candidates, are stopped."""
        spec = _spec_or_none(view) or RolloutSpec(strategy=view.strategy)
        keep = (
            view.status == "Inactive"
            and view.scale_down_at is not None
            and now < view.scale_down_at
        )
        status = observed.get(view.id)
        if not keep and status is None:
            self._record_steady(
                view,
                status=None,
                now=now,
                routes=None,
                endpoint=view.endpoint,
                weight=0,
                requeue=RETIRED_REQUEUE,
                observed=observed,
                finished=True,
            )
            log.info(
                "%s %s (%s, deployment %s): servers stopped",
                view.model_name,
                view.version.number,
                view.status,
                view.id,
            )
            return
        replicas = spec.replicas if keep else 0
        if keep and status is not None and status.replicas == 0:
            replicas = 0  # a rolling update already scaled it down
        deployer.apply(target_of(view), [self._own_workload(view, spec, replicas)])
        url = status.url if status is not None and status.ready else None
        self._record_steady(
            view,
            status=status,
            now=now,
            routes=None,
            endpoint=url or view.endpoint,
            weight=0,
            requeue=RETIRED_REQUEUE,
            observed=observed,
        )

    # -- errors ------------------------------------------------------------------------------

    def _retry(
        self, view: DeploymentView, error: str, *, now: datetime, result: PassResult | None
    ) -> None:
        metrics.CONTROLLER_ERRORS.labels("temporary").inc()
        if result is not None:
            result.errors += 1
            result.failures[str(view.id)] = error
        try:
            backoff = self.deployments.record_error(view, error=error, now=now, holder=self.holder)
        except Exception as exc:
            if db_unavailable(exc):
                raise
            log.exception("deployment %s: could not record the error %s", view.id, error)
            return
        log.warning(
            "deployment %s (%s %s): %s; retrying in %ss",
            view.id,
            view.model_name,
            view.version.number,
            error,
            backoff.total_seconds(),
        )

    def _fail(self, view: DeploymentView, error: str, *, now: datetime, result: PassResult) -> None:
        metrics.CONTROLLER_ERRORS.labels("permanent").inc()
        result.errors += 1
        result.failures[str(view.id)] = error
        log.error("deployment %s failed: %s", view.id, error)
        status = "Failed" if view.in_rollout else view.status
        self.deployments.record(
            view,
            Record(
                status=status,
                step_index=view.step_index,
                step_started_at=view.step_started_at,
                traffic_weight=0 if view.in_rollout else view.traffic_weight,
                hold_since=None,
                reason=error,
                conditions=merge_conditions(
                    view.conditions, [condition("Failed", True, "PermanentError", error, now)]
                ),
                observed_state=view.observed_state,
                desired_state=view.desired_state,
                endpoint=view.endpoint,
                events=[("failed", error, {})] if view.in_rollout else [],
            ),
            holder=self.holder,
            now=now,
        )

    def _own_workload(self, view: DeploymentView, spec: RolloutSpec, replicas: int) -> Workload:
        return Workload(
            deployment_id=view.id,
            version=version_ref(view),
            replicas=replicas,
            role="stable",
            resources=spec.resources,
        )


# -- helpers -----------------------------------------------------------------------------------


def orphaned_because(row: DeploymentView | None, *, kind: str) -> str | None:
    """Why no deployment row owns a workload that the deployer of target ``kind`` runs
    (``row`` is the one its deployment id names, if any), or ``None`` when a live row owns
    it."""
    if row is None:
        return "no deployment row has its id (the row is gone)"
    if row.finished_at is not None and not row.in_rollout and row.status != "Active":
        return (
            f"its deployment is {row.status} and finished at {row.finished_at.isoformat()} "
            "(its servers were due to stop then)"
        )
    if row.target != kind:
        return f"its deployment runs on target {row.target!r}, not {kind!r}"
    # A live row owns every workload of its id on its target, whatever model or environment
    # the workload's labels claim: removing by id would take the row's own servers too.
    return None


def _spec_or_none(view: DeploymentView | None) -> RolloutSpec | None:
    if view is None:
        return None
    try:
        return parse_spec(view.strategy, view.params)
    except SpecError:
        return None


def _split(
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


def _routes(
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
        routes.append(
            RouteEntry(
                deployment_id=stable.id,
                model_version_id=stable.version.id,
                version_number=stable.version.number,
                url=stable_url,
                weight=100 - weight,
                role="stable",
            )
        )
    if candidate_url is not None and (weight > 0 or route.preview):
        role = "stable" if status == "Active" else ("canary" if weight > 0 else "preview")
        routes.append(
            RouteEntry(
                deployment_id=view.id,
                model_version_id=view.version.id,
                version_number=view.version.number,
                url=candidate_url,
                weight=weight,
                role=role,
            )
        )
    return routes


def _readiness(status: WorkloadStatus | None) -> str:
    if status is None:
        return "no servers"
    if status.failure:
        return status.failure
    return f"{status.ready_replicas}/{status.replicas} replicas ready"


def _observed_state(
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
            "signature": _verdict_signature(verdict),
        }
        if verdict.details.get("baselines"):  # the gates' windows (see controller/analysis)
            state["analysis"]["baselines"] = verdict.details["baselines"]
    return state


def _kubernetes_details(
    view: DeploymentView, status: WorkloadStatus | None
) -> dict[str, Any] | None:
    """What the Kubernetes deployer reported, for the seed's ``kubernetesDetails``."""
    if view.target != "kubernetes" or status is None or not status.details:
        return None
    return dict(status.details)


def _verdict_signature(verdict: Verdict) -> str:
    gates = verdict.details.get("gates") or []
    parts = [verdict.outcome.value, *(f"{g['name']}={g['outcome']}" for g in gates)]
    return " ".join(parts)


def _workload_dict(w: Workload) -> dict[str, Any]:
    return {
        "deploymentId": str(w.deployment_id),
        "modelVersionId": str(w.version.id),
        "versionNumber": w.version.number,
        "replicas": w.replicas,
        "role": w.role,
    }
