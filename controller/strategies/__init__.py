"""Rollout strategies: pure functions from (spec, observed, progress, verdict, now) to a plan.

``parse_spec`` turns a deployment's ``strategyParams`` into a :class:`RolloutSpec` (or a
:class:`SpecError` naming the bad field); ``plan`` picks the strategy's function.
"""

from __future__ import annotations

from datetime import datetime

from controller.strategies.base import Observed, Plan, Progress, Request, Verdict
from controller.strategies.blue_green import plan_blue_green
from controller.strategies.canary import plan_canary
from controller.strategies.rolling import plan_rolling
from registry.rollout_spec import STRATEGIES, RolloutSpec, SpecError, parse_spec, spec_hash

__all__ = ["STRATEGIES", "RolloutSpec", "SpecError", "parse_spec", "plan", "spec_hash"]


def plan(
    spec: RolloutSpec,
    *,
    observed: Observed,
    progress: Progress,
    verdict: Verdict,
    now: datetime,
    request: Request | None = None,
) -> Plan:
    function = {
        "canary": plan_canary,
        "blue_green": plan_blue_green,
        "rolling_update": plan_rolling,
    }[spec.strategy]
    return function(
        spec,
        observed=observed,
        progress=progress,
        verdict=verdict,
        now=now,
        request=request or Request(),
    )
