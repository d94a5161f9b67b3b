"""Blue-green: the candidate runs beside the active version as a preview, then takes all
traffic in one switch."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

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
from registry.vocabulary import DeploymentStatus, RouteRole

#: The candidate is a preview: reachable, with no traffic until it is promoted.
CANDIDATE_ROLE = RouteRole.PREVIEW


def plan_blue_green(
    spec: RolloutSpec,
    *,
    observed: Observed,
    progress: Progress,
    verdict: Verdict,
    now: datetime,
    request: Request = Request(),
) -> Plan:
    planned = _plan(
        spec, observed=observed, progress=progress, verdict=verdict, now=now, request=request
    )
    return replace(planned, candidate_role=CANDIDATE_ROLE)


def _plan(
    spec: RolloutSpec,
    *,
    observed: Observed,
    progress: Progress,
    verdict: Verdict,
    now: datetime,
    request: Request,
) -> Plan:
    stopped = stop_if_failed(
        progress, observed=observed, verdict=verdict, request=request, subject="the preview"
    )
    if stopped is not None:
        return stopped
    if progress.status == DeploymentStatus.INITIATED:
        return start(spec, progress)
    candidate = observed.candidate
    previewing = (
        ScaleCandidate(spec.replicas),
        Route(0, preview=progress.step_started_at is not None),
    )
    if candidate is None or not candidate.ready:
        held = hold(
            spec,
            progress,
            observed=observed,
            now=now,
            why="waiting for the preview's servers to become ready",
            keep=previewing,
        )
        if held is not None:
            return held
        # max_hold is over and onHoldTimeout is ``pass``: go on waiting; a candidate that is
        # not ready is neither previewed nor switched to.
        return Plan(progress=progress, actions=previewing, requeue_after=SOON)
    if progress.step_started_at is None:
        return Plan(
            progress=replace(
                progress,
                step_index=0,
                step_started_at=now,
                weight=0,
                hold_since=None,
                reason="preview: the candidate is up and takes no traffic",
            ),
            actions=(ScaleCandidate(spec.replicas), Route(0, preview=True)),
            events=(Event("preview", "the preview endpoint is up; no traffic yet"),),
            requeue_after=min(spec.preview_duration, SOON),
            due=now + spec.preview_duration,
        )
    if request.action == "promote":
        return _switch(spec, progress, reason="switched by request", consumed=True)
    if request.paused or not spec.auto_promote:
        reason = "paused" if request.paused else "preview: waiting for a promote request"
        return Plan(progress=replace(progress, reason=reason), actions=previewing)
    if verdict.outcome in HOLDING:
        held = hold(
            spec,
            progress,
            observed=observed,
            now=now,
            why=verdict.reason,
            keep=previewing,
            promotable=verdict.outcome is Outcome.INCONCLUSIVE,
        )
        if held is not None:
            return held
    due = progress.step_started_at + spec.preview_duration
    if now < due:
        return Plan(
            progress=replace(progress, hold_since=None),
            actions=previewing,
            requeue_after=min(due - now, SOON),
            due=due,
        )
    return _switch(spec, progress, reason=f"preview passed: {verdict.reason}", consumed=False)


def _switch(spec: RolloutSpec, progress: Progress, *, reason: str, consumed: bool) -> Plan:
    return promote(spec, replace(progress, step_index=1), reason=reason, consumed=consumed)
