"""AIModelDeployment: what the API asks for (desired state), and the reads.

The API writes a deployment row (``Initiated``) or a request on one (promote, abort, pause,
resume, undeploy) and returns; it never calls the controller. The controller reads snapshots
(:class:`DeploymentView`) from the :class:`RolloutLedger` and records there what it did; every
change of what serves goes through the ledger (``registry/services/ledger.py``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from registry import metrics
from registry.auth import Principal
from registry.db import lock_row
from registry.errors import Conflict, Invalid, NotFound
from registry.ids import resolve_uuid
from registry.models import (
    DEPLOYMENT_STATUSES,
    ENVIRONMENTS,
    AIModel,
    AIModelDeployment,
    AIModelVersion,
    DeploymentEvent,
)
from registry.pagination import check_limit, decode_cursor, encode_cursor
from registry.rollout_spec import SpecError, parse_spec, spec_hash
from registry.services import audit
from registry.services.deployability import check_deployable
from registry.services.deployment_views import (
    DeploymentView,
    EventView,
    VersionInfo,
    event_views,
    load_by_id,
    view_of,
)
from registry.services.ledger import (
    CONTROLLER,
    RolloutLedger,
    add_event,
    allows_signature_change,
    lock_deployment,
    stable_version,
)
from registry.services.models import Page, get_model, get_version
from registry.services.outcomes import Record
from registry.services.routing import RouteEntry, current_routes
from registry.types import utcnow
from registry.vocabulary import (
    ROLLING_OUT,
    DeploymentStatus,
    DeploymentTarget,
    Strategy,
)

log = logging.getLogger(__name__)

ACTIONS = ("promote", "abort", "pause", "resume", "undeploy")


def actor_name(actor: Principal) -> str:
    """How the ledger names a person's act; deployment_views.event_views reads the user id
    back out of it, for the event's ``actorEmail``."""
    return f"key:{actor.key_name or actor.api_client_id} (user {actor.user_id})"


class DeploymentService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ledger: RolloutLedger,
        targets: Sequence[str] = (DeploymentTarget.LOCAL,),
    ) -> None:
        """``ledger`` writes every status change: the API's requests and instant rollbacks
        here, and the controller's passes (``deployments.ledger``, ``deployments.leases``)."""
        self.sessions = sessions
        self.ledger = ledger
        self.leases = ledger.leases
        self.targets = tuple(targets)

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
        target: str = DeploymentTarget.LOCAL,
    ) -> DeploymentView:
        if environment not in ENVIRONMENTS:
            raise Invalid(f"unknown environment {environment!r}", allowed=list(ENVIRONMENTS))
        if target not in self.targets:
            hint = (
                " (set MODELREG_KUBE_ENABLED=true)" if target == DeploymentTarget.KUBERNETES else ""
            )
            raise Invalid(
                f"target {target!r} is not available on this server{hint}; use one of "
                f"{list(self.targets)}"
            )
        try:
            spec = parse_spec(strategy, params)
        except SpecError as exc:
            fields = exc.problem_errors()  # the field in `errors`, as a body's 422 names it
            raise Invalid(str(exc), **({"errors": fields} if fields else {})) from None
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
                status=DeploymentStatus.INITIATED,
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
            add_event(
                s,
                deployment,
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
            return view_of(deployment, version, model.name)

    def _check_no_rollout(self, s: Session, model: AIModel, environment: str) -> None:
        """One rollout per model and environment. The caller holds the model's row lock, so
        two requests cannot both see none."""
        busy = s.scalar(
            select(AIModelDeployment)
            .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            .where(
                AIModelVersion.model_id == model.id,
                AIModelDeployment.environment == environment,
                AIModelDeployment.status.in_(ROLLING_OUT),
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
                AIModelDeployment.status == DeploymentStatus.ACTIVE,
            )
            .order_by(AIModelDeployment.created_at.desc())
            .limit(1)
        )

    def request(
        self,
        actor: Principal,
        deployment_id: uuid.UUID | str,
        action: str,
        *,
        reason: str | None = None,
    ) -> DeploymentView:
        """Ask the controller to promote, abort, pause, resume or undeploy."""
        if action not in ACTIONS:
            raise Invalid(f"unknown action {action!r}", allowed=list(ACTIONS))
        with self.sessions.begin() as s:
            deployment_id = self.resolve(s, deployment_id)
            dep = lock_deployment(s, deployment_id)
            version = s.get(AIModelVersion, dep.model_version_id)
            assert version is not None
            allowed = (DeploymentStatus.ACTIVE,) if action == "undeploy" else ROLLING_OUT
            if dep.status not in allowed:
                raise Conflict(
                    f"cannot {action} a deployment that is {dep.status}",
                    currentStatus=dep.status,
                    allowedStatuses=[str(a) for a in allowed],
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
                    stable=stable_version(s, dep),
                    allow_signature_change=allows_signature_change(dep),
                )
            now = utcnow()
            told = (reason or f"{action} requested") + (
                f" (supersedes the pending {superseded})" if superseded else ""
            )
            if action in ("pause", "resume"):
                dep.paused = action == "pause"
                dep.next_reconcile_at = None
                dep.updated_at = now
                add_event(
                    s,
                    dep,
                    version=version,
                    kind=f"{action}d",
                    actor=actor_name(actor),
                    reason=told,
                )
            else:
                self.ledger.ask(
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
            model = s.get(AIModel, version.model_id)
            assert model is not None
            return view_of(dep, version, model.name)

    def rollback(
        self, actor: Principal, model_name: str, environment: str, *, reason: str | None = None
    ) -> DeploymentView:
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
                    AIModelDeployment.status.in_(ROLLING_OUT),
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
            if previous is None or previous.status != DeploymentStatus.INACTIVE:
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
            allow_change = allows_signature_change(current)
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
                self.ledger.switch_back(
                    s,
                    current=current,
                    previous=previous,
                    current_version=cur_version,
                    previous_version=prev_version,
                    actor=who,
                    why=why,
                    now=now,
                )
                result = previous
            else:
                result = AIModelDeployment(
                    model_version_id=prev_version.id,
                    environment=environment,
                    status=DeploymentStatus.INITIATED,
                    deployment_strategy=Strategy.BLUE_GREEN,
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
                    Strategy.BLUE_GREEN, result.strategy_params, str(prev_version.id)
                )
                s.add(result)
                s.flush()
                add_event(
                    s,
                    result,
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
            answer = view_of(result, prev_version, model.name)
            strategy = current.deployment_strategy or Strategy.CANARY
        metrics.DEPLOYMENT_OUTCOMES.labels(
            model_name, environment, strategy, "manual_rollback"
        ).inc()
        if warm:
            self.ledger.routes_changed(model_name)
        return answer

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def resolve(s: Session, deployment_id: uuid.UUID | str) -> uuid.UUID:
        """A full deployment id, from itself or from a unique prefix of it."""
        return resolve_uuid(s, AIModelDeployment.id, deployment_id, what="deployment")

    def get(self, deployment_id: uuid.UUID | str) -> DeploymentView:
        """A deployment by its id, or a unique prefix of it (registry/ids.py)."""
        if not isinstance(deployment_id, uuid.UUID):
            with self.sessions() as s:
                deployment_id = self.resolve(s, deployment_id)
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
        self, deployment_id: uuid.UUID | str, *, after: int = 0, limit: int = 200
    ) -> list[EventView]:
        check_limit(limit)
        with self.sessions() as s:
            deployment_id = self.resolve(s, deployment_id)
            if s.get(AIModelDeployment, deployment_id) is None:
                raise NotFound(f"no deployment with id {deployment_id}")
            rows = s.scalars(
                select(DeploymentEvent)
                .where(DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.id > after)
                .order_by(DeploymentEvent.id)
                .limit(limit)
            )
            return event_views(s, rows)

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
            rows = event_views(s, s.scalars(stmt.order_by(DeploymentEvent.id).limit(limit)))
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
            return load_by_id(s, ids)


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


def _signature_override(diff: Sequence[str]) -> dict[str, Any]:
    """What the audit row adds when ``allowSignatureChange`` let a differing signature through."""
    return {"allowSignatureChange": True, "signatureDiff": list(diff)} if diff else {}


__all__ = [
    "CONTROLLER",
    "DeploymentService",
    "DeploymentView",
    "EventView",
    "Record",
    "VersionInfo",
]
