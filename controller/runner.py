"""Running the controller: an APScheduler job that makes one pass every few seconds.

``start_controller`` is used by ``modelreg serve`` (the controller runs beside the API) and by
``modelreg controller`` (alone). The job is registered with ``max_instances=1`` and
``coalesce=True``: a slow pass is never overlapped by the next one, and missed runs collapse
into one. Several controllers may point at one database; the lease makes exactly one act.

A rollout's pause does not wait for the interval's next tick: when a pass plans a rollout
whose next look is due before then (``PassResult.next_due``: a pause that ends in 0.7 s, say),
the next pass starts at that time instead, and the interval counts on from there. So a step's
latency is about one pass, not up to a whole interval more; an idle controller still passes
once an interval.

Nor does a request: between passes the runner looks every ``REQUEST_POLL_SECONDS`` for a
request it has not seen yet (an abort, a promote, an undeploy, a new deployment:
``RolloutLedger.waiting``), and starts a pass at once when it finds one (after the pass in
flight, if there is one). A request that stays pending (one the controller cannot carry out
yet) wakes it only once.

While the database cannot be reached, passes are skipped with exponential backoff (from the
interval up to ``DB_RETRY_MAX_SECONDS``): the outage is logged once when it starts and once
when it ends, not once per pass, and the first pass that reaches the database again resumes
where the last one stopped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta
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
    from apscheduler.events import JobExecutionEvent
    from apscheduler.schedulers.background import BackgroundScheduler

    from registry.services import Registry

log = logging.getLogger("modelreg.controller")

#: The least time between the end of a pass and an early next one (a rollout's due time).
EARLY_PASS_GAP = timedelta(seconds=0.05)
#: How often the runner looks for new requests between passes (one small read).
REQUEST_POLL_SECONDS = 0.25


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
        from apscheduler.events import EVENT_JOB_EXECUTED
        from apscheduler.schedulers.background import BackgroundScheduler

        self.controller = controller
        self._next_due: datetime | None = None
        self._lock = threading.Lock()  # the pass and the request poll are separate jobs
        self._in_pass = False
        self._wake_after_pass = False
        self._seen: frozenset[tuple[uuid.UUID, str]] = frozenset()
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
        for job, seconds, job_id in (
            (self.tick, interval, "reconcile"),
            (self.poll_requests, REQUEST_POLL_SECONDS, "requests"),
        ):
            self.scheduler.add_job(
                job,
                "interval",
                seconds=seconds,
                id=job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        # After the job's run is counted as finished (max_instances=1 would skip an early run
        # scheduled from inside it).
        self.scheduler.add_listener(self._schedule_early_pass, EVENT_JOB_EXECUTED)

    def tick(self) -> None:
        """One pass; never raises (the scheduler would only log it less clearly)."""
        self._next_due = None
        if time.monotonic() < self._retry_at:
            return
        with self._lock:
            self._in_pass = True
        try:
            result = self.controller.run_pass()
        except Exception as exc:
            if db_unavailable(exc):
                self._database_down(exc)
            else:
                log.exception("controller pass failed; the next one retries")
            return
        finally:
            with self._lock:
                self._in_pass = False
        self.outage.succeeded()
        self._next_due = result.next_due
        if result.leader and result.errors:
            log.warning(
                "controller pass over %d deployment(s): %d error(s)",
                result.deployments,
                result.errors,
            )

    def poll_requests(self) -> None:
        """Start a pass now (or right after the one in flight) if a request appeared that the
        last poll did not see. Never raises: an unreachable database is the pass's to report."""
        if time.monotonic() < self._retry_at or not self.controller.is_leader:
            return
        try:
            waiting = self.controller.ledger.waiting()
        except Exception:
            return
        new, self._seen = waiting - self._seen, waiting
        if not new:
            return
        with self._lock:
            if self._in_pass:  # it may have read its worklist before the request came
                self._wake_after_pass = True
                return
        self._pass_at(utcnow())

    def _schedule_early_pass(self, event: JobExecutionEvent) -> None:
        """After a pass: move the next one up to the due time of its earliest rollout, if that
        comes before the interval's next tick, or to now if a request came during it."""
        if event.job_id != "reconcile":
            return
        due, self._next_due = self._next_due, None
        with self._lock:
            wake, self._wake_after_pass = self._wake_after_pass, False
        if wake:
            due = utcnow()
        if due is not None:
            self._pass_at(max(due, utcnow() + EARLY_PASS_GAP))

    def _pass_at(self, when: datetime) -> None:
        job = self.scheduler.get_job("reconcile")
        if job is None or job.next_run_time is None:
            return  # shutting down
        if when < job.next_run_time:
            job.modify(next_run_time=when)

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
