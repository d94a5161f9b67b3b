"""What every strategy shares: the spec, the persisted progress, the verdict and the plan.

A strategy is a pure function of ``(spec, observed, progress, verdict, now)``: it does no I/O
and never reads the clock. It returns a :class:`Plan`: the progress to record, the end states
the deployer and the router must make true, the events for the ledger, and when to look again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from registry.rollout_spec import RolloutSpec, SpecError, Step, format_duration, parse_duration
from registry.vocabulary import DeploymentStatus, RouteRole

__all__ = [
    "Action",
    "Event",
    "Observed",
    "Outcome",
    "Plan",
    "PlanKind",
    "Progress",
    "Request",
    "RolloutSpec",
    "Route",
    "ScaleCandidate",
    "ScaleStable",
    "SlotState",
    "SpecError",
    "Step",
    "Verdict",
    "parse_duration",
]

#: How soon to look again while something is expected to change (a process becoming ready).
SOON = timedelta(seconds=2)


class Outcome(StrEnum):
    PASSED = "pass"
    FAILED = "fail"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    """The analysis could not be done (its data source is down): holds, and never promotes."""


#: The outcomes that hold a step rather than move it.
HOLDING = (Outcome.INCONCLUSIVE, Outcome.ERROR)


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "reason": self.reason, **dict(self.details)}


@dataclass(frozen=True)
class Progress:
    """The rollout's persisted progress: one deployment row's columns."""

    status: str
    step_index: int = 0
    step_started_at: datetime | None = None
    """When the current step's traffic weight took effect; None until it has."""
    weight: int = 0
    """The candidate's share of traffic, 0-100. The stable version has the rest."""
    hold_since: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Request:
    """What a human asked for through the API, not yet carried out."""

    paused: bool = False
    action: str | None = None
    """``promote`` or ``abort``."""


@dataclass(frozen=True)
class SlotState:
    replicas: int
    ready_replicas: int
    failure: str | None = None

    @property
    def ready(self) -> bool:
        return self.failure is None and self.replicas > 0 and self.ready_replicas >= self.replicas


@dataclass(frozen=True)
class Observed:
    candidate: SlotState | None
    """The candidate's workload, or None when none runs yet."""
    has_stable: bool
    """Whether an Active deployment serves this model and environment (False on a first
    rollout: there is nothing to compare against or fall back to)."""
    stable_replicas: int = 0


# -- actions: end states -------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleCandidate:
    """The candidate's workload runs ``replicas`` replicas (0: stopped and gone)."""

    replicas: int


@dataclass(frozen=True)
class ScaleStable:
    """The stable version's workload runs ``replicas`` replicas."""

    replicas: int


@dataclass(frozen=True)
class Route:
    """The candidate takes ``weight`` percent of traffic and the stable version the rest.
    ``preview``: the candidate is listed with weight 0 as a preview endpoint."""

    weight: int
    preview: bool = False


Action = ScaleCandidate | ScaleStable | Route


@dataclass(frozen=True)
class Event:
    """One ledger entry: ``kind`` is a verb phrase's noun (``step``, ``promoted``, ...)."""

    kind: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


class PlanKind(StrEnum):
    """Which record a plan asks for: the condition set and desired state it writes."""

    ROLLOUT = "rollout"
    """A rollout step: Progressing, Ready and Analysis conditions, the desired workloads."""
    STEADY = "steady"
    """An Active or retired deployment kept as it is: Ready; the desired state stays."""
    UNDEPLOY = "undeploy"
    """An Active deployment taken out of service by request: no routes, no workloads."""
    FAILED = "failed"
    """A permanent error outside a rollout step: a Failed condition, nothing applied."""


@dataclass(frozen=True)
class Plan:
    progress: Progress
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: timedelta | None = None
    due: datetime | None = None
    """When what the plan waits for ends (a step's pause, a preview, a hold's limit): the
    controller's runner starts a pass then if that is before its interval's next one."""
    consumed: bool = False
    """True when the plan carries out the pending request (``Request.action``)."""
    kind: PlanKind = PlanKind.ROLLOUT
    candidate_role: RouteRole = RouteRole.CANARY
    """The role of the deployment's own workload: the strategy's (a canary, a blue-green
    preview) during a rollout; ``stable`` for a deployment that serves or served."""
    retire_stable: timedelta | None = None
    """On promotion: how long the superseded stable deployment keeps its servers."""
    stop_servers_at: datetime | None = None
    """When the deployment's servers are due to stop (``scale_down_at``); None leaves it."""
    finished: bool = False
    """The deployment's servers are gone: the controller need not look at it again."""


# -- helpers shared by the strategies ------------------------------------------------------


def start(spec: RolloutSpec, progress: Progress, *, replicas: int | None = None) -> Plan:
    """Initiated → Deploying: start the candidate's servers; no traffic yet."""
    return Plan(
        progress=replace(
            progress,
            status=DeploymentStatus.DEPLOYING,
            step_index=0,
            step_started_at=None,
            weight=0,
        ),
        actions=(ScaleCandidate(spec.replicas if replicas is None else replicas),),
        events=(Event("deploying", "rollout started: starting the candidate's servers"),),
        requeue_after=SOON,
    )


def roll_back(progress: Progress, *, observed: Observed, kind: str, reason: str) -> Plan:
    """All traffic back to the stable version, the candidate stopped. With no stable version
    to go back to, the rollout is Failed rather than RolledBack."""
    status = DeploymentStatus.ROLLED_BACK if observed.has_stable else DeploymentStatus.FAILED
    return Plan(
        progress=replace(progress, status=status, weight=0, hold_since=None, reason=reason),
        actions=(Route(0), ScaleCandidate(0)),
        events=(Event(kind, reason, {"status": status}),),
        consumed=kind == "aborted",
    )


def stop_if_failed(
    progress: Progress,
    *,
    observed: Observed,
    verdict: Verdict,
    request: Request,
    subject: str = "the candidate",
) -> Plan | None:
    """What ends any rollout at once: an abort request, a candidate that failed (a crash
    loop, a refused artifact), or a failed verdict. None when the rollout goes on."""
    if request.action == "abort":
        return roll_back(progress, observed=observed, kind="aborted", reason="aborted by request")
    candidate = observed.candidate
    if (
        progress.status != DeploymentStatus.INITIATED
        and candidate is not None
        and candidate.failure
    ):
        return roll_back(
            progress,
            observed=observed,
            kind="rolled_back",
            reason=f"{subject} failed: {candidate.failure}",
        )
    if progress.status != DeploymentStatus.INITIATED and verdict.outcome is Outcome.FAILED:
        return roll_back(progress, observed=observed, kind="rolled_back", reason=verdict.reason)
    return None


def promote(
    spec: RolloutSpec,
    progress: Progress,
    *,
    reason: str,
    consumed: bool,
    retire_after: timedelta | None = None,
) -> Plan:
    """All traffic to the candidate: it becomes Active and the old stable deployment Inactive,
    keeping its servers ``retire_after`` (the spec's ``scaleDownDelay`` unless said)."""
    return Plan(
        progress=replace(
            progress, status=DeploymentStatus.ACTIVE, weight=100, hold_since=None, reason=reason
        ),
        actions=(ScaleCandidate(spec.replicas), Route(100)),
        events=(Event("promoted", reason),),
        consumed=consumed,
        retire_stable=spec.scale_down_delay if retire_after is None else retire_after,
    )


def hold(
    spec: RolloutSpec,
    progress: Progress,
    *,
    observed: Observed,
    now: datetime,
    why: str,
    keep: tuple[Action, ...],
    promotable: bool = True,
) -> Plan | None:
    """Hold the step on an inconclusive verdict. Returns None when ``max_hold`` is over and
    ``on_hold_timeout`` is ``pass`` (the caller goes on as if the verdict had passed).
    A hold that is not ``promotable`` (the analysis itself failed) always ends in a rollback."""
    since = progress.hold_since or now
    if now - since >= spec.max_hold:
        if spec.on_hold_timeout == "pass" and promotable:
            return None
        return roll_back(
            progress,
            observed=observed,
            kind="rolled_back",
            reason=f"held for {format_duration(spec.max_hold)} without a verdict: {why}",
        )
    events = () if progress.hold_since else (Event("held", why),)
    remaining = since + spec.max_hold - now
    return Plan(
        progress=replace(progress, hold_since=since, reason=why),
        actions=keep,
        events=events,
        requeue_after=min(SOON, remaining),
        due=since + spec.max_hold,
    )
