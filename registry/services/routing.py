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

from sqlalchemy import delete, or_, select, update
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
    wanted = sorted((r for r in routes), key=lambda r: str(r.deployment_id))
    have = sorted(
        current_routes(s, model_id=model_id, environment=environment),
        key=lambda r: str(r.deployment_id),
    )
    if wanted == have:
        return False
    total = sum(r.weight for r in routes)
    if routes and total not in (0, 100):
        raise ValueError(f"route weights add up to {total}, not 100")
    s.execute(
        delete(DeploymentRoute).where(
            DeploymentRoute.model_id == model_id, DeploymentRoute.environment == environment
        )
    )
    now = utcnow()
    for r in routes:
        s.add(
            DeploymentRoute(
                deployment_id=r.deployment_id,
                model_id=model_id,
                environment=environment,
                model_version_id=r.model_version_id,
                version_number=r.version_number,
                url=r.url,
                weight=r.weight,
                role=r.role,
                updated_at=now,
            )
        )
    bump_generation(s)
    s.add(
        DeploymentEvent(
            deployment_id=deployment_id,
            model_id=model_id,
            environment=environment,
            model_version_id=model_version_id,
            version_number=version_number,
            at=now,
            kind="traffic",
            actor=actor,
            reason=reason,
            details={"routes": [r.to_dict() for r in routes]},
        )
    )
    s.flush()
    return True


def bump_generation(s: Session) -> None:
    s.execute(
        update(RoutingState)
        .where(RoutingState.id == 1)
        .values(generation=RoutingState.generation + 1)
    )


def read_generation(s: Session) -> int:
    value = s.scalar(select(RoutingState.generation).where(RoutingState.id == 1))
    return int(value or 0)
