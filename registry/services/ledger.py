"""The rollout ledger: every change of a deployment's status, and so of what serves, is written
here, in one transaction with the routing table and the deployment events that explain it.

The controller reads its worklist from the ledger and records its passes' outcomes, a batch
per transaction (:meth:`RolloutLedger.record_many`); the API leaves requests on a row
(:meth:`RolloutLedger.ask`) and, for an instant rollback, switches traffic back
(:meth:`RolloutLedger.switch_back`). A record refuses to write over a row that changed since
it was read, and one that would make a candidate Active runs the deployability check first:
only a version that passes it ever takes all the traffic.

Where each transition happens:

======================  =============================================  ===================
from → to               why                                            where
======================  =============================================  ===================
Initiated → Deploying   the candidate's servers start                  :meth:`record`
Deploying → Active      promoted (a strategy's plan, or a request)     :meth:`record`
Active → Inactive       superseded by the promoted candidate           :meth:`_promoted`
Active → Inactive       undeployed (a request)                         :meth:`record`
Deploying → RolledBack  a failed verdict, a crash, an abort            :meth:`record`
Deploying → Failed      the same with no stable version; a permanent   :meth:`record`
                        error
Inactive → Active       an instant rollback (its servers still run)    :meth:`switch_back`
Active → Inactive       ... the version rolled back from               :meth:`switch_back`
======================  =============================================  ===================
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from registry.conditions import condition, merge_conditions
from registry.db import db_unavailable, lock_row, lock_rows
from registry.errors import NotFound
from registry.models import AIModelDeployment, AIModelVersion
from registry.rollout_spec import RolloutSpec, SpecError, parse_spec
from registry.services import audit
from registry.services.deployability import assess_deployability
from registry.services.deployment_views import DeploymentView, load_views
from registry.services.leases import LeaseService
from registry.services.outcomes import Record, Recorded
from registry.services.routing import RouteEntry, RouteWrites, add_event_row, set_routes
from registry.types import utcnow
from registry.vocabulary import (
    RETIRED,
    ROLLING_OUT,
    DeploymentStatus,
    Environment,
    RouteRole,
    Strategy,
    VersionStatus,
)

log = logging.getLogger("registry.services.deployments")

CONTROLLER = "controller"
MAX_BACKOFF = timedelta(seconds=60)


class RolloutLedger:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        leases: LeaseService,
        on_routes_changed: Callable[[str], None] | None = None,
    ) -> None:
        """``on_routes_changed(model_name)`` runs after a commit that changed routes (the
        endpoint cache of this process drops that model at once)."""
        self.sessions = sessions
        self.leases = leases
        self.on_routes_changed = on_routes_changed

    def routes_changed(self, model_name: str) -> None:
        if self.on_routes_changed is not None:
            self.on_routes_changed(model_name)

    # -- the controller's side ---------------------------------------------------------------

    def worklist(self, now: datetime) -> list[DeploymentView]:
        """Every deployment a controller pass must look at: rollouts, Active ones (to keep
        them healthy) and retired ones whose servers are not yet gone."""
        with self.sessions() as s:
            return load_views(
                s,
                or_(
                    AIModelDeployment.status.in_((*ROLLING_OUT, DeploymentStatus.ACTIVE)),
                    and_(
                        AIModelDeployment.status.in_(RETIRED),
                        AIModelDeployment.finished_at.is_(None),
                    ),
                ),
                # ``next_reconcile_at`` holds a deployment back only while it backs off
                # after errors; otherwise every pass looks at it (they are cheap).
                or_(
                    AIModelDeployment.retry_count == 0,
                    AIModelDeployment.next_reconcile_at.is_(None),
                    AIModelDeployment.next_reconcile_at <= now,
                ),
            )

    def waiting(self) -> frozenset[tuple[uuid.UUID, str]]:
        """What waits for the controller's next pass: ``(id, action)`` of each deployment with
        a request pending (promote, abort, undeploy, ...), and ``(id, "Initiated")`` of each
        new one. One read, a scan of the deployments (the runner polls it between passes, so
        that a request need not wait out the interval)."""
        action = AIModelDeployment.requested_action["action"].as_string()
        with self.sessions() as s:
            rows = s.execute(
                select(AIModelDeployment.id, action, AIModelDeployment.status).where(
                    or_(
                        action.is_not(None),
                        AIModelDeployment.status == DeploymentStatus.INITIATED,
                    )
                )
            )
            return frozenset((row[0], row[1] or row[2]) for row in rows)

    def record(
        self,
        view: DeploymentView,
        outcome: Record,
        *,
        holder: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Write one pass's outcome for one deployment (:meth:`record_many` of one); an error
        writing it is raised."""
        result = self.record_many([(view, outcome)], holder=holder, now=now).results[0]
        if isinstance(result, Exception):
            raise result
        return result

    def record_many(
        self,
        items: Sequence[tuple[DeploymentView, Record]],
        *,
        holder: str | None = None,
        now: datetime | None = None,
    ) -> Recorded:
        """Write a pass's outcomes, in one transaction for them all. Each result is True
        (written, or nothing to write), False (written nothing: the row changed since its view
        was read, because another controller or a request from the API came in; the next pass
        plans again) or the exception writing that one raised.

        The lease is checked once, inside the transaction, with its row locked until the
        commit: when ``holder`` no longer holds it, nothing at all is written
        (``lease_lost``). One outcome that fails does not cost the others theirs: the
        transaction is rolled back and retried without it (or, if the commit failed, in
        halves), so every other outcome is written exactly as alone.

        ``now`` is the pass's clock: deadlines (scale-down, retries) are counted from it."""
        wall = utcnow()
        done = Recorded([o.changes_nothing(v) for v, o in items])
        todo = [i for i, r in enumerate(done.results) if not r]  # a steady pass: none
        self._record_chunk(items, todo, done, holder=holder, now=now or wall, wall=wall)
        return done

    def _record_chunk(
        self,
        items: Sequence[tuple[DeploymentView, Record]],
        chunk: list[int],
        done: Recorded,
        *,
        holder: str | None,
        now: datetime,
        wall: datetime,
    ) -> None:
        if not chunk:
            return
        if done.lease_lost:
            for i in chunk:
                done.results[i] = False
            return
        written: dict[int, bool | Exception] = {}
        at: int | None = None
        try:
            with self.sessions.begin() as s:
                if holder is not None and not self.leases.holds(s, holder, wall):
                    log.warning(
                        "not recording %d deployment(s): the controller lease is lost", len(chunk)
                    )
                    done.lease_lost = True
                    written = dict.fromkeys(chunk, False)
                else:
                    deps = lock_rows(s, AIModelDeployment, (items[i][0].id for i in chunk))
                    # Held here: the session's identity map (where s.get looks) is weak.
                    versions = {
                        v.id: v
                        for v in s.scalars(
                            select(AIModelVersion).where(
                                AIModelVersion.id.in_({d.model_version_id for d in deps.values()})
                            )
                        )
                    }
                    routed = [items[i] for i in chunk if items[i][1].routes is not None]
                    routes = RouteWrites(
                        s, [(v.model_id, v.environment) for v, _ in routed], batch_events=True
                    )
                    for at in chunk:
                        view, outcome = items[at]
                        dep = deps.get(view.id)
                        written[at] = (
                            self._record_one(
                                s, dep, view, outcome, routes, versions, now=now, wall=wall
                            )
                            if dep is not None
                            else NotFound(f"no deployment with id {view.id}")
                        )
                    at = None
                    routes.flush()
        except Exception as exc:
            if db_unavailable(exc):
                raise
            if len(chunk) == 1:
                done.results[chunk[0]] = exc
                return
            # Without the one that raised, or (the flush or the commit failed) in halves.
            half = len(chunk) // 2
            parts = (
                [[at], [i for i in chunk if i != at]]
                if at is not None
                else [chunk[:half], chunk[half:]]
            )
            for part in parts:
                self._record_chunk(items, part, done, holder=holder, now=now, wall=wall)
            return
        routed_models: set[str] = set()
        for i, result in written.items():
            done.results[i] = result
            if result is True and items[i][1].routes is not None:
                routed_models.add(items[i][0].model_name)
        for name in sorted(routed_models):
            self.routes_changed(name)

    def _record_one(
        self,
        s: Session,
        dep: AIModelDeployment,
        view: DeploymentView,
        outcome: Record,
        routes: RouteWrites,
        versions: dict[uuid.UUID, AIModelVersion],
        *,
        now: datetime,
        wall: datetime,
    ) -> bool:
        """One outcome, inside the batch's transaction, with ``dep`` locked."""
        if dep.status != view.status or dep.requested_action != view.requested_action:
            return False
        promoting = outcome.status == DeploymentStatus.ACTIVE and view.in_rollout
        version = versions[dep.model_version_id]
        if promoting:
            refused = assess_deployability(
                s,
                version,
                environment=dep.environment,
                target=dep.target,
                stable=stable_version(s, dep),
                allow_signature_change=bool(view.spec and view.spec.allow_signature_change),
            )
            if not refused.ok:
                self._abort_instead(s, dep, version, refused.summary(), now=wall)
                return False
        self._write(s, dep, outcome, now=now, wall=wall)
        actor = CONTROLLER
        if outcome.consumed_request and dep.requested_action:
            actor = str(dep.requested_action.get("actor") or CONTROLLER)
            dep.requested_action = None
        if view.in_rollout and outcome.status in (DeploymentStatus.ACTIVE, *RETIRED):
            dep.paused = False
            if outcome.status != DeploymentStatus.ACTIVE:
                dep.finished_at = None
        for kind, reason, details in outcome.events:
            add_event(
                s, dep, version=version, kind=kind, actor=actor, reason=reason, details=details
            )
        if promoting:
            self._promoted(
                s, dep, version, view, retire_after=outcome.retire_stable, actor=actor, now=now
            )
        if outcome.routes is not None:
            routes.set(
                model_id=view.model_id,
                environment=view.environment,
                routes=outcome.routes,
                deployment_id=dep.id,
                actor=actor,
                reason=outcome.reason or outcome.status,
                model_version_id=version.id,
                version_number=version.version_number,
            )
        return True

    def record_error(
        self, view: DeploymentView, *, error: str, now: datetime, holder: str | None = None
    ) -> timedelta:
        """A temporary error: retry with exponential backoff, and say so in a condition."""
        backoff = min(timedelta(seconds=2 ** min(view.retry_count + 1, 6)), MAX_BACKOFF)
        with self.sessions.begin() as s:
            if holder is not None and not self.leases.holds(s, holder, utcnow()):
                return backoff
            dep = s.get(AIModelDeployment, view.id)
            if dep is None:
                return backoff
            dep.retry_count = view.retry_count + 1
            dep.next_reconcile_at = now + backoff
            dep.conditions = merge_conditions(
                dep.conditions or [],
                [condition("ReconcileError", True, "TemporaryError", error, now)],
            )
            dep.updated_at = now
        return backoff

    # -- the API's side ----------------------------------------------------------------------

    def ask(
        self,
        s: Session,
        dep: AIModelDeployment,
        version: AIModelVersion,
        *,
        action: str,
        actor: str,
        reason: str | None,
        told: str,
        now: datetime,
    ) -> None:
        """Leave a request (promote, abort, undeploy) for the next controller pass, which
        looks at the deployment at once; the ledger's ``{action}_requested`` says ``told``."""
        # In the order the database gives JSON keys back (JSONB's: shorter first, then
        # bytewise), so the request's answer has the bytes of a later GET.
        dep.requested_action = {
            "at": now.isoformat(),
            "actor": actor,
            "action": action,
            "reason": reason,
        }
        dep.next_reconcile_at = None
        dep.updated_at = now
        add_event(s, dep, version=version, kind=f"{action}_requested", actor=actor, reason=told)

    def switch_back(
        self,
        s: Session,
        *,
        current: AIModelDeployment,
        previous: AIModelDeployment,
        current_version: AIModelVersion,
        previous_version: AIModelVersion,
        actor: str,
        why: str,
        now: datetime,
    ) -> None:
        """An instant rollback: ``previous`` (Inactive, its servers still up) serves all the
        traffic again and ``current`` becomes Inactive, keeping its servers for its
        ``scaleDownDelay``. The caller holds the model's lock and checked deployability."""
        assert previous.endpoint is not None
        spec = _row_spec(current)
        previous.status = DeploymentStatus.ACTIVE
        previous.scale_down_at = None
        previous.finished_at = None
        previous.stable_deployment_id = current.id
        previous.requested_action = None
        previous.updated_at = now
        previous.traffic_weight = 100
        current.status = DeploymentStatus.INACTIVE
        current.scale_down_at = now + spec.scale_down_delay
        current.finished_at = None
        current.traffic_weight = 0
        current.updated_at = now
        set_routes(
            s,
            model_id=previous_version.model_id,
            environment=previous.environment,
            routes=[
                RouteEntry(
                    deployment_id=previous.id,
                    model_version_id=previous_version.id,
                    version_number=previous_version.version_number,
                    url=previous.endpoint,
                    weight=100,
                    role=RouteRole.STABLE,
                )
            ],
            deployment_id=previous.id,
            actor=actor,
            reason=f"rollback: {why}",
            model_version_id=previous_version.id,
            version_number=previous_version.version_number,
        )
        if previous.environment == Environment.PRODUCTION:
            _lifecycle(promoted=previous_version, retired=current_version)
        for dep, version, text in (
            (
                previous,
                previous_version,
                f"serving again (rollback from {current_version.version_number})",
            ),
            (current, current_version, f"rolled back to {previous_version.version_number}"),
        ):
            add_event(
                s, dep, version=version, kind="rolled_back", actor=actor, reason=f"{text}: {why}"
            )

    # -- inside a record ---------------------------------------------------------------------

    def _write(
        self, s: Session, dep: AIModelDeployment, outcome: Record, *, now: datetime, wall: datetime
    ) -> None:
        dep.status = outcome.status
        dep.step_index = outcome.step_index
        dep.step_started_at = outcome.step_started_at
        dep.traffic_weight = outcome.traffic_weight
        dep.hold_since = outcome.hold_since
        dep.conditions = outcome.conditions
        dep.observed_state = outcome.observed_state
        dep.desired_state = outcome.desired_state
        dep.endpoint = outcome.endpoint
        if outcome.kubernetes_details is not None:
            dep.kubernetes_details = outcome.kubernetes_details
        dep.retry_count = 0
        dep.next_reconcile_at = (
            now + outcome.requeue_after if outcome.requeue_after is not None else None
        )
        dep.updated_at = wall
        if outcome.scale_down_at is not None:
            dep.scale_down_at = outcome.scale_down_at
        if outcome.finished:
            dep.finished_at = wall
            dep.scale_down_at = None

    def _abort_instead(
        self,
        s: Session,
        dep: AIModelDeployment,
        version: AIModelVersion,
        why: str,
        *,
        now: datetime,
    ) -> None:
        """The candidate no longer passes the deployability check (archived, failed its scan,
        … since the rollout began): instead of promoting it, ask the next pass to abort."""
        reason = f"not promoted: {why}"
        log.warning("deployment %s: %s; aborting the rollout", dep.id, reason)
        self.ask(
            s, dep, version, action="abort", actor=CONTROLLER, reason=reason, told=reason, now=now
        )

    def _promoted(
        self,
        s: Session,
        dep: AIModelDeployment,
        version: AIModelVersion,
        view: DeploymentView,
        *,
        retire_after: timedelta | None,
        actor: str,
        now: datetime,
    ) -> None:
        """The candidate took over: the old Active deployment of this model and environment
        becomes Inactive, and in production the versions' lifecycle follows."""
        olds = s.scalars(
            select(AIModelDeployment)
            .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            .where(
                AIModelVersion.model_id == view.model_id,
                AIModelDeployment.environment == view.environment,
                AIModelDeployment.status == DeploymentStatus.ACTIVE,
                AIModelDeployment.id != dep.id,
            )
            .with_for_update()
        ).all()
        production = view.environment == Environment.PRODUCTION
        for old in olds:
            old_version = s.get(AIModelVersion, old.model_version_id)
            assert old_version is not None
            old.status = DeploymentStatus.INACTIVE
            old.traffic_weight = 0
            old.scale_down_at = now + (retire_after or timedelta(0))
            old.finished_at = None
            old.updated_at = now
            add_event(
                s,
                old,
                version=old_version,
                kind="superseded",
                actor=actor,
                reason=f"superseded by {version.version_number}; servers kept until "
                f"{old.scale_down_at.isoformat()}",
            )
            if production:
                _lifecycle(promoted=None, retired=old_version)
        if production:
            _lifecycle(promoted=version, retired=None)


# -- shared with the API's desired state (registry.services.deployments) ---------------------


def lock_deployment(s: Session, deployment_id: uuid.UUID) -> AIModelDeployment:
    dep = lock_row(s, AIModelDeployment, deployment_id)
    if dep is None:
        raise NotFound(f"no deployment with id {deployment_id}")
    return dep


def stable_version(s: Session, dep: AIModelDeployment) -> AIModelVersion | None:
    """The version a rollout's candidate is compared with: its stable deployment's."""
    if dep.stable_deployment_id is None:
        return None
    stable = s.get(AIModelDeployment, dep.stable_deployment_id)
    return s.get(AIModelVersion, stable.model_version_id) if stable is not None else None


def allows_signature_change(dep: AIModelDeployment) -> bool:
    try:
        return _row_spec(dep).allow_signature_change
    except SpecError:
        return False


def add_event(
    s: Session,
    dep: AIModelDeployment,
    *,
    version: AIModelVersion,
    kind: str,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """One line of a deployment's ledger (``GET /deployments/{id}/events``)."""
    add_event_row(
        s,
        {
            "deployment_id": dep.id,
            "model_id": version.model_id,
            "environment": dep.environment,
            "model_version_id": version.id,
            "version_number": version.version_number,
            "at": utcnow(),
            "kind": kind,
            "actor": actor,
            "reason": reason,
            "details": {k: audit._plain(v) for k, v in (details or {}).items()},
        },
    )


def _row_spec(dep: AIModelDeployment) -> RolloutSpec:
    return parse_spec(dep.deployment_strategy or Strategy.CANARY, dep.strategy_params)


def _lifecycle(*, promoted: AIModelVersion | None, retired: AIModelVersion | None) -> None:
    if promoted is not None and promoted.status in (VersionStatus.STAGED, VersionStatus.DEPRECATED):
        promoted.status = VersionStatus.PRODUCTION
    if (
        retired is not None
        and retired.status == VersionStatus.PRODUCTION
        and (promoted is None or retired.id != promoted.id)
    ):
        retired.status = VersionStatus.DEPRECATED
