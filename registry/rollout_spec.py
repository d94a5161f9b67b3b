"""A rollout's spec: ``strategyParams`` checked and filled with defaults.

It lives in ``registry`` because both the API (which refuses bad params with a 422 before a row
is written) and the controller (which runs the spec) need it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from registry.analysis_spec import AnalysisSpec, parse_analysis
from registry.errors import SpecError
from registry.vocabulary import Strategy, values

__all__ = [
    "STRATEGIES",
    "RolloutSpec",
    "SpecError",
    "Step",
    "format_duration",
    "parse_duration",
    "parse_spec",
    "spec_hash",
]


@dataclass(frozen=True)
class Step:
    weight: int
    pause: timedelta


@dataclass(frozen=True)
class RolloutSpec:
    """``strategyParams``, parsed and checked. Defaults are what a user gets by saying nothing."""

    strategy: str
    replicas: int = 1
    steps: tuple[Step, ...] = ()
    """Canary: the traffic steps. Rolling update: one step per replica (built by the parser)."""
    preview_duration: timedelta = timedelta(0)
    auto_promote: bool = True
    scale_down_delay: timedelta = timedelta(minutes=5)
    """How long a superseded version keeps its servers, so that a rollback is instant."""
    max_hold: timedelta = timedelta(minutes=10)
    """How long an inconclusive verdict (or a candidate that is not ready) may hold a step."""
    on_hold_timeout: str = "fail"
    """What decides once ``max_hold`` is over: ``fail`` rolls back, ``pass`` goes on."""
    resources: Mapping[str, Any] = field(default_factory=dict)
    analysis: Mapping[str, Any] = field(default_factory=dict)
    allow_signature_change: bool = False
    """``allowSignatureChange``: roll out a candidate whose input/output signature differs
    from the stable version's (refused otherwise; the audit row records the override)."""
    analysis_spec: AnalysisSpec = field(default_factory=lambda: parse_analysis(None))
    """``analysis``, parsed for the deployment's environment (the gates the analysis runs)."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, *, name: str) -> timedelta:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, bool):
        raise SpecError(f"{name} must be a duration such as '60s', '5m' or a number of seconds")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise SpecError(
            f"{name} must be a duration such as '60s', '5m' or a number of seconds, not {value!r}"
        )
    if not 0 <= seconds <= 7 * 24 * 3600:  # also refuses NaN
        raise SpecError(f"{name} must be between 0 and 7 days")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g}s"


STRATEGIES = values(Strategy)
DEFAULT_CANARY_STEPS = (
    {"weight": 10, "pause": "60s"},
    {"weight": 50, "pause": "60s"},
    {"weight": 100, "pause": "0s"},
)

_COMMON = {
    "replicas",
    "resources",
    "analysis",
    "scaleDownDelay",
    "maxHold",
    "onHoldTimeout",
    "allowSignatureChange",
}
_KNOWN: dict[str, set[str]] = {
    Strategy.CANARY: _COMMON | {"steps"},
    Strategy.BLUE_GREEN: _COMMON | {"previewDuration", "autoPromote"},
    Strategy.ROLLING_UPDATE: _COMMON | {"pause"},
}
MAX_REPLICAS = 100


def parse_spec(
    strategy: str, params: Mapping[str, Any] | None, *, environment: str | None = None
) -> RolloutSpec:
    """Check ``strategyParams`` for ``strategy`` and fill in the defaults. ``environment``
    decides the analysis defaults (``requireTraffic`` is on in production)."""
    if strategy not in STRATEGIES:
        raise SpecError(f"unknown deploymentStrategy {strategy!r}; use one of {list(STRATEGIES)}")
    params = dict(params or {})
    unknown = sorted(set(params) - _KNOWN[strategy])
    if unknown:
        raise SpecError(
            f"strategyParams: unknown field(s) {unknown} for {strategy}; "
            f"known: {sorted(_KNOWN[strategy])}"
        )
    replicas = params.get("replicas", 1)
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 1 <= replicas <= MAX_REPLICAS
    ):
        raise SpecError(f"strategyParams.replicas must be an integer from 1 to {MAX_REPLICAS}")
    resources = params.get("resources", {})
    if not isinstance(resources, dict):
        raise SpecError('strategyParams.resources must be an object, e.g. {"limits": {"cpu": "1"}}')
    analysis = params.get("analysis", {})
    if not isinstance(analysis, dict):
        raise SpecError("strategyParams.analysis must be an object")
    analysis_spec = parse_analysis(analysis, environment=environment)
    on_timeout = params.get("onHoldTimeout", "fail")
    if on_timeout not in ("fail", "pass", "promote"):
        raise SpecError("strategyParams.onHoldTimeout must be 'fail' or 'pass' ('promote')")
    on_timeout = "pass" if on_timeout == "promote" else on_timeout
    allow_change = params.get("allowSignatureChange", False)
    if not isinstance(allow_change, bool):
        raise SpecError("strategyParams.allowSignatureChange must be true or false")
    common: dict[str, Any] = {
        "strategy": strategy,
        "replicas": replicas,
        "resources": resources,
        "analysis": analysis,
        "on_hold_timeout": on_timeout,
        "allow_signature_change": allow_change,
        "analysis_spec": analysis_spec,
        "scale_down_delay": parse_duration(
            params.get("scaleDownDelay", "300s"), name="strategyParams.scaleDownDelay"
        ),
        "max_hold": parse_duration(params.get("maxHold", "600s"), name="strategyParams.maxHold"),
    }
    if strategy == Strategy.CANARY:
        return RolloutSpec(steps=_canary_steps(params.get("steps", DEFAULT_CANARY_STEPS)), **common)
    if strategy == Strategy.BLUE_GREEN:
        auto = params.get("autoPromote", True)
        if not isinstance(auto, bool):
            raise SpecError("strategyParams.autoPromote must be true or false")
        return RolloutSpec(
            preview_duration=parse_duration(
                params.get("previewDuration", "0s"), name="strategyParams.previewDuration"
            ),
            auto_promote=auto,
            **common,
        )
    pause = parse_duration(params.get("pause", "0s"), name="strategyParams.pause")
    steps = tuple(
        Step(weight=round(100 * (i + 1) / replicas), pause=pause) for i in range(replicas)
    )
    return RolloutSpec(steps=steps, **common)


def _canary_steps(raw: Any) -> tuple[Step, ...]:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise SpecError(
            "strategyParams.steps must be a non-empty list such as "
            '[{"weight": 10, "pause": "60s"}, {"weight": 100}]'
        )
    steps: list[Step] = []
    for i, item in enumerate(raw):
        where = f"strategyParams.steps[{i}]"
        if not isinstance(item, dict) or set(item) - {"weight", "pause"}:
            raise SpecError(f"{where} must be an object with 'weight' and an optional 'pause'")
        weight = item.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
            raise SpecError(f"{where}.weight must be an integer from 1 to 100")
        if steps and weight <= steps[-1].weight:
            raise SpecError(f"{where}.weight must be larger than the step before it")
        steps.append(
            Step(
                weight=weight, pause=parse_duration(item.get("pause", "0s"), name=f"{where}.pause")
            )
        )
    return tuple(steps)


def spec_hash(strategy: str, params: Mapping[str, Any] | None, version_id: str) -> str:
    """A digest of what was asked for, recorded with the progress it belongs to."""
    blob = json.dumps(
        {"strategy": strategy, "params": params or {}, "version": version_id}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()
