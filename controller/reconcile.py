"""One controller pass: for each deployment, observe → plan → apply → record.

- **Observe**: the deployer reports each target's workloads once per pass.
- **Plan**: a rollout is planned by its strategy (``controller/strategies/``); an Active or
  retired deployment, an undeploy and a permanent error by the steady plans next to them
  (``controller/strategies/steady.py``). Reconcile never names a strategy.
- **Apply, record, apply**: ``controller/records.py`` turns the plan into workloads and the
  one record the ledger writes (``registry/services/ledger.py``); :meth:`Controller._step`
  applies the growing workloads and adds the record to the pass's batch; when the batch is
  recorded (``RECORD_BATCH`` deployments per transaction, the lease checked once in it), the
  shrinking workloads of the records written are applied.

Deployments are grouped by target (one model in one environment on one kind of
infrastructure): the deployer observes each target once per pass, and its rollout (at most one)
is planned first, then its Active deployment, then retired ones whose servers must go.

Ordering keeps clients safe: workloads that grow are applied before the new routes are
recorded, and workloads that shrink only after, so the routing table never points at a server
that is not ready or already stopped for longer than one pass. When the API runs in other
processes (``modelreg serve``, replicas), a batch that moved routes away from workloads it then
shrinks first waits ``drain``: those processes see route changes through their routing
generation poll, so a server is stopped only once none of them can still hand it out.

Errors stay with their deployment. A :class:`TemporaryError` (or anything unexpected) is
retried with exponential backoff and shown as a ``ReconcileError`` condition; a
:class:`PermanentError` fails the rollout, with the reason, and traffic goes back to stable.
An unreachable database is not a deployment's error: it ends the pass (nothing could be
recorded anyway), and the runner retries the next one with backoff. Every step is re-planned
from what the deployer observes, so a pass cut short is simply done again.

At most every ``sweep_every``, the lease holder also sweeps for orphans
(``controller/orphans.py``): workloads a deployer runs that no deployment row owns.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from controller import strategies
from controller.analysis import Analysis, StepAnalysis
from controller.cluster_routes import ClusterRouteSync
from controller.orphans import sweep_orphans
from controller.records import Step, plan_step, slot_state, target_of
from controller.strategies.base import Observed, Plan, Progress, Request, Verdict
from controller.strategies.steady import plan_active, plan_failed, plan_observe, plan_retired
from deployers.base import (
    ClusterRouter,
    Deployer,
    PermanentError,
    TemporaryError,
    WorkloadStatus,
)
from registry import metrics
from registry.db import db_unavailable
from registry.services.deployment_views import DeploymentView
from registry.services.deployments import DeploymentService
from registry.types import utcnow
from registry.vocabulary import DeploymentStatus

log = logging.getLogger("modelreg.controller")

OUTCOME_EVENTS = ("promoted", "aborted", "rolled_back", "failed")
SWEEP_EVERY = timedelta(seconds=30)
"""How often the lease holder looks for workloads that no deployment row owns."""
RECORD_BATCH = 200
"""A pass records this many deployments' outcomes per transaction (or what it planned in
``BATCH_SECONDS``, if fewer)."""
BATCH_SECONDS = 1.0


@dataclass
class PassResult:
    leader: bool
    deployments: int = 0
    errors: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    orphans_stopped: int = 0
    #: When the earliest wait this pass planned ends (a step's pause, a preview, a hold's
    #: limit: ``Plan.due``); ``None`` when none does. The runner starts a pass then.
    next_due: datetime | None = None


@dataclass(frozen=True)
class _Pending:
    """A step planned and grown, its record waiting for the batch's transaction."""

    view: DeploymentView
    plan: Plan
    step: Step
    deployer: Deployer | None
    now: datetime
    rolling_back: str | None


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Controller:
    def __init__(
        self,
        deployments: DeploymentService,
        *,
        deployers: Mapping[str, Deployer],
        analysis: Analysis | None = None,
        holder: str | None = None,
        lease_ttl: timedelta = timedelta(seconds=15),
        sweep_every: timedelta = SWEEP_EVERY,
        drain: timedelta = timedelta(0),
    ) -> None:
        self.deployments = deployments
        self.drain = drain
        self.sleep: Callable[[float], None] = time.sleep  # the drain's; tests watch it
        self.ledger = deployments.ledger
        self.leases = deployments.leases
        self.deployers = deployers
        self.analysis = analysis or StepAnalysis()
        self.holder = holder or default_holder()
        self.lease_ttl = lease_ttl
        self.is_leader = False
        self.sweep_every = sweep_every
        self._swept_at: datetime | None = None
        self.cluster_routes = ClusterRouteSync(deployments.routes)
        self._pending: list[_Pending] = []
        self._routers: dict[int, bool] = {}
        self._after: list[Callable[[], None]] = []
        self._result: PassResult | None = None

    # -- the pass ----------------------------------------------------------------------------

    def run_pass(self, now: datetime | None = None) -> PassResult:
        """One pass over every deployment, if this controller holds the lease."""
        # A pass builds a few objects per deployment that live until it ends (views, plans,
        # records): at 10,000 deployments the cyclic collector's full collections walked them
        # again and again. Reference counting frees them anyway; the collector runs after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run_pass(now)
        finally:
            if collecting:
                gc.enable()

    def _run_pass(self, now: datetime | None) -> PassResult:
        started = time.perf_counter()
        renewed = time.monotonic()  # before the acquire: the lease runs from then, not after
        leader = self.leases.acquire(self.holder, ttl=self.lease_ttl)
        if leader != self.is_leader:
            log.info(
                "controller %s %s",
                self.holder,
                "is the leader now" if leader else "is no longer the leader; standing by",
            )
            self.is_leader = leader
        result = PassResult(leader=leader)
        metrics.CONTROLLER_LEADER.set(1 if leader else 0)
        if not leader:
            return result
        now = now or utcnow()
        groups: dict[tuple[str, uuid.UUID, str], list[DeploymentView]] = defaultdict(list)
        for view in self.ledger.worklist(now):
            groups[(view.target, view.model_id, view.environment)].append(view)
        renew_every = self.lease_ttl.total_seconds() / 3
        batched = time.monotonic()
        self._pending, self._after, self._result = [], [], result
        for views in groups.values():
            if time.monotonic() - renewed > renew_every:
                # A long pass keeps its lease; one that lost it stops (its writes would be
                # refused anyway) and leaves the rest to the new leader.
                asked = time.monotonic()
                if not self.leases.acquire(self.holder, ttl=self.lease_ttl):
                    log.warning("controller %s lost its lease during a pass", self.holder)
                    self.is_leader = False
                    break
                renewed = asked
            result.deployments += len(views)
            self._reconcile_target(views, now=now, result=result)
            if len(self._pending) >= RECORD_BATCH or time.monotonic() - batched > BATCH_SECONDS:
                self._flush()
                batched = time.monotonic()
                if not self.is_leader:
                    break
        self._flush()  # what is left (refused, if the lease was lost)
        if self.is_leader and self._sweep_due(now):
            # Only the lease holder stops anything: make sure it still is one.
            if self.leases.acquire(self.holder, ttl=self.lease_ttl):
                result.orphans_stopped = self.sweep_orphans()
                self._swept_at = now
            else:
                log.warning("controller %s lost its lease during a pass", self.holder)
                self.is_leader = False
        result.seconds = time.perf_counter() - started
        metrics.CONTROLLER_PASS_DURATION.observe(result.seconds)
        return result

    def _sweep_due(self, now: datetime) -> bool:
        last = self._swept_at
        return last is None or now < last or now - last >= self.sweep_every

    def sweep_orphans(self) -> int:
        """Stop, and forget, every workload no deployment row owns; one log line each. Returns
        how many were stopped. Call it only while holding the lease."""
        return sweep_orphans(self.deployers, load=self.deployments.load)

    def release(self) -> None:
        self.leases.release(self.holder)
        self.is_leader = False

    def stand_by(self) -> None:
        """The database cannot be reached: this controller cannot know whether it still holds
        the lease, so it acts as if it did not until a pass renews it."""
        self.is_leader = False
        metrics.CONTROLLER_LEADER.set(0)

    def _reconcile_target(
        self, views: list[DeploymentView], *, now: datetime, result: PassResult
    ) -> None:
        first = views[0]
        deployer = self.deployers.get(first.target)
        if deployer is None:
            for view in views:
                self._fail(view, f"no deployer for target {view.target!r}", now=now, result=result)
            return
        try:
            observed = deployer.observe(target_of(first))
        except Exception as exc:
            for view in views:
                self._retry(view, f"observe failed: {exc}", now=now, result=result)
            return
        rollouts = [v for v in views if v.in_rollout]
        actives = [v for v in views if v.status == DeploymentStatus.ACTIVE]
        retired = [v for v in views if not v.in_rollout and v.status != DeploymentStatus.ACTIVE]
        stable = actives[-1] if actives else None
        for view in rollouts[:1]:
            self._guarded(
                view,
                lambda v=view: self.reconcile_rollout(
                    v, stable=stable, observed=observed, deployer=deployer, now=now
                ),
                now=now,
                result=result,
                deployer=deployer,
                observed=observed,
                stable=stable,
            )
        if not rollouts:
            for view in actives:
                self._guarded(
                    view,
                    lambda v=view: self.reconcile_active(
                        v, observed=observed, deployer=deployer, now=now
                    ),
                    now=now,
                    result=result,
                )
        else:
            for view in actives:
                self._guarded(
                    view,
                    lambda v=view: self._observe_only(v, observed=observed, now=now),
                    now=now,
                    result=result,
                )
        for view in retired:
            self._guarded(
                view,
                lambda v=view: self.reconcile_retired(
                    v, observed=observed, deployer=deployer, now=now
                ),
                now=now,
                result=result,
            )
        if self._is_router(deployer) and deployer.writes_routes:
            # After the batch that holds this target's records: the routes it wrote.
            router = deployer
            self._after.append(
                lambda: self.cluster_routes.sync(first, deployer=router, observed=observed)
            )

    def _is_router(self, deployer: Deployer) -> TypeGuard[ClusterRouter]:
        """``isinstance(deployer, ClusterRouter)``, asked once per deployer (a runtime protocol
        check costs tens of µs, once per target per pass)."""
        known = self._routers.get(id(deployer))
        if known is None:
            known = self._routers[id(deployer)] = isinstance(deployer, ClusterRouter)
        return known

    def _guarded(
        self,
        view: DeploymentView,
        step: Any,
        *,
        now: datetime,
        result: PassResult,
        deployer: Deployer | None = None,
        observed: Mapping[uuid.UUID, WorkloadStatus] | None = None,
        stable: DeploymentView | None = None,
    ) -> None:
        try:
            step()
        except PermanentError as exc:
            result.errors += 1
            if deployer is not None and observed is not None and view.in_rollout:
                self._abandon(view, str(exc), stable=stable, observed=observed, deployer=deployer)
            else:
                self._fail(view, str(exc), now=now, result=result)
        except (TemporaryError, Exception) as exc:  # one deployment never stops the pass
            if db_unavailable(exc):
                raise  # ... but an unreachable database does: see the module docstring
            self._failed(view, exc, now=now, result=result)

    def _failed(
        self, view: DeploymentView, exc: Exception, *, now: datetime, result: PassResult | None
    ) -> None:
        if not isinstance(exc, TemporaryError):
            metrics.CONTROLLER_ERRORS.labels("unexpected").inc()
            log.error("deployment %s: unexpected error", view.id, exc_info=exc)
        self._retry(view, f"{type(exc).__name__}: {exc}", now=now, result=result)

    # -- a rollout ---------------------------------------------------------------------------

    def reconcile_rollout(
        self,
        view: DeploymentView,
        *,
        stable: DeploymentView | None,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        now: datetime,
    ) -> None:
        spec = view.spec
        if spec is None:
            raise PermanentError(f"strategyParams: {view.spec_error}")
        candidate = observed.get(view.id)
        stable_spec = stable.spec if stable is not None else None
        seen = Observed(
            candidate=slot_state(candidate),
            has_stable=stable is not None,
            stable_replicas=stable_spec.replicas if stable_spec else 0,
        )
        verdict = self.analysis.judge(
            view,
            workload=candidate,
            now=now,
            stable=stable,
            stable_workload=observed.get(stable.id) if stable is not None else None,
        )
        action = view.requested
        plan = strategies.plan(
            spec,
            observed=seen,
            progress=_progress(view),
            verdict=verdict,
            now=now,
            request=Request(
                paused=view.paused, action=action if action in ("promote", "abort") else None
            ),
        )
        self._step(
            view,
            plan,
            stable=stable,
            observed=observed,
            deployer=deployer,
            verdict=verdict if view.status != DeploymentStatus.INITIATED else None,
            now=now,
        )

    def reconcile_active(
        self,
        view: DeploymentView,
        *,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        now: datetime,
    ) -> None:
        plan = plan_active(view.spec_or_default(), _progress(view), action=view.requested, now=now)
        self._step(view, plan, stable=None, observed=observed, deployer=deployer, now=now)

    def _observe_only(
        self, view: DeploymentView, *, observed: Mapping[uuid.UUID, WorkloadStatus], now: datetime
    ) -> None:
        """The Active deployment while a rollout owns its replicas and its route."""
        self._step(view, plan_observe(_progress(view)), stable=None, observed=observed, now=now)

    def reconcile_retired(
        self,
        view: DeploymentView,
        *,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
        now: datetime,
    ) -> None:
        plan = plan_retired(
            view.spec_or_default(),
            _progress(view),
            observed=slot_state(observed.get(view.id)),
            scale_down_at=view.scale_down_at,
            now=now,
        )
        self._step(view, plan, stable=None, observed=observed, deployer=deployer, now=now)

    # -- the step: apply what grows, record, apply what shrinks --------------------------------

    def _step(
        self,
        view: DeploymentView,
        plan: Plan,
        *,
        stable: DeploymentView | None,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        now: datetime,
        deployer: Deployer | None = None,
        verdict: Verdict | None = None,
        rolling_back: str | None = None,
    ) -> None:
        """Carry out ``plan``. Workloads that grow are applied now, before the record (the
        routes it writes may name them); the record joins the pass's batch, and the workloads
        that shrink are applied once the batch is committed (the routes no longer name them).
        ``rolling_back``: the permanent error this plan rolls back from."""
        step = plan_step(view, plan, observed=observed, stable=stable, verdict=verdict, now=now)
        result = self._result
        if plan.due is not None and result is not None:
            result.next_due = (
                plan.due if result.next_due is None else min(result.next_due, plan.due)
            )
        if step.grow and deployer is not None:
            deployer.apply(target_of(view), step.grow)
        pending = _Pending(view, plan, step, deployer, now, rolling_back)
        if step.record.changes_nothing(view):
            self._recorded(pending)  # nothing to write (a steady pass): nothing to wait for
        else:
            self._pending.append(pending)

    def _flush(self) -> None:
        """Record the batch: one transaction (see ``RolloutLedger.record_many``), then what
        follows each record that was written."""
        pending, self._pending = self._pending, []
        after, self._after = self._after, []
        start = 0
        while start < len(pending):  # one batch per pass clock (a rollback reads the wall's)
            now = pending[start].now
            end = start
            while end < len(pending) and pending[end].now == now:
                end += 1
            part = pending[start:end]
            done = self.ledger.record_many(
                [(p.view, p.step.record) for p in part], holder=self.holder, now=now
            )
            if done.lease_lost and self.is_leader:
                log.warning("controller %s lost its lease during a pass", self.holder)
                self.is_leader = False
            if self.drain and any(
                p.step.shrink and p.deployer is not None and outcome is True
                for p, outcome in zip(part, done.results, strict=True)
            ):
                self.sleep(self.drain.total_seconds())
            for p, outcome in zip(part, done.results, strict=True):
                if isinstance(outcome, Exception):
                    self._record_failed(p, outcome)
                elif outcome:  # False: the row changed, or the lease was lost: plan again
                    self._recorded(p)
            start = end
        if self.is_leader:
            for sync in after:
                sync()

    def _record_failed(self, p: _Pending, exc: Exception) -> None:
        if p.rolling_back is None:
            self._failed(p.view, exc, now=p.now, result=self._result)
            return
        log.error("deployment %s: could not roll back", p.view.id, exc_info=exc)
        self._retry(p.view, f"rolling back after {p.rolling_back}: {exc}", now=p.now, result=None)

    def _recorded(self, p: _Pending) -> None:
        view, step = p.view, p.step
        if step.shrink and p.deployer is not None:
            try:
                p.deployer.apply(target_of(view), step.shrink)
            except Exception as exc:  # the routes no longer point there; the next pass retries
                log.warning("deployment %s: scaling down failed, will retry: %s", view.id, exc)
        for kind, reason, _ in step.record.events:
            if kind in OUTCOME_EVENTS:
                metrics.DEPLOYMENT_OUTCOMES.labels(
                    view.model_name, view.environment, view.strategy, kind
                ).inc()
            if kind != "verdict":
                log.info(
                    "%s %s in %s: %s: %s",
                    view.model_name,
                    view.version.number,
                    view.environment,
                    kind,
                    reason,
                )
        if p.plan.finished:
            log.info(
                "%s %s (%s, deployment %s): servers stopped",
                view.model_name,
                view.version.number,
                view.status,
                view.id,
            )

    # -- errors ------------------------------------------------------------------------------

    def _abandon(
        self,
        view: DeploymentView,
        error: str,
        *,
        stable: DeploymentView | None,
        observed: Mapping[uuid.UUID, WorkloadStatus],
        deployer: Deployer,
    ) -> None:
        """A permanent error in a rollout: traffic back to stable, the candidate stopped."""
        now = utcnow()
        metrics.CONTROLLER_ERRORS.labels("permanent").inc()
        log.error("deployment %s failed permanently: %s", view.id, error)
        plan = strategies.abandon(
            view.strategy,
            _progress(view, started=False),
            observed=Observed(candidate=None, has_stable=stable is not None),
            reason=error,
        )
        try:
            self._step(
                view,
                plan,
                stable=stable,
                observed=observed,
                deployer=deployer,
                now=now,
                rolling_back=error,
            )
        except Exception as exc:
            if db_unavailable(exc):
                raise
            log.exception("deployment %s: could not roll back", view.id)
            self._retry(view, f"rolling back after {error}: {exc}", now=now, result=None)

    def _retry(
        self, view: DeploymentView, error: str, *, now: datetime, result: PassResult | None
    ) -> None:
        metrics.CONTROLLER_ERRORS.labels("temporary").inc()
        if result is not None:
            result.errors += 1
            result.failures[str(view.id)] = error
        try:
            backoff = self.ledger.record_error(view, error=error, now=now, holder=self.holder)
        except Exception as exc:
            if db_unavailable(exc):
                raise
            log.exception("deployment %s: could not record the error %s", view.id, error)
            return
        log.warning(
            "deployment %s (%s %s): %s; retrying in %ss",
            view.id,
            view.model_name,
            view.version.number,
            error,
            backoff.total_seconds(),
        )

    def _fail(self, view: DeploymentView, error: str, *, now: datetime, result: PassResult) -> None:
        metrics.CONTROLLER_ERRORS.labels("permanent").inc()
        result.errors += 1
        result.failures[str(view.id)] = error
        log.error("deployment %s failed: %s", view.id, error)
        plan = plan_failed(_progress(view), in_rollout=view.in_rollout, error=error)
        self._step(view, plan, stable=None, observed={}, now=now)


# -- helpers -----------------------------------------------------------------------------------


def _progress(view: DeploymentView, *, started: bool = True) -> Progress:
    """The rollout progress the row holds (``started`` False: only status, step and weight,
    as a rollback from a permanent error starts from)."""
    if not started:
        return Progress(status=view.status, step_index=view.step_index, weight=view.traffic_weight)
    return Progress(
        status=view.status,
        step_index=view.step_index,
        step_started_at=view.step_started_at,
        weight=view.traffic_weight,
        hold_since=view.hold_since,
    )
