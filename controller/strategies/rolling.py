"""Rolling update: replace the stable version's replicas one at a time, traffic following the
ready replicas."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from controller.strategies.base import (
    HOLDING,
    SOON,
    Action,
    Event,
    Observed,
    Outcome,
    Plan,
    Progress,
    Request,
    RolloutSpec,
    Route,
    ScaleCandidate,
    ScaleStable,
    Verdict,
    hold,
    promote,
    stop_if_failed,
)
from registry.vocabulary import DeploymentStatus

#: The stable version's replicas were replaced one by one: once promoted, nothing of it is
#: kept running for a rollback.
RETIRE_STABLE_AFTER = timedelta(0)


def plan_rolling(
    spec: RolloutSpec,
    *,
    observed: Observed,
    progress: Progress,
    verdict: Verdict,
    now: datetime,
    request: Request = Request(),
) -> Plan:
    total = spec.replicas
    stopped = stop_if_failed(
        progress, observed=observed, verdict=verdict, request=request, subject="the new replicas"
    )
    if stopped is not None:
        return _restore_stable(stopped, observed)
    if progress.status == DeploymentStatus.INITIATED:
        first = 1 if observed.has_stable else total
        return Plan(
            progress=replace(
                progress, status=DeploymentStatus.DEPLOYING, step_index=0, step_started_at=None
            ),
            actions=(ScaleCandidate(first),),
            events=(Event("deploying", f"rolling update of {total} replica(s) started"),),
            requeue_after=SOON,
        )
    candidate = observed.candidate
    if not observed.has_stable:
        if candidate is not None and candidate.ready:
            return promote(
                spec,
                progress,
                reason="first rollout: all replicas ready",
                consumed=False,
                retire_after=RETIRE_STABLE_AFTER,
            )
        return _wait(spec, progress, observed=observed, now=now, want=total)
    index = progress.step_index
    want = index + 1
    if request.action == "promote":
        if candidate is not None and candidate.ready and candidate.replicas >= total:
            plan = promote(
                spec,
                progress,
                reason="promoted by request",
                consumed=True,
                retire_after=RETIRE_STABLE_AFTER,
            )
            return replace(plan, actions=(*plan.actions, ScaleStable(0)))
        return _wait(spec, progress, observed=observed, now=now, want=total)
    if candidate is None or candidate.ready_replicas < want or not candidate.ready:
        return _wait(spec, progress, observed=observed, now=now, want=want)
    weight = round(100 * want / total)
    if progress.step_started_at is None:
        if want >= total:
            plan = promote(
                spec,
                progress,
                reason=f"all {total} replicas replaced",
                consumed=False,
                retire_after=RETIRE_STABLE_AFTER,
            )
            return replace(plan, actions=(*plan.actions, ScaleStable(0)))
        return Plan(
            progress=replace(
                progress,
                step_started_at=now,
                weight=weight,
                hold_since=None,
                reason=f"{want} of {total} replicas replaced",
            ),
            actions=(ScaleCandidate(want), Route(weight), ScaleStable(total - want)),
            events=(
                Event(
                    "step",
                    f"{want} of {total} replicas replaced: {weight}% of traffic to the new version",
                    {"step": want, "of": total, "weight": weight},
                ),
            ),
            requeue_after=SOON,
        )
    current = (ScaleCandidate(want), Route(progress.weight), ScaleStable(total - want))
    if request.paused:
        return Plan(progress=replace(progress, reason="paused"), actions=current)
    if verdict.outcome in HOLDING:
        held = _hold(
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
    pause = spec.steps[min(index, len(spec.steps) - 1)].pause
    due = progress.step_started_at + pause
    if now < due:
        return Plan(
            progress=replace(progress, hold_since=None),
            actions=current,
            requeue_after=min(due - now, SOON),
            due=due,
        )
    return Plan(
        progress=replace(progress, step_index=index + 1, step_started_at=None, hold_since=None),
        actions=(ScaleCandidate(want + 1), Route(progress.weight), ScaleStable(total - want)),
        events=(Event("scaling", f"starting replica {want + 1} of {total}"),),
        requeue_after=SOON,
    )


def _wait(
    spec: RolloutSpec, progress: Progress, *, observed: Observed, now: datetime, want: int
) -> Plan:
    keep = (ScaleCandidate(want), Route(progress.weight))
    held = _hold(
        spec,
        progress,
        observed=observed,
        now=now,
        why=f"waiting for {want} new replica(s) to become ready",
        keep=keep,
    )
    if held is not None:
        return held
    return Plan(progress=progress, actions=keep, requeue_after=SOON)


def _hold(
    spec: RolloutSpec,
    progress: Progress,
    *,
    observed: Observed,
    now: datetime,
    why: str,
    keep: tuple[Action, ...],
    promotable: bool = True,
) -> Plan | None:
    """:func:`hold`, but a hold that times out into a rollback also restores the stable."""
    held = hold(
        spec, progress, observed=observed, now=now, why=why, keep=keep, promotable=promotable
    )
    if held is not None and held.progress.status in (
        DeploymentStatus.ROLLED_BACK,
        DeploymentStatus.FAILED,
    ):
        return _restore_stable(held, observed)
    return held


def _restore_stable(plan: Plan, observed: Observed) -> Plan:
    """A rolled-back rolling update gives the stable version back all of its replicas."""
    if not observed.has_stable:
        return plan
    return replace(plan, actions=(*plan.actions, ScaleStable(observed.stable_replicas)))
