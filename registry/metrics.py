"""Prometheus metrics of the registry, the API and the controller.

Naming follows Prometheus conventions: the ``modelreg_`` prefix, ``_total`` for counters,
``_seconds`` for durations, base units. Labels stay low-cardinality: model, version,
environment, strategy, status, route *template*, result and kind; never a user id, a request
id or a raw path.

The counters and histograms here live in one process-wide :data:`METRICS` registry and are
updated where things happen (under ``modelreg serve``, in files summed across its API
processes and worker; see ``api.metrics.process_metrics``). A gauge here needs a
``multiprocess_mode`` without a pid label (``livemax``, ``livesum``). Values that are facts
in the database (deployments by status, traffic weights, the validation queue) are read at
scrape time by :class:`DatabaseCollector`, so every API replica and controller reports the
same truth.
(The model servers have their own metrics, in ``deployers/model_server/metrics.py``.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from registry.db import DatabaseOutage
from registry.models import (
    DEPLOYMENT_STATUSES,
    AIModel,
    AIModelDeployment,
    AIModelVersion,
    DeploymentRoute,
    ValidationRequest,
)
from registry.vocabulary import ROLLING_OUT, VALIDATION_PENDING

log = logging.getLogger("modelreg.metrics")


class _Pid:
    """This process's pid, renewed in a forked child. In multiprocess mode (under ``modelreg
    serve``) prometheus_client asks for the pid on every update of every value, to notice a
    fork; ``os.getpid`` is a system call, and those calls were a fifth of the resolve fast
    path's time (docs/benchmarks.md, "Endpoint resolution")."""

    value = os.getpid()

    @classmethod
    def renew(cls) -> None:
        cls.value = os.getpid()

    @classmethod
    def get(cls) -> int:
        return cls.value


#: prometheus_client leaves it unannotated: (the pid function) -> the value class.
_multiprocess_values: Callable[[Callable[[], int]], Any] = values.MultiProcessValue
os.register_at_fork(after_in_child=_Pid.renew)
if getattr(values.ValueClass, "_multiprocess", False):  # before the first metric is made
    values.ValueClass = _multiprocess_values(_Pid.get)

METRICS = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# -- the API --------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "modelreg_http_requests",
    "HTTP requests the API answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=METRICS,
)
HTTP_DURATION = Histogram(
    "modelreg_http_request_duration_seconds",
    "Time the API took to answer, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=METRICS,
)

# -- endpoint resolution ------------------------------------------------------------------------

ENDPOINT_RESOLUTIONS = Counter(
    "modelreg_endpoint_resolutions",
    "Endpoint-resolution answers, by model, environment and cache outcome (hit, miss).",
    ["model", "environment", "cache"],
    registry=METRICS,
)

# -- uploads ------------------------------------------------------------------------------------

UPLOADS = Counter(
    "modelreg_artifact_uploads",
    "Artifact uploads, by result (completed, failed).",
    ["result"],
    registry=METRICS,
)
UPLOAD_BYTES = Counter(
    "modelreg_artifact_upload_bytes",
    "Bytes of artifacts stored by completed uploads.",
    registry=METRICS,
)

# -- validations --------------------------------------------------------------------------------

VALIDATIONS = Counter(
    "modelreg_validations",
    "Completed validation runs, by result (passed, failed).",
    ["result"],
    registry=METRICS,
)
VALIDATION_DURATION = Histogram(
    "modelreg_validation_duration_seconds",
    "Time one validation run took (scan, functional check and benchmark).",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900),
    registry=METRICS,
)

# -- deployments and the controller -------------------------------------------------------------

DEPLOYMENT_OUTCOMES = Counter(
    "modelreg_deployment_outcomes",
    "Rollout outcomes, by model, environment, strategy and outcome "
    "(promoted, aborted, rolled_back, failed, manual_rollback).",
    ["model", "environment", "strategy", "outcome"],
    registry=METRICS,
)
CONTROLLER_PASS_DURATION = Histogram(
    "modelreg_controller_pass_duration_seconds",
    "Time one controller pass over every deployment took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=METRICS,
)
CONTROLLER_ERRORS = Counter(
    "modelreg_controller_errors",
    "Errors met while reconciling, by kind (temporary, permanent, unexpected).",
    ["kind"],
    registry=METRICS,
)
CONTROLLER_LEADER = Gauge(
    "modelreg_controller_leader",
    "1 while this process's controller holds the leader lease, else 0.",
    registry=METRICS,
    # Summed across processes (PROMETHEUS_MULTIPROC_DIR): the highest value of the processes
    # alive, with no pid label, so a process that held the lease and died stops counting.
    multiprocess_mode="livemax",
)

# -- feedback -----------------------------------------------------------------------------------

FEEDBACK_RATINGS = Histogram(
    "modelreg_feedback_rating",
    "Ratings (1-5) received, by model and version.",
    ["model", "version"],
    buckets=(1, 2, 3, 4, 5),
    registry=METRICS,
)
FEEDBACK_ITEMS = Counter(
    "modelreg_feedback_items",
    "Feedback items received, by result (kept, rejected).",
    ["result"],
    registry=METRICS,
)

# -- scrape-time facts from the database --------------------------------------------------------

METRICS_COLLECT_ERRORS = Counter(
    "modelreg_metrics_collect_errors",
    "Scrapes whose database-backed gauges could not be read (the database was unreachable).",
    registry=METRICS,
)


@dataclass(frozen=True)
class DatabaseGauges:
    """The database facts the API reports at scrape time, read in one session."""

    deployments_by_status: dict[str, int]
    #: (model, version, environment) → the summed weight of its routes.
    traffic_weights: dict[tuple[str, str, str], int]
    #: (model, version, environment) → the 1-based step of its rollout in progress.
    rollout_steps: dict[tuple[str, str, str], int]
    validation_queue_depth: int


def read_database_gauges(s: Session) -> DatabaseGauges:
    """Four aggregate queries (indexes on status and (model, environment)); no rows loaded."""
    by_status = dict.fromkeys(DEPLOYMENT_STATUSES, 0)
    for status, count in s.execute(
        select(AIModelDeployment.status, func.count()).group_by(AIModelDeployment.status)
    ):
        by_status[status] = int(count)
    weights = {
        (model, version, env): int(weight or 0)
        for model, version, env, weight in s.execute(
            select(
                AIModel.name,
                DeploymentRoute.version_number,
                DeploymentRoute.environment,
                func.sum(DeploymentRoute.weight),
            )
            .join(AIModel, AIModel.id == DeploymentRoute.model_id)
            .group_by(AIModel.name, DeploymentRoute.version_number, DeploymentRoute.environment)
        )
    }
    steps = {
        (model, version, env): int(step) + 1
        for model, version, env, step in s.execute(
            select(
                AIModel.name,
                AIModelVersion.version_number,
                AIModelDeployment.environment,
                func.max(AIModelDeployment.step_index),
            )
            .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            .join(AIModel, AIModel.id == AIModelVersion.model_id)
            # Deployments whose rollout is in progress: their ``step_index`` is reported.
            .where(AIModelDeployment.status.in_(ROLLING_OUT))
            .group_by(AIModel.name, AIModelVersion.version_number, AIModelDeployment.environment)
        )
    }
    depth = s.scalar(
        select(func.count())
        .select_from(ValidationRequest)
        .where(ValidationRequest.status.in_(VALIDATION_PENDING))  # the queue depth
    )
    return DatabaseGauges(
        deployments_by_status=by_status,
        traffic_weights=weights,
        rollout_steps=steps,
        validation_queue_depth=int(depth or 0),
    )


_ROLLOUT_LABELS = ["model", "version", "environment"]


def _families() -> tuple[
    GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
]:
    return (
        GaugeMetricFamily("modelreg_deployments", "Deployments, by status.", labels=["status"]),
        GaugeMetricFamily(
            "modelreg_deployment_traffic_weight",
            "Traffic weight (0-100) each version serves now, from deployment_route.",
            labels=_ROLLOUT_LABELS,
        ),
        GaugeMetricFamily(
            "modelreg_deployment_step",
            "Current step (1-based) of each rollout in progress (Initiated or Deploying).",
            labels=_ROLLOUT_LABELS,
        ),
        GaugeMetricFamily(
            "modelreg_validation_queue_depth",
            "Validation requests not finished yet (Queued or Running).",
        ),
    )


def _mean_rating_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "modelreg_feedback_mean_rating",
        "Mean rating (1-5) of each serving version over the current window: the rollout "
        "step in progress, else since the last traffic change.",
        labels=_ROLLOUT_LABELS,
    )


class DatabaseCollector(Collector):
    """Deployment and validation-queue gauges, read from the database at scrape time.

    Every API replica reports the same truth, because it is read from the database and not
    kept in the process. When the database cannot be read the scrape still succeeds: these
    families are left out and ``modelreg_metrics_collect_errors_total`` goes up.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        mean_ratings: Callable[[Session], Mapping[tuple[str, str, str], float]] | None = None,
    ) -> None:
        """``mean_ratings(session)`` gives ``modelreg_feedback_mean_rating``: (model,
        version, environment) → the mean rating over the current window."""
        self.sessions = sessions
        self.mean_ratings = mean_ratings
        self._outage = DatabaseOutage(
            log,
            down="cannot read the database-backed metrics (%s); they are left out of scrapes "
            "until it answers again",
            up="the database-backed metrics are readable again after %d failed scrape(s)",
        )

    def describe(self) -> Iterable[Metric]:
        # Names only: registering the collector must not query the database.
        return [*_families(), _mean_rating_family()]

    def collect(self) -> Iterable[Metric]:
        try:
            with self.sessions() as s:
                gauges = read_database_gauges(s)
                ratings = dict(self.mean_ratings(s)) if self.mean_ratings else {}
        except Exception as exc:  # counted and logged (once per outage): a scrape never fails
            METRICS_COLLECT_ERRORS.inc()
            self._outage.failed(exc)
            return []
        self._outage.succeeded()
        deployments, weights, steps, queue = _families()
        for status, count in sorted(gauges.deployments_by_status.items()):
            deployments.add_metric([status], count)
        for labels, weight in sorted(gauges.traffic_weights.items()):
            weights.add_metric(list(labels), weight)
        for labels, step in sorted(gauges.rollout_steps.items()):
            steps.add_metric(list(labels), step)
        queue.add_metric([], gauges.validation_queue_depth)
        mean = _mean_rating_family()
        for labels, value in sorted(ratings.items()):
            mean.add_metric(list(labels), value)
        return [deployments, weights, steps, queue, mean]
