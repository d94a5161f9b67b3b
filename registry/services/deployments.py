"""AIModelDeployment: what the API asks for (desired state) and what the controller records.

The API writes a deployment row (``Initiated``) or a request on one (promote, abort, pause,
resume, undeploy) and returns; it never calls the controller. The controller reads snapshots
(:class:`DeploymentView`), plans, applies, and records the outcome with :meth:`record`, which
refuses to write over a row that changed since it was read.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registry import metrics
from registry.auth import Principal
from registry.db import lock_row
from registry.errors import Conflict, Invalid, NotFound
from registry.models import (
    DEPLOYMENT_STATUSES,
    ENVIRONMENTS,
    AIModel,
    AIModelDeployment,
    AIModelVersion,
    ControllerLease,
    DeploymentEvent,
)
from registry.pagination import check_limit, decode_cursor, encode_cursor
from registry.rollout_spec import SpecError, parse_spec, spec_hash
from registry.services import audit
from registry.services.deployability import assess_deployability, check_deployable
from registry.services.models import Page, get_model
from registry.services.routing import RouteEntry, current_routes, set_routes
from registry.services.versions import API_FORMAT, get_version
from registry.types import utcnow

log = logging.getLogger(__name__)

ROLLOUT_STATUSES = ("Initiated", "Deploying")
RETIRED_STATUSES = ("Inactive", "RolledBack", "Failed")
ACTIONS = ("promote", "abort", "pause", "resume", "undeploy")
CONTROLLER = "controller"
MAX_BACKOFF = timedelta(seconds=60)


@dataclass(frozen=True)
class VersionInfo:
    id: uuid.UUID
    number: str
    format: str
    status: str
    sha256: str | None
    source_path: str | None
    endpoint: str | None
    model_file: str | None = None
    """``parameters.modelFile``: the model to serve in a bundle that holds several."""


@dataclass(frozen=True)
class DeploymentView:
    """A snapshot of one deployment row and what the controller needs around it."""

    id: uuid.UUID
    model_id: uuid.UUID
    model_name: str
    environment: str
    target: str
    status: str
    strategy: str
    params: dict[str, Any]
    spec_hash: str | None
    version: VersionInfo
    step_index: int
    step_started_at: datetime | None
    traffic_weight: int
    hold_since: datetime | None
    paused: bool
    requested_action: dict[str, Any] | None
    conditions: list[dict[str, Any]]
    endpoint: str | None
    stable_deployment_id: uuid.UUID | None
    retry_count: int
    scale_down_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime | None = None
    observed_state: dict[str, Any] | None = None
    desired_state: dict[str, Any] | None = None
    reason: str | None = None
    kubernetes_details: dict[str, Any] | None = None

    @property
    def in_rollout(self) -> bool:
        return self.status in ROLLOUT_STATUSES


@dataclass(frozen=True)
class Record:
    """What one controller pass decided for one deployment."""

    status: str
    step_index: int
    step_started_at: datetime | None
    traffic_weight: int
    hold_since: datetime | None
    reason: str | None
    conditions: list[dict[str, Any]]
    observed_state: dict[str, Any] | None
    desired_state: dict[str, Any] | None
    endpoint: str | None
    routes: Sequence[RouteEntry] | None = None
    """The whole routing set of the deployment's model and environment, or None to leave it."""
    events: Sequence[tuple[str, str, dict[str, Any]]] = ()
    consumed_request: bool = False
    requeue_after: timedelta | None = None
    scale_down_at: datetime | None = None
    finished: bool = False
    retire_stable: timedelta | None = None
    """On promotion: the stable deployment becomes Inactive and keeps its servers this long."""
    kubernetes_details: dict[str, Any] | None = None
    """Namespace, resource names and pod counts (target kubernetes); None leaves them."""


@dataclass(frozen=True)
class EventView:
    id: int
    deployment_id: uuid.UUID
    at: datetime
    kind: str
    actor: str
    reason: str | None
    version_number: str | None
    details: dict[str, Any] = field(default_factory=dict)


def condition(kind: str, status: bool, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """One Kubernetes-style condition: ``{type, status, reason, message, lastTransitionTime}``."""
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now.isoformat(),
    }


def merge_conditions(
    current: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Replace conditions by type; keep ``lastTransitionTime`` when the status is unchanged."""
    merged = {c["type"]: c for c in current}
    for update in updates:
        old = merged.get(update["type"])
        if old is not None and old.get("status") == update["status"]:
            update = {**update, "lastTransitionTime": old.get("lastTransitionTime")}
        merged[update["type"]] = update
    return list(merged.values())


def actor_name(actor: Principal) -> str:
    return f"key:{actor.key_name or actor.api_client_id} (user {actor.user_id})"


class DeploymentService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        lease_name: str = "controller",
        on_routes_changed: Callable[[str], None] | None = None,
        targets: Sequence[str] = ("local",),
    ) -> None:
        """``on_routes_changed(model_name)`` runs after a commit that changed routes (the
        endpoint cache of this process drops that model at once)."""
        self.sessions = sessions
        self.lease_name = lease_name
        self.on_routes_changed = on_routes_changed
        self.targets = tuple(targets)

    def _routes_changed(self, model_name: str) -> None:
        if self.on_routes_changed is not None:
            self.on_routes_changed(model_name)

    # -- the API's side: desired state -----------------------------------------------------

    def create(
        self,
        actor: Principal,
        *,
        model_name: str,
        environment: str,
        strategy: str,
        params: dict[str, Any] | None = None,
        version_number: str | None = None,
        model_version_id: uuid.UUID | None = None,
        target: str = "local",
    ) -> AIModelDeployment:
        if environment not in ENVIRONMENTS:
            raise Invalid(f"unknown environment {environment!r}", allowed=list(ENVIRONMENTS))
        if target not in self.targets:
            hint = " (set MODELREG_KUBE_ENABLED=true)" if target == "kubernetes" else ""
            raise Invalid(
                f"target {target!r} is not available on this server{hint}; use one of "
                f"{list(self.targets)}"
            )
        try:
            spec = parse_spec(strategy, params)
        except SpecError as exc:
            raise Invalid(str(exc)) from None
        if (version_number is None) == (model_version_id is None):
            raise Invalid("give exactly one of versionNumber or modelVersionId")
        with self.sessions.begin() as s:
            model = _lock_model(s, get_model(s, model_name))
            if version_number is not None:
                version = get_version(s, model, version_number)
            else:
                found = s.get(AIModelVersion, model_version_id)
                if found is None or found.model_id != model.id:
                    raise NotFound(
                        f"model {model_name!r} has no version with id {model_version_id}"
                    )
                version = found
            # The version too: a PATCH of its parameters locks it before deciding.
            version = _lock_version(s, version)
            self._check_no_rollout(s, model, environment)
            stable = self._active(s, model.id, environment)
            if stable is not None and stable.model_version_id == version.id:
                raise Conflict(
                    f"version {version.version_number!r} already serves {model_name!r} in "
                    f"{environment}",
                    deploymentId=str(stable.id),
                )
            checked = check_deployable(
                s,
                version,
                environment=environment,
                target=target,
                stable=s.get(AIModelVersion, stable.model_version_id) if stable else None,
                allow_signature_change=spec.allow_signature_change,
            )
            deployment = AIModelDeployment(
                model_version_id=version.id,
                environment=environment,
                status="Initiated",
                deployment_strategy=strategy,
                strategy_params=params or {},
                spec_hash=spec_hash(strategy, params, str(version.id)),
                target=target,
                stable_deployment_id=stable.id if stable is not None else None,
                deployed_by_user_id=actor.user_id,
                conditions=[],
            )
            s.add(deployment)
            s.flush()
            self._event(
                s,
                deployment,
                model_id=model.id,
                version=version,
                kind="created",
                actor=actor_name(actor),
                reason=f"{strategy} rollout of {version.version_number} to {environment} requested",
                details={
                    "strategy": strategy,
                    "strategyParams": params or {},
                    "stableDeploymentId": str(stable.id) if stable else None,
                    **_signature_override(checked.signature_diff),
                },
            )
            audit.record(
                s,
                actor,
                "deployment_created",
                deploymentId=deployment.id,
                modelVersionId=version.id,
                environment=environment,
                strategy=strategy,
                **_signature_override(checked.signature_diff),
            )
        return deployment

    def _check_no_rollout(self, s: Session, model: AIModel, environment: str) -> None:
        """One rollout per model and environment. The caller holds the model's row lock, so
        two requests cannot both see none."""
        busy = s.scalar(
            select(AIModelDeployment)
            .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            .where(
                AIModelVersion.model_id == model.id,
                AIModelDeployment.environment == environment,
                AIModelDeployment.status.in_(ROLLOUT_STATUSES),
            )
            .limit(1)
        )
        if busy is not None:
            raise Conflict(
                f"a rollout to {environment} is already in progress for {model.name!r}; "
                "promote or abort it first",
                deploymentId=str(busy.id),
            )

    def _active(
        self, s: Session, model_id: uuid.UUID, environment: str
    ) -> AIModelDeployment | None:
        return s.scalar(
            select(AIModelDeployment)
            .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            .where(
                AIModelVersion.model_id == model_id,
                AIModelDeployment.environment == environment,
                AIModelDeployment.status == "Active",
            )
            .order_by(AIModelDeployment.created_at.desc())
            .limit(1)
        )

    def request(
        self,
        actor: Principal,
        deployment_id: uuid.UUID,
        action: str,
        *,
        reason: str | None = None,
    ) -> AIModelDeployment:
        """Ask the controller to promote, abort, pause, resume or undeploy."""
        if action not in ACTIONS:
            raise Invalid(f"unknown action {action!r}", allowed=list(ACTIONS))
        with self.sessions.begin() as s:
            dep = self._get_for_update(s, deployment_id)
            version = s.get(AIModelVersion, dep.model_version_id)
            assert version is not None
            allowed = ("Active",) if action == "undeploy" else ROLLOUT_STATUSES
            if dep.status not in allowed:
                raise Conflict(
                    f"cannot {action} a deployment that is {dep.status}",
                    currentStatus=dep.status,
                    allowedStatuses=list(allowed),
                )
            pending = (dep.requested_action or {}).get("action")
            # Abort is always the way out: it supersedes a pending promote (which may wait for
            # a candidate that never becomes ready). Anything else pending wins, and the later
            # request gets 409, so of a racing promote and abort the abort always wins.
            superseded = pending if action == "abort" and pending == "promote" else None
            if pending and action in ("promote", "abort", "undeploy") and superseded is None:
                raise Conflict(
                    f"a {pending} request is already pending on this deployment; the controller "
                    "carries it out on its next pass",
                    pendingAction=pending,
                )
            if action in ("promote", "resume"):
                # Both let the candidate take (more) traffic: the same check as a deploy.
                check_deployable(
                    s,
                    version,
                    environment=dep.environment,
                    target=dep.target,
                    stable=self._stable_version(s, dep),
                    allow_signature_change=_allows_signature_change(dep),
                )
            now = utcnow()
            told = (reason or f"{action} requested") + (
                f" (supersedes the pending {superseded})" if superseded else ""
            )
            if action in ("pause", "resume"):
                dep.paused = action == "pause"
                dep.next_reconcile_at = None
                dep.updated_at = now
                self._event(
                    s,
                    dep,
                    model_id=version.model_id,
                    version=version,
                    kind=f"{action}d",
                    actor=actor_name(actor),
                    reason=told,
                )
            else:
                self._ask(
                    s,
                    dep,
                    version,
                    action=action,
                    actor=actor_name(actor),
                    reason=reason,
                    told=told,
                    now=now,
                )
            audit.record(
                s,
                actor,
                f"deployment_{action}",
                deploymentId=dep.id,
                reason=reason,
                **({"supersedes": superseded} if superseded else {}),
            )
            s.flush()
        return dep

    def rollback(
        self, actor: Principal, model_name: str, environment: str, *, reason: str | None = None
    ) -> AIModelDeployment:
        """Serve the previous Active version again. Instant while its servers are still up
        (inside its scaleDownDelay); otherwise a new blue-green rollout of it is started."""
        if environment not in ENVIRONMENTS:
            raise Invalid(f"unknown environment {environment!r}", allowed=list(ENVIRONMENTS))
        with self.sessions.begin() as s:
            model = _lock_model(s, get_model(s, model_name))
            busy = s.scalar(
                select(AIModelDeployment.id)
                .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
                .where(
                    AIModelVersion.model_id == model.id,
                    AIModelDeployment.environment == environment,
                    AIModelDeployment.status.in_(ROLLOUT_STATUSES),
                )
            )
            if busy is not None:
                raise Conflict(
                    "a rollout is in progress: abort it instead of rolling back",
                    deploymentId=str(busy),
                )
            current = self._active(s, model.id, environment)
            if current is None:
                raise Conflict(
                    f"nothing serves {model_name!r} in {environment}: nothing to roll back"
                )
            previous = (
                s.get(AIModelDeployment, current.stable_deployment_id)
                if current.stable_deployment_id
                else None
            )
            if previous is None or previous.status != "Inactive":
                raise Conflict(
                    f"{model_name!r} in {environment} has no previous Active version "
                    "to roll back to"
                )
            now = utcnow()
            who = actor_name(actor)
            why = reason or "rollback requested"
            prev_version = s.get(AIModelVersion, previous.model_version_id)
            cur_version = s.get(AIModelVersion, current.model_version_id)
            assert prev_version is not None
            assert cur_version is not None
            # A rollback changes what serves: the same check as a deploy. The signature change
            # it undoes was accepted when ``current`` was deployed with allowSignatureChange.
            allow_change = _allows_signature_change(current)
            check_deployable(
                s,
                prev_version,
                environment=environment,
                target=previous.target,
                stable=cur_version,
                allow_signature_change=allow_change,
            )
            warm = (
                previous.scale_down_at is not None
                and previous.scale_down_at > now
                and previous.endpoint is not None
            )
            if warm:
                assert previous.endpoint is not None
                spec = parse_spec(current.deployment_strategy or "canary", current.strategy_params)
                previous.status = "Active"
                previous.scale_down_at = None
                previous.finished_at = None
                previous.stable_deployment_id = current.id
                previous.requested_action = None
                previous.updated_at = now
                previous.traffic_weight = 100
                current.status = "Inactive"
                current.scale_down_at = now + spec.scale_down_delay
                current.finished_at = None
                current.traffic_weight = 0
                current.updated_at = now
                set_routes(
                    s,
                    model_id=model.id,
                    environment=environment,
                    routes=[
                        RouteEntry(
                            deployment_id=previous.id,
                            model_version_id=prev_version.id,
                            version_number=prev_version.version_number,
                            url=previous.endpoint,
                            weight=100,
                            role="stable",
                        )
                    ],
                    deployment_id=previous.id,
                    actor=who,
                    reason=f"rollback: {why}",
                    model_version_id=prev_version.id,
                    version_number=prev_version.version_number,
                )
                if environment == "production":
                    self._lifecycle(s, promoted=prev_version, retired=cur_version)
                for dep, version, text in (
                    (
                        previous,
                        prev_version,
                        f"serving again (rollback from {cur_version.version_number})",
                    ),
                    (current, cur_version, f"rolled back to {prev_version.version_number}"),
                ):
                    self._event(
                        s,
                        dep,
                        model_id=model.id,
                        version=version,
                        kind="rolled_back",
                        actor=who,
                        reason=f"{text}: {why}",
                    )
                result = previous
            else:
                result = AIModelDeployment(
                    model_version_id=prev_version.id,
                    environment=environment,
                    status="Initiated",
                    deployment_strategy="blue_green",
                    strategy_params={
                        **{
                            k: v
                            for k, v in (previous.strategy_params or {}).items()
                            if k in ("replicas", "resources", "scaleDownDelay")
                        },
                        "autoPromote": True,
                        "previewDuration": "0s",
                        **({"allowSignatureChange": True} if allow_change else {}),
                    },
                    target=previous.target,
                    stable_deployment_id=current.id,
                    deployed_by_user_id=actor.user_id,
                    conditions=[],
                )
                result.spec_hash = spec_hash(
                    "blue_green", result.strategy_params, str(prev_version.id)
                )
                s.add(result)
                s.flush()
                self._event(
                    s,
                    result,
                    model_id=model.id,
                    version=prev_version,
                    kind="created",
                    actor=who,
                    reason=f"rollback to {prev_version.version_number}: its servers are gone, "
                    f"so it is rolled out again (blue-green): {why}",
                )
            audit.record(
                s,
                actor,
                "deployment_rollback",
                modelId=model.id,
                environment=environment,
                fromDeploymentId=current.id,
                toDeploymentId=result.id,
                instant=warm,
                reason=reason,
            )
            s.flush()
        metrics.DEPLOYMENT_OUTCOMES.labels(
            model_name, environment, current.deployment_strategy or "canary", "manual_rollback"
        ).inc()
        if warm:
            self._routes_changed(model_name)
        return result

    # -- reading -----------------------------------------------------------------------------

    def get(self, deployment_id: uuid.UUID) -> DeploymentView:
        views = self.load([deployment_id])
        if not views:
            raise NotFound(f"no deployment with id {deployment_id}")
        return views[0]

    def find(
        self,
        *,
        model_name: str | None = None,
        environment: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[DeploymentView]:
        check_limit(limit)
        if status is not None and status not in DEPLOYMENT_STATUSES:
            raise Invalid(f"unknown status {status!r}", allowed=list(DEPLOYMENT_STATUSES))
        with self.sessions() as s:
            stmt = (
                select(AIModelDeployment.id)
                .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
                .order_by(AIModelDeployment.created_at.desc(), AIModelDeployment.id.desc())
            )
            if model_name is not None:
                stmt = stmt.where(AIModelVersion.model_id == get_model(s, model_name).id)
            if environment is not None:
                stmt = stmt.where(AIModelDeployment.environment == environment)
            if status is not None:
                stmt = stmt.where(AIModelDeployment.status == status)
            if cursor:
                created, did = decode_cursor(cursor, arity=2)
                try:
                    after = (datetime.fromisoformat(created), uuid.UUID(did))
                except (TypeError, ValueError):
                    raise Invalid("cursor is not one this server issued") from None
                stmt = stmt.where(
                    tuple_(AIModelDeployment.created_at, AIModelDeployment.id) < after
                )
            ids = list(s.scalars(stmt.limit(limit + 1)))
        more = len(ids) > limit
        views = self.load(ids[:limit])
        last = views[-1] if views else None
        nxt = encode_cursor([last.created_at.isoformat(), str(last.id)]) if more and last else None
        return Page(views, nxt)

    def events(
        self, deployment_id: uuid.UUID, *, after: int = 0, limit: int = 200
    ) -> list[EventView]:
        check_limit(limit)
        with self.sessions() as s:
            if s.get(AIModelDeployment, deployment_id) is None:
                raise NotFound(f"no deployment with id {deployment_id}")
            rows = s.scalars(
                select(DeploymentEvent)
                .where(DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.id > after)
                .order_by(DeploymentEvent.id)
                .limit(limit)
            )
            return [_event_view(e) for e in rows]

    def history(
        self,
        model_name: str,
        environment: str,
        *,
        at: datetime | None = None,
        after: int = 0,
        limit: int = 200,
    ) -> tuple[list[EventView], list[dict[str, Any]] | None]:
        """The ledger of a model in an environment, oldest first; with ``at``, also the set
        of endpoints that served it at that time (from the last ``traffic`` event before it)."""
        check_limit(limit)
        if environment not in ENVIRONMENTS:
            raise Invalid(f"unknown environment {environment!r}", allowed=list(ENVIRONMENTS))
        with self.sessions() as s:
            model = get_model(s, model_name)
            where = and_(
                DeploymentEvent.model_id == model.id, DeploymentEvent.environment == environment
            )
            stmt = select(DeploymentEvent).where(where, DeploymentEvent.id > after)
            if at is not None:
                stmt = stmt.where(DeploymentEvent.at <= at)
            rows = [
                _event_view(e) for e in s.scalars(stmt.order_by(DeploymentEvent.id).limit(limit))
            ]
            serving = None
            if at is not None:
                last = s.scalar(
                    select(DeploymentEvent)
                    .where(where, DeploymentEvent.kind == "traffic", DeploymentEvent.at <= at)
                    .order_by(DeploymentEvent.at.desc(), DeploymentEvent.id.desc())
                    .limit(1)
                )
                serving = list((last.details or {}).get("routes", [])) if last else []
            return rows, serving

    def routes(self, model_id: uuid.UUID, environment: str) -> list[RouteEntry]:
        """What serves (model, environment) now."""
        with self.sessions() as s:
            return current_routes(s, model_id=model_id, environment=environment)

    def load(self, ids: Sequence[uuid.UUID]) -> list[DeploymentView]:
        """Snapshots of these deployments, in the order given (unknown ids are left out)."""
        if not ids:
            return []
        with self.sessions() as s:
            found = {v.id: v for v in self._views(s, AIModelDeployment.id.in_(list(ids)))}
        return [found[i] for i in ids if i in found]

    def _views(self, s: Session, *where: Any) -> list[DeploymentView]:
        stmt = (
            select(AIModelDeployment, AIModelVersion, AIModel.name)
            .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            .join(AIModel, AIModel.id == AIModelVersion.model_id)
            .where(*where)
            .order_by(AIModelDeployment.created_at, AIModelDeployment.id)
        )
        return [_view(d, v, name) for d, v, name in s.execute(stmt)]

    # -- the controller's side ---------------------------------------------------------------

    def worklist(self, now: datetime) -> list[DeploymentView]:
        """Every deployment a controller pass must look at: rollouts, Active ones (to keep
        them healthy) and retired ones whose servers are not yet gone."""
        with self.sessions() as s:
            return self._views(
                s,
                or_(
                    AIModelDeployment.status.in_((*ROLLOUT_STATUSES, "Active")),
                    and_(
                        AIModelDeployment.status.in_(RETIRED_STATUSES),
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

    def record(
        self,
        view: DeploymentView,
        outcome: Record,
        *,
        holder: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Write one pass's outcome. Returns False, writing nothing, when the row changed
        since ``view`` was read (another controller, or a request from the API came in) or
        this controller no longer holds the lease: the next pass plans again.

        ``now`` is the pass's clock: deadlines (scale-down, retries) are counted from it."""
        wall = utcnow()
        now = now or wall
        if _changes_nothing(view, outcome):
            return True  # a steady pass writes nothing: no transaction at all
        with self.sessions.begin() as s:
            if holder is not None and not self._holds(s, holder, wall):
                log.warning("not recording deployment %s: the controller lease is lost", view.id)
                return False
            dep = self._get_for_update(s, view.id)
            if dep.status != view.status or dep.requested_action != view.requested_action:
                return False
            version = s.get(AIModelVersion, dep.model_version_id)
            assert version is not None
            if outcome.status == "Active" and view.status in ROLLOUT_STATUSES:
                refused = assess_deployability(
                    s,
                    version,
                    environment=dep.environment,
                    target=dep.target,
                    stable=self._stable_version(s, dep),
                    allow_signature_change=_allows_signature_change(dep),
                )
                if not refused.ok:
                    self._abort_instead(s, dep, version, view, refused.summary(), now=wall)
                    return False
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
            actor = CONTROLLER
            if outcome.consumed_request and dep.requested_action:
                actor = str(dep.requested_action.get("actor") or CONTROLLER)
                dep.requested_action = None
            if outcome.status in ("Active", *RETIRED_STATUSES) and view.status in ROLLOUT_STATUSES:
                dep.paused = False
                if outcome.status != "Active":
                    dep.finished_at = None
            for kind, reason, details in outcome.events:
                self._event(
                    s,
                    dep,
                    model_id=view.model_id,
                    version=version,
                    kind=kind,
                    actor=actor,
                    reason=reason,
                    details=details,
                )
            if outcome.status == "Active" and view.status in ROLLOUT_STATUSES:
                self._promoted(s, dep, version, view, outcome, actor=actor, now=now)
            if outcome.routes is not None:
                set_routes(
                    s,
                    model_id=view.model_id,
                    environment=view.environment,
                    routes=outcome.routes,
                    deployment_id=dep.id,
                    actor=actor,
                    reason=outcome.reason or outcome.status,
                    model_version_id=version.id,
                    version_number=version.version_number,
                )
            s.flush()
        if outcome.routes is not None:
            self._routes_changed(view.model_name)
        return True

    def _abort_instead(
        self,
        s: Session,
        dep: AIModelDeployment,
        version: AIModelVersion,
        view: DeploymentView,
        why: str,
        *,
        now: datetime,
    ) -> None:
        """The candidate no longer passes the deployability check (archived, failed its scan,
        … since the rollout began): instead of promoting it, ask the next pass to abort."""
        reason = f"not promoted: {why}"
        log.warning("deployment %s: %s; aborting the rollout", dep.id, reason)
        self._ask(
            s, dep, version, action="abort", actor=CONTROLLER, reason=reason, told=reason, now=now
        )

    def _ask(
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
        dep.requested_action = {
            "action": action,
            "actor": actor,
            "reason": reason,
            "at": now.isoformat(),
        }
        dep.next_reconcile_at = None
        dep.updated_at = now
        self._event(
            s,
            dep,
            model_id=version.model_id,
            version=version,
            kind=f"{action}_requested",
            actor=actor,
            reason=told,
        )

    def _promoted(
        self,
        s: Session,
        dep: AIModelDeployment,
        version: AIModelVersion,
        view: DeploymentView,
        outcome: Record,
        *,
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
                AIModelDeployment.status == "Active",
                AIModelDeployment.id != dep.id,
            )
            .with_for_update()
        ).all()
        for old in olds:
            old_version = s.get(AIModelVersion, old.model_version_id)
            assert old_version is not None
            old.status = "Inactive"
            old.traffic_weight = 0
            old.scale_down_at = now + (outcome.retire_stable or timedelta(0))
            old.finished_at = None
            old.updated_at = now
            self._event(
                s,
                old,
                model_id=view.model_id,
                version=old_version,
                kind="superseded",
                actor=actor,
                reason=f"superseded by {version.version_number}; servers kept until "
                f"{old.scale_down_at.isoformat()}",
            )
            if view.environment == "production":
                self._lifecycle(s, promoted=None, retired=old_version)
        if view.environment == "production":
            self._lifecycle(s, promoted=version, retired=None)

    def _lifecycle(
        self, s: Session, *, promoted: AIModelVersion | None, retired: AIModelVersion | None
    ) -> None:
        if promoted is not None and promoted.status in ("Staged", "Deprecated"):
            promoted.status = "Production"
        if (
            retired is not None
            and retired.status == "Production"
            and (promoted is None or retired.id != promoted.id)
        ):
            retired.status = "Deprecated"

    def record_error(
        self, view: DeploymentView, *, error: str, now: datetime, holder: str | None = None
    ) -> timedelta:
        """A temporary error: retry with exponential backoff, and say so in a condition."""
        backoff = min(timedelta(seconds=2 ** min(view.retry_count + 1, 6)), MAX_BACKOFF)
        with self.sessions.begin() as s:
            if holder is not None and not self._holds(s, holder, utcnow()):
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

    # -- leader election -----------------------------------------------------------------------

    def acquire_lease(self, holder: str, *, ttl: timedelta) -> bool:
        """Take or renew the controller lease. True when ``holder`` leads until now + ttl."""
        now = utcnow()
        try:
            with self.sessions.begin() as s:
                return self._take_lease(s, holder, ttl=ttl, now=now)
        except IntegrityError:  # another controller inserted the lease row first
            return False

    def _take_lease(self, s: Session, holder: str, *, ttl: timedelta, now: datetime) -> bool:
        lease = s.get(ControllerLease, self.lease_name, with_for_update=True)
        if lease is None:
            s.add(
                ControllerLease(
                    name=self.lease_name, holder=holder, expires_at=now + ttl, acquired_at=now
                )
            )
            s.flush()
            log.info("controller %s took the lease", holder)
            return True
        if lease.holder != holder and lease.expires_at > now:
            return False
        if lease.holder != holder:
            log.info("controller lease taken over by %s (was %s)", holder, lease.holder)
            lease.acquired_at = now
        lease.holder = holder
        lease.expires_at = now + ttl
        return True

    def release_lease(self, holder: str) -> None:
        with self.sessions.begin() as s:
            lease = s.get(ControllerLease, self.lease_name, with_for_update=True)
            if lease is not None and lease.holder == holder:
                s.delete(lease)

    def lease_holder(self) -> str | None:
        with self.sessions() as s:
            lease = s.get(ControllerLease, self.lease_name)
            if lease is None or lease.expires_at <= utcnow():
                return None
            return lease.holder

    def _holds(self, s: Session, holder: str, now: datetime) -> bool:
        lease = s.get(ControllerLease, self.lease_name)
        return lease is not None and lease.holder == holder and lease.expires_at > now

    # -- helpers -------------------------------------------------------------------------------

    def _get_for_update(self, s: Session, deployment_id: uuid.UUID) -> AIModelDeployment:
        dep = lock_row(s, AIModelDeployment, deployment_id)
        if dep is None:
            raise NotFound(f"no deployment with id {deployment_id}")
        return dep

    def _stable_version(self, s: Session, dep: AIModelDeployment) -> AIModelVersion | None:
        """The version a rollout's candidate is compared with: its stable deployment's."""
        if dep.stable_deployment_id is None:
            return None
        stable = s.get(AIModelDeployment, dep.stable_deployment_id)
        return s.get(AIModelVersion, stable.model_version_id) if stable is not None else None

    def _event(
        self,
        s: Session,
        dep: AIModelDeployment,
        *,
        model_id: uuid.UUID,
        version: AIModelVersion,
        kind: str,
        actor: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        s.add(
            DeploymentEvent(
                deployment_id=dep.id,
                model_id=model_id,
                environment=dep.environment,
                model_version_id=version.id,
                version_number=version.version_number,
                at=utcnow(),
                kind=kind,
                actor=actor,
                reason=reason,
                details=audit_plain(details or {}),
            )
        )


def _lock_model(s: Session, model: AIModel) -> AIModel:
    """Lock the model's row (deploys, rollbacks and its deletion take turns on it)."""
    locked = lock_row(s, AIModel, model.id)
    if locked is None:
        raise Conflict(f"model {model.name!r} was deleted while this request ran")
    return locked


def _lock_version(s: Session, version: AIModelVersion) -> AIModelVersion:
    locked = lock_row(s, AIModelVersion, version.id)
    if locked is None:
        raise Conflict(f"version {version.version_number!r} was deleted while this request ran")
    return locked


def _allows_signature_change(dep: AIModelDeployment) -> bool:
    try:
        return parse_spec(
            dep.deployment_strategy or "canary", dep.strategy_params
        ).allow_signature_change
    except SpecError:
        return False


def _signature_override(diff: Sequence[str]) -> dict[str, Any]:
    """What the audit row adds when ``allowSignatureChange`` let a differing signature through."""
    return {"allowSignatureChange": True, "signatureDiff": list(diff)} if diff else {}


def _changes_nothing(view: DeploymentView, outcome: Record) -> bool:
    return (
        view.status == outcome.status
        and view.step_index == outcome.step_index
        and view.step_started_at == outcome.step_started_at
        and view.traffic_weight == outcome.traffic_weight
        and view.hold_since == outcome.hold_since
        and view.conditions == outcome.conditions
        and view.endpoint == outcome.endpoint
        and view.observed_state == outcome.observed_state
        and view.desired_state == outcome.desired_state
        and view.retry_count == 0
        and outcome.routes is None
        and not outcome.events
        and not outcome.finished
        and outcome.scale_down_at is None
        and not outcome.consumed_request
        and (
            outcome.kubernetes_details is None
            or outcome.kubernetes_details == view.kubernetes_details
        )
    )


def audit_plain(details: dict[str, Any]) -> dict[str, Any]:
    return {k: audit._plain(v) for k, v in details.items()}


def _event_view(e: DeploymentEvent) -> EventView:
    return EventView(
        id=e.id,
        deployment_id=e.deployment_id,
        at=e.at,
        kind=e.kind,
        actor=e.actor,
        reason=e.reason,
        version_number=e.version_number,
        details=dict(e.details or {}),
    )


def _view(d: AIModelDeployment, v: AIModelVersion, model_name: str) -> DeploymentView:
    endpoint = (v.parameters or {}).get("endpoint") if v.format == API_FORMAT else None
    model_file = (v.parameters or {}).get("modelFile")
    return DeploymentView(
        id=d.id,
        model_id=v.model_id,
        model_name=model_name,
        environment=d.environment,
        target=d.target,
        status=d.status,
        strategy=d.deployment_strategy or "canary",
        params=dict(d.strategy_params or {}),
        spec_hash=d.spec_hash,
        version=VersionInfo(
            id=v.id,
            number=v.version_number,
            format=v.format or "ONNX",
            status=v.status,
            sha256=v.sha256,
            source_path=v.source_path,
            endpoint=endpoint if isinstance(endpoint, str) else None,
            model_file=model_file if isinstance(model_file, str) else None,
        ),
        step_index=d.step_index,
        step_started_at=d.step_started_at,
        traffic_weight=d.traffic_weight,
        hold_since=d.hold_since,
        paused=d.paused,
        requested_action=d.requested_action,
        conditions=list(d.conditions or []),
        endpoint=d.endpoint,
        stable_deployment_id=d.stable_deployment_id,
        retry_count=d.retry_count,
        scale_down_at=d.scale_down_at,
        finished_at=d.finished_at,
        created_at=d.created_at,
        updated_at=d.updated_at,
        observed_state=d.observed_state,
        desired_state=d.desired_state,
        reason=_reason(d.conditions),
        kubernetes_details=d.kubernetes_details,
    )


def _reason(conditions: list[dict[str, Any]] | None) -> str | None:
    for c in conditions or []:
        if c.get("type") == "Progressing":
            return str(c.get("message"))
    return None


__all__ = [
    "DeploymentService",
    "DeploymentView",
    "EventView",
    "Record",
    "VersionInfo",
]
