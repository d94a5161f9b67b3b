"""Analysis: a verdict for the step a rollout is on: pass, fail or inconclusive.

``Analysis`` is the interface; :class:`HealthAnalysis` is this release's implementation. It
judges the candidate's workload by readiness and health, and by the error rate that its model
servers report on their own ``/metrics``. Prometheus queries and feedback gates come later,
behind the same interface.

``strategyParams.analysis`` tunes it:

- ``maxErrorRate`` (default 0.05): the largest share of inference requests answered with a
  5xx before the step fails;
- ``minRequests`` (default 20): below this many inference requests the error rate is not
  judged (the verdict rests on health alone), unless ``requireTraffic`` is true, in which case
  the verdict is inconclusive and the step holds (see ``maxHold``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from controller.strategies.base import Outcome, Verdict
from deployers.base import WorkloadStatus
from registry.services.deployments import DeploymentView

log = logging.getLogger("modelreg.controller.analysis")

INFER_ROUTE_MARK = "/infer"
DEFAULT_MAX_ERROR_RATE = 0.05
DEFAULT_MIN_REQUESTS = 20


class Analysis(Protocol):
    def judge(
        self, deployment: DeploymentView, *, workload: WorkloadStatus | None, now: datetime
    ) -> Verdict: ...


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


def count_inference(text: str) -> tuple[int, int]:
    """(inference requests, of which 5xx) from a model server's Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    total = errors = 0
    for family in text_string_to_metric_families(text):
        if family.name != "modelreg_model_server_requests":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if INFER_ROUTE_MARK not in sample.labels.get("route", ""):
                continue
            count = int(sample.value)
            total += count
            if sample.labels.get("status", "").startswith("5"):
                errors += count
    return total, errors


class HealthAnalysis:
    def __init__(self, *, scrape: Callable[[str], str] = scrape_metrics) -> None:
        self.scrape = scrape

    def judge(
        self, deployment: DeploymentView, *, workload: WorkloadStatus | None, now: datetime
    ) -> Verdict:
        if workload is None:
            return Verdict(Outcome.INCONCLUSIVE, "the candidate has no servers yet")
        if workload.failure:
            return Verdict(Outcome.FAILED, f"the candidate failed: {workload.failure}")
        if not workload.ready:
            return Verdict(
                Outcome.INCONCLUSIVE,
                f"{workload.ready_replicas} of {workload.replicas} candidate replica(s) ready",
            )
        if deployment.version.format == "API":
            return Verdict(Outcome.PASSED, "the API endpoint is registered")
        params = deployment.params.get("analysis") or {}
        max_rate = float(params.get("maxErrorRate", DEFAULT_MAX_ERROR_RATE))
        min_requests = int(params.get("minRequests", DEFAULT_MIN_REQUESTS))
        total = errors = 0
        try:
            for instance in workload.instances:
                t, e = count_inference(self.scrape(instance.url))
                total += t
                errors += e
        except MetricsUnavailable as exc:
            return Verdict(Outcome.INCONCLUSIVE, f"cannot read the candidate's metrics: {exc}")
        details = {"requests": total, "errors": errors, "maxErrorRate": max_rate}
        if total < min_requests:
            if params.get("requireTraffic"):
                return Verdict(
                    Outcome.INCONCLUSIVE,
                    f"{total} inference request(s) so far, fewer than {min_requests}",
                    details,
                )
            return Verdict(
                Outcome.PASSED,
                f"healthy; {total} inference request(s), too few to judge the error rate",
                details,
            )
        rate = errors / total
        details["errorRate"] = round(rate, 4)
        if rate > max_rate:
            return Verdict(
                Outcome.FAILED,
                f"error rate {rate:.1%} over {total} inference requests is above {max_rate:.1%}",
                details,
            )
        return Verdict(
            Outcome.PASSED,
            f"healthy; error rate {rate:.1%} over {total} inference requests",
            details,
        )
