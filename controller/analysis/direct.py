"""The direct gate: the Prometheus gate's checks, computed from the model servers' own
``/metrics``, for the embedded default without Prometheus.

The candidate's counters are its servers' lifetime counters (they start with its rollout, so
their lifetime is the rollout's). Checks:

- ``error-rate``:
  - the share of inference requests answered with a 5xx, against the success and failure
    ranges;
  - the 4xx rule (:class:`~controller.analysis.base.ClientErrors`): the candidate's share of
    4xx answers against the stable version's *over the same window*. The stable version's
    servers have been up for long, so their lifetime is not that window: the gate keeps, in
    the deployment's ``observedState.analysis.baselines``, each stable server's counters as
    last seen and the requests counted since the gate first looked (the first analysis pass
    of the rollout, before the candidate takes traffic). A server that is new or restarted
    (its counters went down) counts in full, as Prometheus' ``increase`` does.

  Below ``minRequests`` candidate requests neither rate is judged: with ``requireTraffic``
  (the default in production) the step holds, "waiting for traffic: 3 of 20 requests";
  without it, it passes on health alone.
- ``p95-latency-vs-stable``: the candidate's p95 inference latency over the stable version's,
  from the servers' latency histograms.
- ``traffic``: only the request count, which ``requireTraffic`` adds when no other gate
  counts requests (for example, an analysis of feedback gates only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.analysis.base import (
    ClientErrors,
    GateContext,
    GateResult,
    join,
    waiting_for_traffic,
)
from controller.strategies.base import Outcome
from deployers.base import WorkloadStatus
from registry.analysis_spec import GateSpec
from registry.vocabulary import ArtifactFormat

REQUESTS = "modelreg_model_server_requests"
LATENCY = "modelreg_model_server_inference_duration_seconds"
INFER_ROUTE_MARK = "/infer"


class MetricsUnavailable(Exception):
    pass


def scrape_metrics(url: str, *, timeout: float = 1.0) -> str:
    import httpx

    try:
        response = httpx.get(f"{url.rstrip('/')}/metrics", timeout=timeout)
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"{url}/metrics: {exc}") from exc
    if response.status_code != 200:
        raise MetricsUnavailable(f"{url}/metrics answered {response.status_code}")
    return response.text


@dataclass(frozen=True)
class ServerStats:
    requests: int
    errors: int
    """Answered with a 5xx."""
    client_errors: int
    """Answered with a 4xx."""
    buckets: dict[float, float]
    """Cumulative latency histogram: upper bound → count."""

    @property
    def observations(self) -> float:
        return max(self.buckets.values(), default=0.0)

    def quantile(self, q: float) -> float | None:
        """The histogram's q-quantile, interpolated inside its bucket as Prometheus does."""
        total = self.observations
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound in sorted(self.buckets):
            count = self.buckets[bound]
            if count >= rank:
                if bound == float("inf"):
                    return lower_bound
                span = count - lower_count
                fraction = (rank - lower_count) / span if span else 1.0
                return lower_bound + (bound - lower_bound) * fraction
            lower_bound, lower_count = bound, count
        return lower_bound


def parse_stats(texts: Iterable[str]) -> ServerStats:
    """Sum the inference counters and latency buckets of several servers' expositions."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = client_errors = 0
    buckets: dict[float, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name == REQUESTS:
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    if INFER_ROUTE_MARK not in sample.labels.get("route", ""):
                        continue
                    requests += int(sample.value)
                    status = sample.labels.get("status", "")
                    if status.startswith("5"):
                        errors += int(sample.value)
                    elif status.startswith("4"):
                        client_errors += int(sample.value)
            elif family.name == LATENCY:
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return ServerStats(requests, errors, client_errors, buckets)


def count_window(
    current: Mapping[str, ServerStats], state: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Add what each server served since the last pass to the window's counts.

    ``state`` is what this returned on the last pass (None on the first one: the window
    starts now, at zero). A server not seen before, or whose counters went down (it
    restarted), started inside the window: all of its requests count."""
    seen = {url: (stats.requests, stats.client_errors) for url, stats in sorted(current.items())}
    if state is None:
        return {"requests": 0, "clientErrors": 0, "servers": seen}
    last = state.get("servers") or {}
    requests, client_errors = int(state.get("requests", 0)), int(state.get("clientErrors", 0))
    for url, (now_requests, now_4xx) in seen.items():
        before = last.get(url)
        if before is not None and now_requests >= before[0] and now_4xx >= before[1]:
            requests += now_requests - before[0]
            client_errors += now_4xx - before[1]
        else:
            requests += now_requests
            client_errors += now_4xx
    return {"requests": requests, "clientErrors": client_errors, "servers": seen}


class DirectGate:
    type = "direct"

    def __init__(
        self,
        spec: GateSpec,
        *,
        scrape: Callable[[str], str] = scrape_metrics,
        require_traffic: bool = False,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.scrape = scrape
        self.require_traffic = require_traffic

    def _stats(self, workload: WorkloadStatus) -> ServerStats:
        return parse_stats(self.scrape(instance.url) for instance in workload.instances)

    def _per_server(self, workload: WorkloadStatus) -> dict[str, ServerStats]:
        return {i.url: parse_stats([self.scrape(i.url)]) for i in workload.instances}

    def evaluate(self, ctx: GateContext) -> GateResult:
        if ctx.deployment.version.format == ArtifactFormat.API:
            return GateResult(
                self.name, self.type, Outcome.PASSED, "an API endpoint: no server metrics"
            )
        try:
            candidate = self._stats(ctx.candidate)
            if self.spec.check == "p95-latency-vs-stable":
                return self._latency(ctx, candidate)
            if self.spec.check == "traffic":
                return self._traffic(candidate)
            return self._error_rate(ctx, candidate)
        except MetricsUnavailable as exc:
            return GateResult(
                self.name,
                self.type,
                Outcome.INCONCLUSIVE,
                f"cannot read metrics: {exc}",
                state=ctx.baselines.get(self.name),
            )

    def _judge(self, value: float, inputs: dict[str, object], what: str) -> GateResult:
        spec = self.spec
        inputs = {
            **inputs,
            "value": round(value, 6),
            "success": spec.success.to_dict() if spec.success else None,
            "failure": spec.failure.to_dict() if spec.failure else None,
        }
        if spec.failure is not None and spec.failure.contains(value):
            reason = f"{what} {value:.4g} is in the failure range ({spec.failure.describe()})"
            return GateResult(self.name, self.type, Outcome.FAILED, reason, inputs)
        if spec.success is None or spec.success.contains(value):
            return GateResult(self.name, self.type, Outcome.PASSED, f"{what} {value:.4g}", inputs)
        reason = f"{what} {value:.4g} is in neither range"
        return GateResult(self.name, self.type, Outcome.INCONCLUSIVE, reason, inputs)

    def _traffic(self, stats: ServerStats) -> GateResult:
        inputs = {"requests": stats.requests, "minRequests": self.spec.min_requests}
        if stats.requests < self.spec.min_requests:
            text = waiting_for_traffic(stats.requests, self.spec.min_requests)
            return GateResult(self.name, self.type, Outcome.INCONCLUSIVE, text, inputs)
        text = f"{stats.requests} inference requests"
        return GateResult(self.name, self.type, Outcome.PASSED, text, inputs)

    def _error_rate(self, ctx: GateContext, stats: ServerStats) -> GateResult:
        spec = self.spec
        window: dict[str, Any] | None = None
        if ctx.stable is not None and ctx.stable_workload is not None:
            previous = ctx.baselines.get(self.name)
            if previous is not None and previous.get("stable") != str(ctx.stable.id):
                previous = None
            window = {
                "stable": str(ctx.stable.id),
                **count_window(self._per_server(ctx.stable_workload), previous),
            }
        inputs: dict[str, object] = {
            "requests": stats.requests,
            "errors": stats.errors,
            "clientErrors": stats.client_errors,
            "minRequests": spec.min_requests,
        }
        if stats.requests < spec.min_requests:
            if self.require_traffic:
                text = waiting_for_traffic(stats.requests, spec.min_requests)
                return GateResult(self.name, self.type, Outcome.INCONCLUSIVE, text, inputs, window)
            text = (
                f"healthy; {stats.requests} inference request(s), fewer than "
                f"{spec.min_requests}: too few to judge the error rates"
            )
            return GateResult(self.name, self.type, Outcome.PASSED, text, inputs, window)
        rate = stats.errors / stats.requests
        judged = self._judge(rate, inputs, f"5xx rate over {stats.requests} requests:")
        judged = GateResult(
            judged.name, judged.type, judged.outcome, judged.reason, judged.inputs, window
        )
        if judged.outcome is Outcome.FAILED:
            return judged
        if window is None:
            return join(judged, Outcome.PASSED, "no stable version to compare 4xx with", {})
        rule = ClientErrors(
            candidate_share=ClientErrors.share(stats.client_errors, stats.requests),
            stable_requests=window["requests"],
            stable_share=ClientErrors.share(window["clientErrors"], window["requests"]),
        )
        outcome, reason, more = rule.judge(
            min_requests=spec.min_requests, max_increase=spec.max_4xx_increase
        )
        return join(judged, outcome, reason, more)

    def _latency(self, ctx: GateContext, candidate: ServerStats) -> GateResult:
        if ctx.stable_workload is None or ctx.stable is None:
            return GateResult(
                self.name, self.type, Outcome.PASSED, "no stable version to compare with"
            )
        stable = self._stats(ctx.stable_workload)
        inputs: dict[str, object] = {
            "candidateRequests": candidate.observations,
            "stableRequests": stable.observations,
        }
        needed = max(1, self.spec.min_requests)
        if self.require_traffic and candidate.observations < needed:
            text = waiting_for_traffic(candidate.observations, needed)
            return GateResult(self.name, self.type, Outcome.INCONCLUSIVE, text, inputs)
        least = min(candidate.observations, stable.observations)
        if least < needed:
            return GateResult(
                self.name,
                self.type,
                Outcome.INCONCLUSIVE,
                f"too few timed requests to compare latency ({least:g})",
                inputs,
            )
        ours, theirs = candidate.quantile(0.95), stable.quantile(0.95)
        if ours is None or theirs is None or theirs <= 0:
            return GateResult(self.name, self.type, Outcome.INCONCLUSIVE, "no latency data", inputs)
        inputs.update(candidateP95=ours, stableP95=theirs)
        return self._judge(ours / theirs, inputs, "p95 latency against stable:")
