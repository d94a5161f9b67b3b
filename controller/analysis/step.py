"""The verdict of a step: readiness first, then every gate the deployment configures.

Combining: any failed gate fails the step, else any error holds it (and it can never be
promoted by a hold timeout), else any inconclusive gate holds it, else it passes. Two limits
smooth this over passes:

- ``failureLimit`` consecutive failed verdicts before the step really fails (a single bad
  scrape does not roll back a rollout when the limit is above 1);
- ``errorLimit`` consecutive errors (Prometheus down) before the rollout rolls back.

The counts live in the deployment's observed state (``observedState.analysis``), so a
restarted controller keeps counting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from controller.analysis.base import Gate, GateContext, GateResult
from controller.analysis.direct import DirectGate, scrape_metrics
from controller.analysis.feedback import FeedbackGate, FeedbackSource
from controller.analysis.prometheus import PrometheusClient, PrometheusGate
from controller.strategies.base import Outcome, Verdict
from deployers.base import WorkloadStatus
from registry.analysis_spec import AnalysisSpec, GateSpec
from registry.services.deployment_views import DeploymentView

log = logging.getLogger("modelreg.controller.analysis")


class StepAnalysis:
    def __init__(
        self,
        *,
        scrape: Callable[[str], str] = scrape_metrics,
        prometheus: PrometheusClient | None = None,
        feedback: FeedbackSource | None = None,
    ) -> None:
        self.scrape = scrape
        self.prometheus = prometheus
        self.feedback = feedback

    def gates(self, spec: AnalysisSpec) -> list[Gate]:
        built: list[Gate] = []
        for gate in spec.gates:
            if gate.type == "prometheus":
                built.append(
                    PrometheusGate(
                        gate, client=self.prometheus, require_traffic=spec.require_traffic
                    )
                )
            elif gate.type == "feedback":
                built.append(FeedbackGate(gate, source=self.feedback))
            else:
                built.append(
                    DirectGate(gate, scrape=self.scrape, require_traffic=spec.require_traffic)
                )
        if spec.require_traffic and not spec.counts_requests:
            # No gate counts requests (feedback gates, custom queries): the traffic check
            # still holds a candidate nobody has called yet.
            traffic = GateSpec(
                type="direct", name="traffic", check="traffic", min_requests=spec.min_requests
            )
            built.append(DirectGate(traffic, scrape=self.scrape, require_traffic=True))
        return built

    def judge(
        self,
        deployment: DeploymentView,
        *,
        workload: WorkloadStatus | None,
        now: datetime,
        stable: DeploymentView | None = None,
        stable_workload: WorkloadStatus | None = None,
    ) -> Verdict:
        baselines = _baselines(deployment)
        kept = {"baselines": baselines} if baselines else {}
        if workload is None:
            return Verdict(Outcome.INCONCLUSIVE, "the candidate has no servers yet", kept)
        if workload.failure:
            return Verdict(Outcome.FAILED, f"the candidate failed: {workload.failure}", kept)
        if not workload.ready:
            return Verdict(
                Outcome.INCONCLUSIVE,
                f"{workload.ready_replicas} of {workload.replicas} candidate replica(s) ready",
                kept,
            )
        if deployment.spec is None:  # parsed once, with the view (see DeploymentView.spec)
            return Verdict(Outcome.FAILED, f"strategyParams: {deployment.spec_error}")
        spec = deployment.spec.analysis_spec
        ctx = GateContext(
            deployment=deployment,
            candidate=workload,
            stable=stable,
            stable_workload=stable_workload,
            window_start=deployment.step_started_at or now,
            now=now,
            baselines=baselines,
        )
        results = [_evaluate(gate, ctx) for gate in self.gates(spec)]
        return combine(results, spec=spec, previous=_counters(deployment), baselines=baselines)


def _evaluate(gate: Gate, ctx: GateContext) -> GateResult:
    """A gate that raises reports an error (which holds the step) instead of failing the
    controller's pass."""
    try:
        return gate.evaluate(ctx)
    except Exception as exc:
        log.warning("analysis gate %s raised: %s", gate.name, exc, exc_info=True)
        kind = getattr(gate, "type", "gate")
        reason = f"the {kind} gate could not be evaluated: {type(exc).__name__}: {exc}"
        return GateResult(gate.name, kind, Outcome.ERROR, reason)


def combine(
    results: list[GateResult],
    *,
    spec: AnalysisSpec,
    previous: dict[str, int],
    baselines: Mapping[str, Any] | None = None,
) -> Verdict:
    outcomes = {r.outcome for r in results}
    failures = errors = 0
    if Outcome.FAILED in outcomes:
        failures = previous.get("consecutiveFailures", 0) + 1
        bad = [r for r in results if r.outcome is Outcome.FAILED]
        reason = "; ".join(r.reason for r in bad)
        if failures >= spec.failure_limit:
            outcome = Outcome.FAILED
        else:
            outcome = Outcome.INCONCLUSIVE
            reason = f"failure {failures} of {spec.failure_limit} allowed: {reason}"
    elif Outcome.ERROR in outcomes:
        errors = previous.get("consecutiveErrors", 0) + 1
        reason = "; ".join(r.reason for r in results if r.outcome is Outcome.ERROR)
        if spec.error_limit is not None and errors >= spec.error_limit:
            outcome = Outcome.FAILED
            reason = f"{errors} consecutive analysis errors: {reason}"
        else:
            outcome = Outcome.ERROR
    elif Outcome.INCONCLUSIVE in outcomes:
        outcome = Outcome.INCONCLUSIVE
        reason = "; ".join(r.reason for r in results if r.outcome is Outcome.INCONCLUSIVE)
    else:
        outcome = Outcome.PASSED
        reason = "; ".join(r.reason for r in results) or "healthy"
    details: dict[str, Any] = {
        "gates": [r.to_dict() for r in results],
        "counters": {"consecutiveFailures": failures, "consecutiveErrors": errors},
    }
    kept = {**(baselines or {}), **{r.name: r.state for r in results if r.state is not None}}
    if kept:
        details["baselines"] = kept
    return Verdict(outcome, reason, details)


def _baselines(deployment: DeploymentView) -> dict[str, Any]:
    """What the gates kept on the last pass (``observedState.analysis.baselines``)."""
    state = (deployment.observed_state or {}).get("analysis") or {}
    kept = state.get("baselines")
    return dict(kept) if isinstance(kept, dict) else {}


def _counters(deployment: DeploymentView) -> dict[str, int]:
    state = (deployment.observed_state or {}).get("analysis") or {}
    return {k: int(v) for k, v in state.items() if isinstance(v, int)}
