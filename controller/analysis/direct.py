"""The direct gate: the Prometheus gate's checks, computed from the model servers' own
``/metrics``, for the embedded default without Prometheus.

The counters are the servers' lifetime counters (a candidate's servers start with its
rollout, so their lifetime is the rollout's). Checks:

- ``error-rate``: the share of inference requests answered with a 5xx. Below ``minRequests``
  requests the rate is not judged (pass on health alone), unless ``requireTraffic`` is set
  (then: inconclusive).
- ``p95-latency-vs-stable``: the candidate's p95 inference latency over the stable version's,
  from the servers' latency histograms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controller.analysis.base import GateContext, GateResult
from controller.strategies.base import Outcome
from deployers.base import WorkloadStatus
from registry.analysis_spec import GateSpec

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

    requests = errors = 0
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
                    if sample.labels.get("status", "").startswith("5"):
                        errors += int(sample.value)
            elif family.name == LATENCY:
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return ServerStats(requests, errors, buckets)


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

    def evaluate(self, ctx: GateContext) -> GateResult:
        if ctx.deployment.version.format == "API":
            return GateResult(
                self.name, self.type, Outcome.PASSED, "an API endpoint: no server metrics"
            )
        try:
            candidate = self._stats(ctx.candidate)
            if self.spec.check == "p95-latency-vs-stable":
                return self._latency(ctx, candidate)
        except MetricsUnavailable as exc:
            return GateResult(
                self.name, self.type, Outcome.INCONCLUSIVE, f"cannot read metrics: {exc}"
            )
        return self._error_rate(candidate)

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

    def _error_rate(self, stats: ServerStats) -> GateResult:
        inputs: dict[str, object] = {"requests": stats.requests, "errors": stats.errors}
        if stats.requests < self.spec.min_requests:
            text = f"{stats.requests} inference request(s), fewer than {self.spec.min_requests}"
            if self.require_traffic:
                return GateResult(self.name, self.type, Outcome.INCONCLUSIVE, text, inputs)
            return GateResult(
                self.name,
                self.type,
                Outcome.PASSED,
                f"healthy; {text}: too few to judge the error rate",
                inputs,
            )
        rate = stats.errors / stats.requests
        return self._judge(rate, inputs, f"error rate over {stats.requests} requests:")

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
        least = min(candidate.observations, stable.observations)
        if least < max(1, self.spec.min_requests):
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
