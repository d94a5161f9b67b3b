"""The Prometheus gate: a PromQL query, a success range and a failure range.

The query is a template: ``{{model}}``, ``{{version}}``, ``{{stable_version}}``,
``{{environment}}`` and ``{{window}}`` (the step's age, e.g. ``120s``) are filled in. The first
sample of the answer is the value. In the failure range: fail; in the success range: pass;
neither, or no data: inconclusive. Prometheus unreachable or the query refused: an *error*,
which holds the step and never promotes.

The built-in templates also count the candidate's inference requests over the window
(``increase``):

- with ``requireTraffic`` (the default in production), fewer than ``minRequests`` hold the
  step: "waiting for traffic: 3 of 20 requests";
- ``error-rate`` also applies the 4xx rule (:class:`~controller.analysis.base.ClientErrors`):
  the candidate's share of 4xx answers against the stable version's, both over the same
  window. It is judged once the candidate has ``minRequests`` requests in the window.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import httpx

from controller.analysis.base import (
    ClientErrors,
    GateContext,
    GateResult,
    join,
    waiting_for_traffic,
)
from controller.strategies.base import Outcome
from registry.analysis_spec import GateSpec

TEMPLATES = {
    # No 5xx at all means no such series: `or vector(0)` makes that a rate of 0, while no
    # requests at all still gives no data (inconclusive).
    "error-rate": (
        '(sum(rate(modelreg_model_server_requests_total{model="{{model}}",'
        'version="{{version}}",environment="{{environment}}",route=~".*/infer",'
        'status=~"5.."}[{{window}}])) or vector(0))'
        " / "
        'sum(rate(modelreg_model_server_requests_total{model="{{model}}",'
        'version="{{version}}",environment="{{environment}}",route=~".*/infer"}[{{window}}]))'
    ),
    "p95-latency-vs-stable": (
        "histogram_quantile(0.95, sum by (le) (rate("
        'modelreg_model_server_inference_duration_seconds_bucket{model="{{model}}",'
        'version="{{version}}",environment="{{environment}}"}[{{window}}])))'
        " / "
        "histogram_quantile(0.95, sum by (le) (rate("
        'modelreg_model_server_inference_duration_seconds_bucket{model="{{model}}",'
        'version="{{stable_version}}",environment="{{environment}}"}[{{window}}])))'
    ),
}
_COUNT = (
    "sum(increase(modelreg_model_server_requests_total{{"
    'model="{{{{model}}}}",version="{{{{{version}}}}}",environment="{{{{environment}}}}",'
    'route=~".*/infer"{status}}}[{{{{window}}}}]))'
)


def count_query(*, stable: bool = False, status: str | None = None) -> str:
    """The template of a version's inference requests over the window (those answered with
    ``status``, a regular expression such as ``4..``, when given); 0 when there are none."""
    version = "stable_version" if stable else "version"
    matcher = f',status=~"{status}"' if status else ""
    return f"({_COUNT.format(version=version, status=matcher)} or vector(0))"


_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9 ._+:-]*$")


class QueryError(Exception):
    """Prometheus could not answer: unreachable, an HTTP error, or a refused query."""


class PrometheusClient:
    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str) -> float | None:
        """The value of the first sample of an instant query; None when there is no data."""
        try:
            response = httpx.get(
                f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise QueryError(f"Prometheus at {self.url} is unreachable: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"Prometheus answered {response.status_code}, not JSON") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise QueryError(
                f"Prometheus refused the query ({response.status_code}): "
                f"{body.get('errorType', '')} {body.get('error', '')}".strip()
            )
        data = body.get("data", {})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            result = [{"value": result}]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value


def render(template: str, ctx: GateContext) -> str:
    stable_version = ctx.stable.version.number if ctx.stable is not None else ""
    values = {
        "model": ctx.deployment.model_name,
        "version": ctx.deployment.version.number,
        "stable_version": stable_version,
        "environment": ctx.deployment.environment,
        "window": f"{ctx.window_seconds}s",
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise QueryError(f"unknown variable {{{{{name}}}}} in the query")
        value = values[name]
        if not _SAFE_LABEL.match(value):  # names are checked at creation; belt and braces
            raise QueryError(f"{name} {value!r} cannot be put in a query")
        return value

    return _VARIABLE.sub(fill, template)


def count(
    client: PrometheusClient, ctx: GateContext, *, stable: bool = False, status: str | None = None
) -> float:
    """A version's inference requests over the step's window (see :func:`count_query`)."""
    return client.query(render(count_query(stable=stable, status=status), ctx)) or 0.0


def share_4xx(client: PrometheusClient, ctx: GateContext, *, stable: bool = False) -> float:
    """A version's share of 4xx answers over the window, from one query (so that both counts
    are taken at the same instant)."""
    whole = count_query(stable=stable)
    query = f"{count_query(stable=stable, status='4..')} / {whole}"
    return ClientErrors.share(client.query(render(query, ctx)) or 0.0, 1.0)


class PrometheusGate:
    type = "prometheus"

    def __init__(
        self, spec: GateSpec, *, client: PrometheusClient | None, require_traffic: bool = False
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.client = client
        self.require_traffic = require_traffic

    def evaluate(self, ctx: GateContext) -> GateResult:
        spec = self.spec
        template = spec.query or TEMPLATES[spec.template or ""]
        thresholds = {
            "success": spec.success.to_dict() if spec.success else None,
            "failure": spec.failure.to_dict() if spec.failure else None,
        }
        if self.client is None:
            return GateResult(
                self.name,
                self.type,
                Outcome.ERROR,
                "no Prometheus is configured (set MODELREG_PROMETHEUS_URL)",
                thresholds,
            )
        if spec.template == "p95-latency-vs-stable" and ctx.stable is None:
            return GateResult(
                self.name, self.type, Outcome.PASSED, "no stable version to compare with"
            )
        try:
            requests = None
            if spec.template is not None:
                requests = count(self.client, ctx)
                if self.require_traffic and requests < spec.min_requests:
                    return GateResult(
                        self.name,
                        self.type,
                        Outcome.INCONCLUSIVE,
                        waiting_for_traffic(requests, spec.min_requests),
                        {"requests": requests, "minRequests": spec.min_requests, **thresholds},
                    )
            query = render(template, ctx)
            value = self.client.query(query)
            judged = self._judge(value, {"query": query, "value": value, **thresholds})
            if spec.template == "error-rate" and requests is not None:
                return self._client_errors(self.client, ctx, judged, requests)
            return judged
        except QueryError as exc:
            return GateResult(self.name, self.type, Outcome.ERROR, str(exc), thresholds)

    def _client_errors(
        self, client: PrometheusClient, ctx: GateContext, judged: GateResult, requests: float
    ) -> GateResult:
        """The 4xx rule, after the 5xx share (``judged``) has not failed."""
        spec = self.spec
        counted = {"requests": requests, "minRequests": spec.min_requests}
        if judged.outcome is Outcome.FAILED:
            return replace(judged, inputs={**judged.inputs, **counted})
        if ctx.stable is None:
            return join(judged, Outcome.PASSED, "no stable version to compare 4xx with", counted)
        if requests < spec.min_requests:
            text = f"{int(requests)} request(s) in the window: too few to compare 4xx answers"
            return join(judged, Outcome.PASSED, text, counted)
        rule = ClientErrors(
            candidate_share=share_4xx(client, ctx),
            stable_requests=count(client, ctx, stable=True),
            stable_share=share_4xx(client, ctx, stable=True),
        )
        outcome, reason, more = rule.judge(
            min_requests=spec.min_requests, max_increase=spec.max_4xx_increase
        )
        return join(judged, outcome, reason, {**counted, **more})

    def _judge(self, value: float | None, inputs: dict[str, object]) -> GateResult:
        spec = self.spec
        if value is None:
            return GateResult(
                self.name, self.type, Outcome.INCONCLUSIVE, "the query returned no data", inputs
            )
        if spec.failure is not None and spec.failure.contains(value):
            return GateResult(
                self.name,
                self.type,
                Outcome.FAILED,
                f"{self.name} = {value:.4g}, in the failure range ({spec.failure.describe()})",
                inputs,
            )
        if spec.success is not None and spec.success.contains(value):
            return GateResult(
                self.name,
                self.type,
                Outcome.PASSED,
                f"{self.name} = {value:.4g}, in the success range ({spec.success.describe()})",
                inputs,
            )
        if spec.success is None:
            return GateResult(
                self.name, self.type, Outcome.PASSED, f"{self.name} = {value:.4g}", inputs
            )
        return GateResult(
            self.name,
            self.type,
            Outcome.INCONCLUSIVE,
            f"{self.name} = {value:.4g}, in neither range",
            inputs,
        )
