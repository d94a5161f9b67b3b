"""The cluster's own router: for deployers that have one (a Gateway API HTTPRoute, an Istio
VirtualService), the routing table's split is written there too, after each pass over a
target, and only when it changed."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping

from controller.records import target_of
from deployers.base import ClusterRouter, WorkloadStatus
from registry import metrics
from registry.services.deployment_views import DeploymentView
from registry.services.routing import RouteEntry

log = logging.getLogger("modelreg.controller")


class ClusterRouteSync:
    def __init__(self, routes: Callable[[uuid.UUID, str], list[RouteEntry]]) -> None:
        """``routes(model_id, environment)`` reads what serves now."""
        self.routes = routes
        self._written: dict[tuple[str, uuid.UUID, str], list[tuple[str, int]]] = {}

    def sync(
        self,
        view: DeploymentView,
        *,
        deployer: ClusterRouter,
        observed: Mapping[uuid.UUID, WorkloadStatus],
    ) -> None:
        """Write the split of ``view``'s model and environment into the cluster's router."""
        backends = []
        for route in self.routes(view.model_id, view.environment):
            status = observed.get(route.deployment_id)
            service = (status.details or {}).get("service") if status is not None else None
            if route.weight > 0 and service:
                backends.append((str(service), route.weight))
        key = (view.target, view.model_id, view.environment)
        if self._written.get(key) == backends:
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
        self._written[key] = backends
        log.info("%s in %s: cluster route now %s", view.model_name, view.environment, backends)
