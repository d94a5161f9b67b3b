"""Rollout strategies: pure functions from (spec, observed, progress, verdict, now) to a plan.

``parse_spec`` turns a deployment's ``strategyParams`` into a :class:`RolloutSpec` (or a
:class:`SpecError` naming the bad field); ``plan`` picks the strategy's function.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from controller.strategies.base import Observed, Plan, Progress, Request, Verdict, roll_back
from controller.strategies.blue_green import CANDIDATE_ROLE as PREVIEW_ROLE
from controller.strategies.blue_green import plan_blue_green
from controller.strategies.canary import plan_canary
from controller.strategies.rolling import plan_rolling
from registry.rollout_spec import STRATEGIES, RolloutSpec, SpecError, parse_spec, spec_hash
from registry.vocabulary import RouteRole, Strategy

#: Each strategy's plan function, and the role its candidate's workload plays while it rolls
#: out (the plans carry it): a canary, and a rolling update's new replicas, take a share of
#: traffic; a blue-green candidate is a preview that takes none until it is promoted.
STRATEGY_PLANS = {
    Strategy.CANARY: (plan_canary, RouteRole.CANARY),
    Strategy.BLUE_GREEN: (plan_blue_green, PREVIEW_ROLE),
    Strategy.ROLLING_UPDATE: (plan_rolling, RouteRole.CANARY),
}

__all__ = [
    "STRATEGIES",
    "RolloutSpec",
    "SpecError",
    "abandon",
    "parse_spec",
    "plan",
    "spec_hash",
]


def plan(
    spec: RolloutSpec,
    *,
    observed: Observed,
    progress: Progress,
    verdict: Verdict,
    now: datetime,
    request: Request | None = None,
) -> Plan:
    function, _ = STRATEGY_PLANS[Strategy(spec.strategy)]
    return function(
        spec,
        observed=observed,
        progress=progress,
        verdict=verdict,
        now=now,
        request=request or Request(),
    )


def abandon(strategy: str, progress: Progress, *, observed: Observed, reason: str) -> Plan:
    """A permanent error in a rollout: all traffic back to stable, the candidate stopped."""
    _, role = STRATEGY_PLANS[Strategy(strategy)]
    plan = roll_back(progress, observed=observed, kind="failed", reason=reason)
    return replace(plan, candidate_role=role)
