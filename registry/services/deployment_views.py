"""Snapshots of deployment rows: what the API answers with and what the controller plans from.

A :class:`DeploymentView` is read in one transaction and never changes. Its rollout spec is
parsed once, on first use, for its environment: the controller's pass, the analysis and the
ledger all read ``view.spec`` instead of parsing ``strategyParams`` again (and views with the
same params share one parsed spec).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.conditions import progress_message
from registry.models import AIModel, AIModelDeployment, AIModelVersion, DeploymentEvent, User
from registry.rollout_spec import RolloutSpec, SpecError, parse_spec
from registry.vocabulary import ROLLING_OUT, ArtifactFormat, Strategy


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
        return self.status in ROLLING_OUT

    @property
    def requested(self) -> str | None:
        """The action a request left for the controller (promote, abort, undeploy), if any."""
        return (self.requested_action or {}).get("action")

    @cached_property
    def _parsed(self) -> RolloutSpec | str:
        params = json.dumps(self.params, sort_keys=True, default=str)
        return _parse_shared(self.strategy, params, self.environment)

    @property
    def spec(self) -> RolloutSpec | None:
        """``strategyParams`` parsed for this environment; None when they do not parse."""
        parsed = self._parsed
        return parsed if isinstance(parsed, RolloutSpec) else None

    @property
    def spec_error(self) -> str | None:
        """Why ``strategyParams`` do not parse; None when they do."""
        parsed = self._parsed
        return parsed if isinstance(parsed, str) else None

    def spec_or_default(self) -> RolloutSpec:
        """The spec, or the strategy's defaults when the params do not parse (a deployment
        that serves must still be kept up, and retired ones stopped)."""
        return self.spec or RolloutSpec(strategy=self.strategy)


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
    actor_email: str | None = None
    """The email of the user behind ``actor`` (``key:NAME (user ID)``); None for the
    controller, or a user since deleted."""


@lru_cache(maxsize=4096)
def _parse_shared(strategy: str, params: str, environment: str) -> RolloutSpec | str:
    """One parsed spec per distinct (strategy, params, environment), shared by every view
    that has them: a pass over thousands of deployments with a few distinct specs parses a
    few, and keeps a few alive (a spec per view would be thousands of objects for the garbage
    collector to walk on every pass). Specs are frozen; the error is its message."""
    try:
        return parse_spec(strategy, json.loads(params), environment=environment)
    except SpecError as exc:
        return str(exc)


class DeploymentRow(NamedTuple):
    """The columns of a deployment row a view is made of, read as a Core row: a pass over
    10,000 deployments loaded them as ORM entities in twice the time the view itself took."""

    id: uuid.UUID
    environment: str
    target: str
    status: str
    deployment_strategy: str | None
    strategy_params: dict[str, Any] | None
    spec_hash: str | None
    step_index: int
    step_started_at: datetime | None
    traffic_weight: int
    hold_since: datetime | None
    paused: bool
    requested_action: dict[str, Any] | None
    conditions: list[dict[str, Any]] | None
    endpoint: str | None
    stable_deployment_id: uuid.UUID | None
    retry_count: int
    scale_down_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime | None
    observed_state: dict[str, Any] | None
    desired_state: dict[str, Any] | None
    kubernetes_details: dict[str, Any] | None


class VersionRow(NamedTuple):
    """The columns of a version row a view is made of (see :class:`DeploymentRow`)."""

    id: uuid.UUID
    model_id: uuid.UUID
    version_number: str
    format: str | None
    status: str
    sha256: str | None
    source_path: str | None
    parameters: dict[str, Any] | None


_DEPLOYMENT_COLUMNS = [getattr(AIModelDeployment, name) for name in DeploymentRow._fields]
_VERSION_COLUMNS = [getattr(AIModelVersion, name) for name in VersionRow._fields]
_SPLIT = len(_DEPLOYMENT_COLUMNS)
_END = _SPLIT + len(_VERSION_COLUMNS)


def load_views(s: Session, *where: Any) -> list[DeploymentView]:
    """Snapshots of the deployments matching ``where``, oldest first: one Core SELECT of the
    three tables' columns the views need, no ORM entity (and no identity map) per row."""
    stmt = (
        select(*_DEPLOYMENT_COLUMNS, *_VERSION_COLUMNS, AIModel.name)
        .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
        .join(AIModel, AIModel.id == AIModelVersion.model_id)
        .where(*where)
        .order_by(AIModelDeployment.created_at, AIModelDeployment.id)
    )
    deployment, version = DeploymentRow._make, VersionRow._make
    return [  # on the session's connection: the ORM's result machinery is not needed either
        view_of(deployment(row[:_SPLIT]), version(row[_SPLIT:_END]), row[_END])
        for row in s.connection().execute(stmt)
    ]


def load_by_id(s: Session, ids: Sequence[uuid.UUID]) -> list[DeploymentView]:
    """Snapshots of these deployments, in the order given (unknown ids are left out)."""
    if not ids:
        return []
    found = {v.id: v for v in load_views(s, AIModelDeployment.id.in_(list(ids)))}
    return [found[i] for i in ids if i in found]


def view_of(
    d: AIModelDeployment | DeploymentRow, v: AIModelVersion | VersionRow, model_name: str
) -> DeploymentView:
    """The view of a deployment, from its ORM entities (a request that just wrote them) or
    from the Core rows :func:`load_views` reads."""
    endpoint = (v.parameters or {}).get("endpoint") if v.format == ArtifactFormat.API else None
    model_file = (v.parameters or {}).get("modelFile")
    return DeploymentView(
        id=d.id,
        model_id=v.model_id,
        model_name=model_name,
        environment=d.environment,
        target=d.target,
        status=d.status,
        strategy=d.deployment_strategy or Strategy.CANARY,
        params=dict(d.strategy_params or {}),
        spec_hash=d.spec_hash,
        version=VersionInfo(
            id=v.id,
            number=v.version_number,
            format=v.format or ArtifactFormat.ONNX,
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
        reason=progress_message(d.conditions),
        kubernetes_details=d.kubernetes_details,
    )


#: The user id in an actor name (registry/services/deployments.py ``actor_name``).
_ACTOR_USER = re.compile(r"\(user ([0-9a-fA-F-]{36})\)$")


def event_views(s: Session, events: Iterable[DeploymentEvent]) -> list[EventView]:
    """Views of ``events``, each with its actor's email, read in one query for them all."""
    views = [event_view(e) for e in events]
    users = {v.id: _actor_user(v.actor) for v in views}
    wanted = {u for u in users.values() if u is not None}
    emails: dict[uuid.UUID, str] = {}
    if wanted:
        emails = dict(s.execute(select(User.id, User.email).where(User.id.in_(wanted))).all())
    return [
        replace(v, actor_email=emails.get(user)) if (user := users[v.id]) is not None else v
        for v in views
    ]


def _actor_user(actor: str) -> uuid.UUID | None:
    match = _ACTOR_USER.search(actor)
    return uuid.UUID(match.group(1)) if match else None


def event_view(e: DeploymentEvent) -> EventView:
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
