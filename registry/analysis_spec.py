"""``strategyParams.analysis``: which gates judge each rollout step, checked and with defaults.

It lives in ``registry`` so that the API refuses a bad configuration with a 422 before a row
is written; the controller (``controller/analysis``) runs it.

```json
"analysis": {
  "gates": [
    {"type": "prometheus", "template": "error-rate",
     "success": {"max": 0.01}, "failure": {"min": 0.05}},
    {"type": "prometheus", "query": "sum(rate(x{model=\\"{{model}}\\"}[{{window}}]))",
     "failure": {"min": 5}},
    {"type": "direct", "check": "p95-latency-vs-stable",
     "success": {"max": 1.2}, "failure": {"min": 2}},
    {"type": "feedback", "minRatings": 30, "maxDrop": 0.3, "on": "mean"}
  ],
  "failureLimit": 1,
  "errorLimit": 10
}
```

Without ``gates``, one direct error-rate gate runs, tuned by the older top-level fields
``maxErrorRate``, ``minRequests`` and ``max4xxIncrease``.

``requireTraffic`` (top level) says whether a candidate that saw fewer than ``minRequests``
inference requests holds the step (inconclusive, "waiting for traffic"). It defaults to true
in ``production`` and to false elsewhere (where too few requests pass on health alone).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.errors import SpecError
from registry.vocabulary import Environment

GATE_TYPES = ("prometheus", "direct", "feedback")
PROMETHEUS_TEMPLATES = ("error-rate", "p95-latency-vs-stable")
DIRECT_CHECKS = ("error-rate", "p95-latency-vs-stable", "traffic")
FEEDBACK_ON = ("mean", "positive_low")
REQUIRE_TRAFFIC_IN = (Environment.PRODUCTION,)
"""The environments where ``requireTraffic`` defaults to true."""
DEFAULT_MIN_REQUESTS = 20
DEFAULT_MAX_4XX_INCREASE = 0.05
"""The candidate's 4xx share may exceed the stable's (same window) by this much, no more."""

#: Defaults per check: success and failure ranges.
DEFAULT_RANGES: dict[
    str, tuple[tuple[float | None, float | None], tuple[float | None, float | None]]
] = {
    "error-rate": ((None, 0.05), (0.1, None)),
    "p95-latency-vs-stable": ((None, 1.25), (2.0, None)),
}


@dataclass(frozen=True)
class Range:
    """``min ≤ value ≤ max``; a missing bound is open."""

    min: float | None = None
    max: float | None = None

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"between {self.min:g} and {self.max:g}"
        if self.min is not None:
            return f"≥ {self.min:g}"
        if self.max is not None:
            return f"≤ {self.max:g}"
        return "any value"

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


@dataclass(frozen=True)
class GateSpec:
    type: str
    name: str
    template: str | None = None
    """prometheus: a built-in query (``error-rate``, ``p95-latency-vs-stable``)."""
    query: str | None = None
    """prometheus: a PromQL template; ``{{model}}``, ``{{version}}``, ``{{stable_version}}``,
    ``{{environment}}`` and ``{{window}}`` are filled in."""
    check: str | None = None
    """direct: ``error-rate``, ``p95-latency-vs-stable`` or ``traffic``."""
    success: Range | None = None
    failure: Range | None = None
    min_requests: int = DEFAULT_MIN_REQUESTS
    """direct, prometheus templates: the candidate's inference requests needed to judge its
    error rates (and, with ``requireTraffic``, to leave the step's hold)."""
    max_4xx_increase: float = DEFAULT_MAX_4XX_INCREASE
    """error-rate: how far the candidate's share of 4xx answers may exceed the stable's."""
    min_ratings: int = 20
    max_drop: float = 0.5
    on: str = "mean"


@dataclass(frozen=True)
class AnalysisSpec:
    gates: tuple[GateSpec, ...]
    failure_limit: int = 1
    """Consecutive failed verdicts before the rollout rolls back (1: the first one)."""
    error_limit: int | None = None
    """Consecutive verdicts with a query error (Prometheus down) before it rolls back; None:
    hold until ``maxHold``, then roll back. An error never promotes."""
    require_traffic: bool = False
    """A candidate with fewer than ``min_requests`` requests holds the step (the default in
    production)."""
    min_requests: int = DEFAULT_MIN_REQUESTS
    """The top-level ``minRequests``: what the traffic check needs when no gate counts
    requests itself."""

    @property
    def counts_requests(self) -> bool:
        """Whether one of the gates looks at the candidate's request count itself."""
        return any(g.type == "direct" or g.template is not None for g in self.gates)


_GATE_FIELDS = {
    "prometheus": {
        "type",
        "name",
        "template",
        "query",
        "success",
        "failure",
        "minRequests",
        "max4xxIncrease",
    },
    "direct": {"type", "name", "check", "success", "failure", "minRequests", "max4xxIncrease"},
    "feedback": {"type", "name", "minRatings", "maxDrop", "on"},
}
_TOP = {
    "gates",
    "failureLimit",
    "errorLimit",
    "maxErrorRate",
    "minRequests",
    "max4xxIncrease",
    "requireTraffic",
}


def parse_analysis(
    raw: Mapping[str, Any] | None, *, environment: str | None = None
) -> AnalysisSpec:
    """Check ``strategyParams.analysis``; ``environment`` decides ``requireTraffic``'s
    default (true in production)."""
    where = "strategyParams.analysis"
    raw = dict(raw or {})
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise SpecError(f"{where} has unknown field(s) {unknown}; known: {sorted(_TOP)}")
    failure_limit = _int(raw.get("failureLimit", 1), f"{where}.failureLimit", low=1)
    error_limit = raw.get("errorLimit")
    if error_limit is not None:
        error_limit = _int(error_limit, f"{where}.errorLimit", low=1)
    require = raw.get("requireTraffic", environment in REQUIRE_TRAFFIC_IN)
    if not isinstance(require, bool):
        raise SpecError(f"{where}.requireTraffic must be true or false")
    min_requests = _int(raw.get("minRequests", DEFAULT_MIN_REQUESTS), f"{where}.minRequests", low=0)
    if "gates" not in raw:
        max_rate = _number(raw.get("maxErrorRate", 0.05), f"{where}.maxErrorRate", low=0, high=1)
        gate = GateSpec(
            type="direct",
            name="error-rate",
            check="error-rate",
            success=Range(max=max_rate),
            failure=Range(min=math.nextafter(max_rate, math.inf)),
            min_requests=min_requests,
            max_4xx_increase=_max_4xx(raw, where),
        )
        return AnalysisSpec((gate,), failure_limit, error_limit, require, min_requests)
    gates = raw["gates"]
    if not isinstance(gates, list):
        raise SpecError(f"{where}.gates must be a list of gates")
    parsed = tuple(_gate(g, f"{where}.gates[{i}]") for i, g in enumerate(gates))
    names = [g.name for g in parsed]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}.gates: give each gate a distinct name (got {names})")
    return AnalysisSpec(parsed, failure_limit, error_limit, require, min_requests)


def _gate(raw: Any, where: str) -> GateSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be an object with a 'type'")
    kind = raw.get("type")
    if kind not in GATE_TYPES:
        raise SpecError(f"{where}.type must be one of {list(GATE_TYPES)}")
    unknown = sorted(set(raw) - _GATE_FIELDS[kind])
    if unknown:
        raise SpecError(f"{where} ({kind}) has unknown field(s) {unknown}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 64):
        raise SpecError(f"{where}.name must be a string of 1 to 64 characters")
    if kind == "feedback":
        on = raw.get("on", "mean")
        if on not in FEEDBACK_ON:
            raise SpecError(f"{where}.on must be one of {list(FEEDBACK_ON)}")
        return GateSpec(
            type=kind,
            name=name or "feedback",
            min_ratings=_int(raw.get("minRatings", 20), f"{where}.minRatings", low=1),
            max_drop=_number(raw.get("maxDrop", 0.5), f"{where}.maxDrop", low=0),
            on=on,
        )
    if kind == "direct":
        check = raw.get("check", "error-rate")
        if check not in DIRECT_CHECKS:
            raise SpecError(f"{where}.check must be one of {list(DIRECT_CHECKS)}")
        success, failure = _ranges(raw, where, check)
        return GateSpec(
            type=kind,
            name=name or f"direct-{check}",
            check=check,
            success=success,
            failure=failure,
            min_requests=_min_requests(raw, where),
            max_4xx_increase=_max_4xx(raw, where),
        )
    template, query = raw.get("template"), raw.get("query")
    if (template is None) == (query is None):
        raise SpecError(f"{where} needs exactly one of 'template' or 'query'")
    if template is not None and template not in PROMETHEUS_TEMPLATES:
        raise SpecError(f"{where}.template must be one of {list(PROMETHEUS_TEMPLATES)}")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise SpecError(f"{where}.query must be a PromQL expression")
    if query is not None and ("minRequests" in raw or "max4xxIncrease" in raw):
        raise SpecError(
            f"{where}: minRequests and max4xxIncrease apply to the built-in templates only"
        )
    success, failure = _ranges(raw, where, template)
    if success is None and failure is None:
        raise SpecError(f"{where} needs a 'success' or a 'failure' range, e.g. {{'max': 0.05}}")
    return GateSpec(
        type=kind,
        name=name or (template or "query"),
        template=template,
        query=query,
        success=success,
        failure=failure,
        min_requests=_min_requests(raw, where),
        max_4xx_increase=_max_4xx(raw, where),
    )


def _min_requests(raw: Mapping[str, Any], where: str) -> int:
    return _int(raw.get("minRequests", DEFAULT_MIN_REQUESTS), f"{where}.minRequests", low=0)


def _max_4xx(raw: Mapping[str, Any], where: str) -> float:
    value = raw.get("max4xxIncrease", DEFAULT_MAX_4XX_INCREASE)
    return _number(value, f"{where}.max4xxIncrease", low=0, high=1)


def _ranges(
    raw: dict[str, Any], where: str, check: str | None
) -> tuple[Range | None, Range | None]:
    defaults = DEFAULT_RANGES.get(check or "")
    success = _range(raw.get("success"), f"{where}.success")
    failure = _range(raw.get("failure"), f"{where}.failure")
    if defaults is not None and "success" not in raw and "failure" not in raw:
        success, failure = Range(*defaults[0]), Range(*defaults[1])
    return success, failure


def _range(raw: Any, where: str) -> Range | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw or set(raw) - {"min", "max"}:
        raise SpecError(f"{where} must be an object with 'min' and/or 'max'")
    low = _number(raw["min"], f"{where}.min") if "min" in raw else None
    high = _number(raw["max"], f"{where}.max") if "max" in raw else None
    if low is not None and high is not None and low > high:
        raise SpecError(f"{where}: min is larger than max")
    return Range(low, high)


def _number(
    value: Any, where: str, *, low: float | None = None, high: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SpecError(f"{where} must be between {low} and {high}")
    return float(value)


def _int(value: Any, where: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{where} must be an integer ≥ {low}")
    return value
