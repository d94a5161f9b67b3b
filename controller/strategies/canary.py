"""Canary: the candidate takes a growing share of traffic, step by step, each step gated."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from controller.strategies.base import (
    HOLDING,
    SOON,
    Event,
    Observed,
    Outcome,
    Plan,
    Progress,
    Request,
    RolloutSpec,
    Route,
    ScaleCandidate,
    Verdict,
    hold,
    promote,
    start,
    stop_if_failed,
)
from registry.vocabulary import DeploymentStatus


def plan_canary(
    spec: RolloutSpec,
    *,
    observed: Observed,
    progress: Progress,
    verdict: Verdict,
    now: datetime,
    request: Request = Request(),
) -> Plan:
    stopped = stop_if_failed(progress, observed=observed, verdict=verdict, request=request)
    if stopped is not None:
        return stopped
    if progress.status == DeploymentStatus.INITIATED:
        return start(spec, progress)
    candidate = observed.candidate
    steps = spec.steps
    index = min(progress.step_index, len(steps) - 1)
    current = (ScaleCandidate(spec.replicas), Route(progress.weight))
    if candidate is None or not candidate.ready:
        held = hold(
            spec,
            progress,
            observed=observed,
            now=now,
            why="waiting for the candidate's servers to become ready",
            keep=current,
        )
        if held is not None:
            return held
        # max_hold is over and onHoldTimeout is ``pass``: go on waiting, but never send
        # traffic (or more traffic) to a candidate that is not ready.
        return Plan(progress=progress, actions=current, requeue_after=SOON)
    if request.action == "promote":
        return promote(spec, progress, reason="promoted by request", consumed=True)
    if not observed.has_stable:
        return promote(
            spec,
            progress,
            reason="first rollout: no stable version to compare with",
            consumed=False,
        )
    if progress.step_started_at is None:
        return _enter(spec, progress, index=index, now=now)
    if request.paused:
        return Plan(progress=replace(progress, reason="paused"), actions=current)
    if verdict.outcome in HOLDING:
        held = hold(
            spec,
            progress,
            observed=observed,
            now=now,
            why=verdict.reason,
            keep=current,
            promotable=verdict.outcome is Outcome.INCONCLUSIVE,
        )
        if held is not None:
            return held
    due = progress.step_started_at + steps[index].pause
    if now < due:
        return Plan(
            progress=replace(progress, hold_since=None),
            actions=current,
            requeue_after=min(due - now, SOON),
            due=due,
        )
    if index + 1 < len(steps):
        return _enter(spec, progress, index=index + 1, now=now, verdict=verdict)
    return promote(
        spec, progress, reason=f"all {len(steps)} steps passed: {verdict.reason}", consumed=False
    )


def _enter(
    spec: RolloutSpec,
    progress: Progress,
    *,
    index: int,
    now: datetime,
    verdict: Verdict | None = None,
) -> Plan:
    step = spec.steps[index]
    if step.weight >= 100 and index == len(spec.steps) - 1 and step.pause.total_seconds() == 0:
        return promote(spec, progress, reason="last step is 100%", consumed=False)
    details: dict[str, Any] = {"step": index + 1, "of": len(spec.steps), "weight": step.weight}
    if verdict is not None:
        details["verdict"] = verdict.to_dict()
    return Plan(
        progress=replace(
            progress,
            status=DeploymentStatus.DEPLOYING,
            step_index=index,
            step_started_at=now,
            weight=step.weight,
            hold_since=None,
            reason=f"step {index + 1} of {len(spec.steps)}: {step.weight}% to the candidate",
        ),
        actions=(ScaleCandidate(spec.replicas), Route(step.weight)),
        events=(
            Event(
                "step",
                f"step {index + 1} of {len(spec.steps)}: {step.weight}% of traffic "
                "to the candidate",
                details,
            ),
        ),
        requeue_after=min(step.pause, SOON),
        due=now + step.pause,
    )
