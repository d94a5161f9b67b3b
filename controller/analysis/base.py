"""The analysis interface and what gates share: their context and their result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.strategies.base import Outcome, Verdict
from deployers.base import WorkloadStatus
from registry.services.deployment_views import DeploymentView


class Analysis(Protocol):
    def judge(
        self,
        deployment: DeploymentView,
        *,
        workload: WorkloadStatus | None,
        now: datetime,
        stable: DeploymentView | None = None,
        stable_workload: WorkloadStatus | None = None,
    ) -> Verdict: ...


@dataclass(frozen=True)
class GateContext:
    """What a gate may look at: the candidate, the stable version, and the step's window."""

    deployment: DeploymentView
    candidate: WorkloadStatus
    stable: DeploymentView | None
    stable_workload: WorkloadStatus | None
    window_start: datetime
    now: datetime
    baselines: Mapping[str, Any] = field(default_factory=dict)
    """What each gate kept from the previous pass (``GateResult.state``), by gate name."""

    @property
    def window_seconds(self) -> int:
        """The step's age in whole seconds, at least 30 (a PromQL range needs samples)."""
        return max(30, int((self.now - self.window_start).total_seconds()))


@dataclass(frozen=True)
class GateResult:
    name: str
    type: str
    outcome: Outcome
    reason: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] | None = None
    """What the gate keeps for its next pass (``GateContext.baselines``); None: nothing."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "outcome": self.outcome.value,
            "reason": self.reason,
            **dict(self.inputs),
        }


class Gate(Protocol):
    name: str

    def evaluate(self, ctx: GateContext) -> GateResult: ...


def waiting_for_traffic(seen: float, needed: int) -> str:
    """The hold reason of a candidate that has not served enough requests yet."""
    return f"waiting for traffic: {int(seen)} of {needed} requests"


@dataclass(frozen=True)
class ClientErrors:
    """The 4xx rule: the candidate's share of 4xx answers against the stable version's, over
    the same window. The candidate is judged only with ``min_requests`` requests (the caller
    checks that); the stable version needs as many in the window, else the rule cannot tell
    (inconclusive). It fails when the candidate's share exceeds the stable's by more than
    ``max_increase``: a candidate that refuses requests the stable version answers (a renamed
    input, a stricter schema) breaks its clients as surely as one that answers 5xx."""

    candidate_share: float
    stable_requests: float
    stable_share: float

    @staticmethod
    def share(part: float, whole: float) -> float:
        """``part / whole`` within [0, 1] (Prometheus' extrapolation can overshoot a little)."""
        return min(1.0, max(0.0, part / whole)) if whole > 0 else 0.0

    def judge(
        self, *, min_requests: int, max_increase: float
    ) -> tuple[Outcome, str, dict[str, Any]]:
        ours, theirs = self.candidate_share, self.stable_share
        inputs: dict[str, Any] = {
            "candidate4xxShare": round(ours, 6),
            "stableRequests": self.stable_requests,
            "max4xxIncrease": max_increase,
        }
        if self.stable_requests < max(1, min_requests):
            return (
                Outcome.INCONCLUSIVE,
                f"cannot compare 4xx answers yet: the stable version served "
                f"{int(self.stable_requests)} of {min_requests} requests in the same window",
                inputs,
            )
        increase = ours - theirs
        inputs.update(stable4xxShare=round(theirs, 6), increase4xx=round(increase, 6))
        if increase > max_increase:
            return (
                Outcome.FAILED,
                f"4xx share {ours:.3g} is {increase:.3g} above the stable version's {theirs:.3g} "
                f"(more than {max_increase:g})",
                inputs,
            )
        return (
            Outcome.PASSED,
            f"4xx share {ours:.3g} against the stable version's {theirs:.3g}",
            inputs,
        )


def join(first: GateResult, outcome: Outcome, reason: str, inputs: Mapping[str, Any]) -> GateResult:
    """One gate's result from two rules: a failure wins, then inconclusive, then pass."""
    order = (Outcome.FAILED, Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.PASSED)
    worst = min(first.outcome, outcome, key=order.index)
    if worst is Outcome.PASSED:
        text = f"{first.reason}; {reason}"
    else:
        text = "; ".join(
            r for o, r in ((first.outcome, first.reason), (outcome, reason)) if o is worst
        )
    return GateResult(first.name, first.type, worst, text, {**first.inputs, **inputs}, first.state)
