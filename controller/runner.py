"""Running the controller: an APScheduler job that makes one pass every few seconds.

``start_controller`` is used by ``modelreg serve`` (the controller runs beside the API) and by
``modelreg controller`` (alone). The job is registered with ``max_instances=1`` and
``coalesce=True``: a slow pass is never overlapped by the next one, and missed runs collapse
into one. Several controllers may point at one database; the lease makes exactly one act.

While the database cannot be reached, passes are skipped with exponential backoff (from the
interval up to ``DB_RETRY_MAX_SECONDS``): the outage is logged once when it starts and once
when it ends, not once per pass, and the first pass that reaches the database again resumes
where the last one stopped.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from controller.analysis import PrometheusClient, StepAnalysis
from controller.reconcile import Controller
from deployers.base import Deployer
from deployers.local import LocalDeployer, child_env
from registry import metrics
from registry.db import DB_RETRY_MAX_SECONDS, DatabaseOutage, db_unavailable
from registry.types import utcnow
from registry.vocabulary import DeploymentTarget

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from registry.services import Registry

log = logging.getLogger("modelreg.controller")


def build_controller(registry: Registry, *, holder: str | None = None) -> Controller:
    settings = registry.settings
    assert settings.server_state_dir is not None
    local = LocalDeployer(
        state_dir=settings.server_state_dir,
        env=child_env(settings),
        artifacts=registry.store if settings.storage == "s3" else None,  # servers get no S3 keys
    )
    prometheus = PrometheusClient(settings.prometheus_url) if settings.prometheus_url else None
    deployers: dict[str, Deployer] = {DeploymentTarget.LOCAL: local}
    if settings.kube_enabled:
        from deployers.kubernetes import KubernetesDeployer

        deployers[DeploymentTarget.KUBERNETES] = KubernetesDeployer.from_settings(settings)
    return Controller(
        registry.deployments,
        deployers=deployers,
        analysis=StepAnalysis(prometheus=prometheus, feedback=registry.feedback),
        holder=holder,
        lease_ttl=timedelta(seconds=settings.controller_lease_seconds),
        # the API processes poll the routing generation every poll_seconds: twice that, so no
        # cached answer still names a server when it stops
        drain=timedelta(seconds=2 * registry.endpoints.poll_seconds),
    )


class ControllerRunner:
    def __init__(self, controller: Controller, *, interval: float) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.controller = controller
        self.interval = interval
        self.outage = DatabaseOutage(
            log,
            base=interval,
            down=f"database unavailable (%s): controller {controller.holder} stands by and "
            f"retries every {max(interval, DB_RETRY_MAX_SECONDS):g}s at most; rollouts hold "
            "where they are, model servers keep serving",
            up="database reachable again after %d failed pass(es); the controller resumes",
        )
        self._retry_at = 0.0
        # The scheduler's routine lines ("Adding job tentatively", and the warnings that a pass
        # that overran its interval was skipped or coalesced) and httpx's line per health
        # probe would bury what the controller says it did: quiet them before the first job is
        # added. A job that raises is still logged (ERROR).
        level = log.getEffectiveLevel()
        logging.getLogger("apscheduler").setLevel(max(logging.ERROR, level))
        logging.getLogger("httpx").setLevel(max(logging.WARNING, level))
        self.scheduler: BackgroundScheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(
            self.tick,
            "interval",
            seconds=interval,
            id="reconcile",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    def tick(self) -> None:
        """One pass; never raises (the scheduler would only log it less clearly)."""
        if time.monotonic() < self._retry_at:
            return
        try:
            result = self.controller.run_pass()
        except Exception as exc:
            if db_unavailable(exc):
                self._database_down(exc)
            else:
                log.exception("controller pass failed; the next one retries")
            return
        self.outage.succeeded()
        if result.leader and result.errors:
            log.warning(
                "controller pass over %d deployment(s): %d error(s)",
                result.deployments,
                result.errors,
            )

    def _database_down(self, exc: Exception) -> None:
        metrics.CONTROLLER_ERRORS.labels("temporary").inc()
        self._retry_at = time.monotonic() + self.outage.failed(exc)
        self.controller.stand_by()

    def start(self) -> None:
        log.info("controller %s started: a pass every %gs", self.controller.holder, self.interval)
        self.scheduler.start()
        self.scheduler.modify_job("reconcile", next_run_time=utcnow())

    def stop(self) -> None:
        """Stop passing and hand the lease back. Model servers keep running."""
        self.scheduler.shutdown(wait=True)
        try:
            self.controller.release()
        except Exception as exc:
            log.warning(
                "could not release the controller lease (%s); it expires by itself",
                exc.__class__.__name__,
            )
        log.info("controller %s stopped", self.controller.holder)
        self._say_servers_keep_running()

    def _say_servers_keep_running(self) -> None:
        """Stopping the controller stops no model server: say so, and how to stop them."""
        local = self.controller.deployers.get(DeploymentTarget.LOCAL)
        running = local.running() if isinstance(local, LocalDeployer) else []
        if not running:
            return
        pids = " ".join(str(record.pid) for record in running)
        log.warning(
            "%d model server(s) keep running and serving (pid %s); the next `modelreg serve` "
            "or `modelreg controller` adopts them. To stop them, `modelreg deployments "
            "undeploy ID` while a controller runs, or `kill` the pids",
            len(running),
            pids,
        )


def start_controller(registry: Registry, *, holder: str | None = None) -> ControllerRunner:
    runner = ControllerRunner(
        build_controller(registry, holder=holder),
        interval=registry.settings.controller_interval_seconds,
    )
    runner.start()
    return runner
