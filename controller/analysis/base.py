"""The analysis interface and what gates share: their context and their result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.strategies.base import Outcome, Verdict
from deployers.base import WorkloadStatus
from registry.services.deployments import DeploymentView


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
