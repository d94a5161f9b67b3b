"""The routing table: which deployments serve a model in an environment, with which weights.

The controller writes it (``set_routes``) in the same transaction as the rollout progress it
belongs to. Everything else reads it here: ``current_routes`` (every route of a model in an
environment: endpoint resolution, the deployment service), ``serving_routes`` (those that
serve: with traffic, or a blue-green preview) and ``every_serving_route`` (the same, over all
models and environments: the feedback gauge). Every write bumps ``routing_state.generation``
and appends a ``traffic`` event with the whole set, so the ledger can answer "what served model
M in environment E at time T".
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from registry.models import AIModel, DeploymentEvent, DeploymentRoute, RoutingState
from registry.types import utcnow
from registry.vocabulary import RouteRole

#: A route that serves: it takes traffic, or it is a blue-green preview (reachable, no traffic).
_SERVES = or_(DeploymentRoute.weight > 0, DeploymentRoute.role == RouteRole.PREVIEW)


@dataclass(frozen=True)
class RouteEntry:
    deployment_id: uuid.UUID
    model_version_id: uuid.UUID
    version_number: str
    url: str
    weight: int
    role: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "deploymentId": str(self.deployment_id),
            "modelVersionId": str(self.model_version_id),
            "versionNumber": self.version_number,
            "url": self.url,
            "weight": self.weight,
            "role": self.role,
        }


@dataclass(frozen=True)
class ModelRoute:
    """A route, with the model and environment whose routing set it belongs to."""

    model_id: uuid.UUID
    model_name: str
    environment: str
    route: RouteEntry


def _entry(r: DeploymentRoute) -> RouteEntry:
    return RouteEntry(
        deployment_id=r.deployment_id,
        model_version_id=r.model_version_id,
        version_number=r.version_number,
        url=r.url,
        weight=r.weight,
        role=r.role,
    )


def current_routes(s: Session, *, model_id: uuid.UUID, environment: str) -> list[RouteEntry]:
    """Every route of (model, environment), heaviest first (then by version number)."""
    rows = s.scalars(
        select(DeploymentRoute)
        .where(DeploymentRoute.model_id == model_id, DeploymentRoute.environment == environment)
        .order_by(DeploymentRoute.weight.desc(), DeploymentRoute.version_number)
    )
    return [_entry(r) for r in rows]


def serving_routes(s: Session, *, model_id: uuid.UUID, environment: str) -> list[RouteEntry]:
    """The routes of (model, environment) that serve, in ``current_routes``' order."""
    rows = s.scalars(
        select(DeploymentRoute)
        .where(
            DeploymentRoute.model_id == model_id,
            DeploymentRoute.environment == environment,
            _SERVES,
        )
        .order_by(DeploymentRoute.weight.desc(), DeploymentRoute.version_number)
    )
    return [_entry(r) for r in rows]


def every_serving_route(s: Session) -> list[ModelRoute]:
    """The routes that serve, of every model in every environment (in no set order)."""
    rows = s.execute(
        select(DeploymentRoute, AIModel.name)
        .join(AIModel, AIModel.id == DeploymentRoute.model_id)
        .where(_SERVES)
    ).all()
    return [
        ModelRoute(model_id=r.model_id, model_name=name, environment=r.environment, route=_entry(r))
        for r, name in rows
    ]


def set_routes(
    s: Session,
    *,
    model_id: uuid.UUID,
    environment: str,
    routes: Sequence[RouteEntry],
    deployment_id: uuid.UUID,
    actor: str,
    reason: str,
    model_version_id: uuid.UUID | None = None,
    version_number: str | None = None,
) -> bool:
    """Make ``routes`` the whole routing set of (model, environment). Returns False (and writes
    nothing) when it already is. The ``traffic`` event names the deployment (and version)
    whose change it was."""
    writes = RouteWrites(s, [(model_id, environment)])
    changed = writes.set(
        model_id=model_id,
        environment=environment,
        routes=routes,
        deployment_id=deployment_id,
        actor=actor,
        reason=reason,
        model_version_id=model_version_id,
        version_number=version_number,
    )
    writes.flush()
    return changed


_EVENT_ROWS = "modelreg.event_rows"


def add_event_row(s: Session, row: dict[str, Any]) -> None:
    """Add a ``deployment_event`` row (its columns): at once, or, inside a batch's
    :class:`RouteWrites` with ``batch_events``, queued for its flush."""
    queued = s.info.get(_EVENT_ROWS)
    if queued is None:
        s.add(DeploymentEvent(**row))
    else:
        queued.append(row)


class RouteWrites:
    """The routing sets one transaction changes, written together when it ends.

    The sets of ``keys`` (model id, environment) are read in one query. :meth:`set` compares
    a new set with the one held (stored, or set earlier in this transaction) and, when it
    differs, keeps it and adds the ``traffic`` event at once (so the ledger's order is the
    order of the changes). :meth:`flush` replaces the changed sets' rows and bumps the
    routing generation once, however many sets changed; nothing is written when none did.

    With ``batch_events``, every ledger event of the transaction (:func:`add_event_row`) is
    queued too, and :meth:`flush` inserts them in one statement, in the order they came.
    """

    def __init__(
        self, s: Session, keys: Sequence[tuple[uuid.UUID, str]], *, batch_events: bool = False
    ) -> None:
        self.s = s
        self.sets: dict[tuple[uuid.UUID, str], list[RouteEntry]] = {}
        self.changed: dict[tuple[uuid.UUID, str], None] = {}
        self.events: list[dict[str, Any]] | None = None
        if batch_events:
            self.events = s.info[_EVENT_ROWS] = []
        self._load(keys)

    def _load(self, keys: Sequence[tuple[uuid.UUID, str]]) -> None:
        wanted = [k for k in dict.fromkeys(keys) if k not in self.sets]
        if not wanted:
            return
        loaded: dict[tuple[uuid.UUID, str], list[RouteEntry]] = {k: [] for k in wanted}
        rows = self.s.scalars(
            select(DeploymentRoute).where(
                DeploymentRoute.model_id.in_({model for model, _ in wanted})
            )
        )
        for r in rows:
            held = loaded.get((r.model_id, r.environment))
            if held is not None:
                held.append(_entry(r))
        self.sets.update(loaded)

    def set(
        self,
        *,
        model_id: uuid.UUID,
        environment: str,
        routes: Sequence[RouteEntry],
        deployment_id: uuid.UUID,
        actor: str,
        reason: str,
        model_version_id: uuid.UUID | None = None,
        version_number: str | None = None,
    ) -> bool:
        """Make ``routes`` the set of (model, environment) when this transaction ends; False
        when it already is."""
        key = (model_id, environment)
        self._load([key])
        wanted = sorted(routes, key=lambda r: str(r.deployment_id))
        if wanted == sorted(self.sets[key], key=lambda r: str(r.deployment_id)):
            return False
        total = sum(r.weight for r in routes)
        if routes and total not in (0, 100):
            raise ValueError(f"route weights add up to {total}, not 100")
        self.sets[key] = list(routes)
        self.changed[key] = None
        add_event_row(
            self.s,
            {
                "deployment_id": deployment_id,
                "model_id": model_id,
                "environment": environment,
                "model_version_id": model_version_id,
                "version_number": version_number,
                "at": utcnow(),
                "kind": "traffic",
                "actor": actor,
                "reason": reason,
                "details": {"routes": [r.to_dict() for r in routes]},
            },
        )
        return True

    def flush(self) -> None:
        s = self.s
        if self.events is not None:
            s.info.pop(_EVENT_ROWS, None)
            if self.events:
                s.execute(insert(DeploymentEvent), self.events)
            self.events = None
        if not self.changed:
            s.flush()
            return
        by_environment: dict[str, list[uuid.UUID]] = {}
        for model_id, environment in self.changed:
            by_environment.setdefault(environment, []).append(model_id)
        for environment, models in by_environment.items():
            s.execute(
                delete(DeploymentRoute).where(
                    DeploymentRoute.environment == environment,
                    DeploymentRoute.model_id.in_(models),
                )
            )
        now = utcnow()
        rows = [
            {
                "deployment_id": r.deployment_id,
                "model_id": model_id,
                "environment": environment,
                "model_version_id": r.model_version_id,
                "version_number": r.version_number,
                "url": r.url,
                "weight": r.weight,
                "role": r.role,
                "updated_at": now,
            }
            for model_id, environment in self.changed
            for r in self.sets[(model_id, environment)]
        ]
        if rows:
            s.execute(insert(DeploymentRoute), rows)
        bump_generation(s)
        s.flush()
        self.changed.clear()


def bump_generation(s: Session) -> None:
    s.execute(
        update(RoutingState)
        .where(RoutingState.id == 1)
        .values(generation=RoutingState.generation + 1)
    )


def read_generation(s: Session) -> int:
    value = s.scalar(select(RoutingState.generation).where(RoutingState.id == 1))
    return int(value or 0)
