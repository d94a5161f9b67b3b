"""What a controller pass decided for one deployment (:class:`Record`), and what the ledger did
with a batch of them (:class:`Recorded`); ``registry/services/ledger.py`` writes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from registry.services.deployment_views import DeploymentView
from registry.services.routing import RouteEntry


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

    def changes_nothing(self, view: DeploymentView) -> bool:
        """Whether writing this record over ``view`` would leave the row as it is."""
        return (
            view.status == self.status
            and view.step_index == self.step_index
            and view.step_started_at == self.step_started_at
            and view.traffic_weight == self.traffic_weight
            and view.hold_since == self.hold_since
            and view.conditions == self.conditions
            and view.endpoint == self.endpoint
            and view.observed_state == self.observed_state
            and view.desired_state == self.desired_state
            and view.retry_count == 0
            and self.routes is None
            and not self.events
            and not self.finished
            and self.scale_down_at is None
            and not self.consumed_request
            and (
                self.kubernetes_details is None
                or self.kubernetes_details == view.kubernetes_details
            )
        )


@dataclass
class Recorded:
    """What :meth:`RolloutLedger.record_many` did with each outcome, in the order given."""

    results: list[bool | Exception]
    lease_lost: bool = False
    """The lease was lost: nothing was written (every result is False)."""
