"""The rollout strategies: pure functions from (spec, observed, progress, verdict, now) to a plan.

Every case is a row of a table: what the controller observed and recorded, and the plan a user
would see carried out (status, traffic weight, scaling, ledger events).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from controller.strategies import parse_spec, plan, spec_hash
from controller.strategies.base import (
    Action,
    Observed,
    Outcome,
    Plan,
    Progress,
    Request,
    RolloutSpec,
    Route,
    ScaleCandidate,
    ScaleStable,
    SlotState,
    SpecError,
    Step,
    Verdict,
)
from controller.strategies.blue_green import plan_blue_green
from controller.strategies.canary import plan_canary
from controller.strategies.rolling import plan_rolling

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)

PASS = Verdict(Outcome.PASSED, "error rate 0.1% <= 1%")
FAIL = Verdict(Outcome.FAILED, "error rate 5% > 1%")
WAIT = Verdict(Outcome.INCONCLUSIVE, "not enough requests yet")

READY = SlotState(replicas=1, ready_replicas=1)
NOT_READY = SlotState(replicas=1, ready_replicas=0)
CRASHED = SlotState(replicas=1, ready_replicas=0, failure="exited with code 1")

INITIATED = Progress(status="Initiated")
DEPLOYING = Progress(status="Deploying")

CANARY = parse_spec(
    "canary",
    {
        "steps": [
            {"weight": 10, "pause": "60s"},
            {"weight": 50, "pause": "60s"},
            {"weight": 100},
        ]
    },
)
CANARY_PASS_ON_HOLD = parse_spec("canary", {"onHoldTimeout": "pass"})
CANARY_LAST_PAUSE = parse_spec(
    "canary", {"steps": [{"weight": 20, "pause": "60s"}, {"weight": 50, "pause": "120s"}]}
)
BLUE_GREEN = parse_spec("blue_green", {"previewDuration": "5m"})
BLUE_GREEN_MANUAL = parse_spec("blue_green", {"autoPromote": False})
BLUE_GREEN_PASS_ON_HOLD = parse_spec("blue_green", {"onHoldTimeout": "pass"})
ROLLING = parse_spec("rolling_update", {"replicas": 4, "pause": "30s"})
ROLLING_3 = parse_spec("rolling_update", {"replicas": 3})
ROLLING_PASS_ON_HOLD = parse_spec("rolling_update", {"replicas": 4, "onHoldTimeout": "pass"})


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def seen(
    candidate: SlotState | None = READY, *, stable: bool = True, stable_replicas: int = 1
) -> Observed:
    return Observed(candidate=candidate, has_stable=stable, stable_replicas=stable_replicas)


def at_step(
    index: int,
    weight: int,
    *,
    started: datetime | None = None,
    hold_since: datetime | None = None,
) -> Progress:
    return Progress(
        status="Deploying",
        step_index=index,
        step_started_at=started,
        weight=weight,
        hold_since=hold_since,
    )


def slots(replicas: int, ready: int, failure: str | None = None) -> SlotState:
    return SlotState(replicas=replicas, ready_replicas=ready, failure=failure)


@dataclass(frozen=True)
class Case:
    spec: RolloutSpec
    progress: Progress
    observed: Observed
    verdict: Verdict = PASS
    request: Request = field(default_factory=Request)
    now: datetime = NOW


@dataclass(frozen=True)
class Want:
    status: str
    weight: int
    actions: tuple[Action, ...] | None = None
    """The exact end states; None: not checked by this row."""
    events: tuple[str, ...] = ()
    progress: Mapping[str, Any] = field(default_factory=dict)
    """Further progress fields that must have these values."""
    consumed: bool = False


Strategy = Callable[..., Plan]


def check(function: Strategy, case: Case, want: Want) -> Plan:
    def run() -> Plan:
        return function(
            case.spec,
            observed=case.observed,
            progress=case.progress,
            verdict=case.verdict,
            now=case.now,
            request=case.request,
        )

    result = run()
    assert run() == result, "a strategy must be a pure function of its inputs"
    assert result.progress.status == want.status
    assert result.progress.weight == want.weight
    assert tuple(event.kind for event in result.events) == want.events
    assert result.consumed is want.consumed
    if want.actions is not None:
        assert result.actions == want.actions
    for name, value in want.progress.items():
        assert getattr(result.progress, name) == value, name
    routes = [action for action in result.actions if isinstance(action, Route)]
    ready = case.observed.candidate is not None and case.observed.candidate.ready
    if not ready:
        assert all(route.weight <= case.progress.weight for route in routes), (
            "traffic must not grow while the candidate is not ready"
        )
        assert result.progress.weight <= case.progress.weight
    if result.progress.status in ("RolledBack", "Failed"):
        assert Route(0) in result.actions
        assert ScaleCandidate(0) in result.actions
        assert result.progress.status == ("RolledBack" if case.observed.has_stable else "Failed")
    return result


# -- canary ------------------------------------------------------------------------------

CANARY_CASES = [
    pytest.param(
        Case(CANARY, INITIATED, seen(None)),
        Want("Deploying", 0, (ScaleCandidate(1),), ("deploying",)),
        id="canary-initiated-starts-candidate-without-traffic",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(NOT_READY)),
        Want(
            "Deploying",
            0,
            (ScaleCandidate(1), Route(0)),
            ("held",),
            progress={"hold_since": NOW, "step_started_at": None},
        ),
        id="canary-holds-when-not-ready",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(None)),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), ("held",)),
        id="canary-holds-when-no-candidate-yet",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 0, hold_since=ago(100)), seen(NOT_READY)),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), (), progress={"hold_since": ago(100)}),
        id="canary-hold-keeps-its-start",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 10, started=ago(600), hold_since=ago(30)), seen(NOT_READY)),
        Want("Deploying", 10, (ScaleCandidate(1), Route(10)), (), progress={"step_index": 0}),
        id="canary-does-not-advance-while-not-ready",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 0, hold_since=ago(600)), seen(NOT_READY)),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-not-ready-hold-times-out-rolls-back",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 0, hold_since=ago(600)), seen(NOT_READY, stable=False)),
        Want("Failed", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-first-rollout-not-ready-hold-times-out-fails",
    ),
    pytest.param(
        Case(CANARY_PASS_ON_HOLD, at_step(0, 0, hold_since=ago(600)), seen(NOT_READY)),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), progress={"step_started_at": None}),
        id="canary-pass-on-hold-timeout-never-routes-to-not-ready",
    ),
    pytest.param(
        Case(
            CANARY_PASS_ON_HOLD,
            at_step(0, 0, hold_since=ago(600)),
            seen(NOT_READY, stable=False),
        ),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0))),
        id="canary-first-rollout-pass-on-hold-timeout-not-promoted-while-not-ready",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(READY)),
        Want(
            "Deploying",
            10,
            (ScaleCandidate(1), Route(10)),
            ("step",),
            progress={"step_index": 0, "step_started_at": NOW, "hold_since": None},
        ),
        id="canary-enters-first-step-when-ready",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 0, hold_since=ago(50)), seen(READY)),
        Want("Deploying", 10, (ScaleCandidate(1), Route(10)), ("step",), {"hold_since": None}),
        id="canary-enters-first-step-once-ready-after-a-hold",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 10, started=ago(59)), seen(READY)),
        Want(
            "Deploying",
            10,
            (ScaleCandidate(1), Route(10)),
            progress={"step_index": 0, "step_started_at": ago(59)},
        ),
        id="canary-waits-for-the-step-pause",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 10, started=ago(60)), seen(READY)),
        Want(
            "Deploying",
            50,
            (ScaleCandidate(1), Route(50)),
            ("step",),
            progress={"step_index": 1, "step_started_at": NOW},
        ),
        id="canary-advances-after-pause-counted-from-stored-step-start",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 10, started=ago(3600)), seen(READY), verdict=WAIT),
        Want(
            "Deploying",
            10,
            (ScaleCandidate(1), Route(10)),
            ("held",),
            progress={"step_index": 0, "hold_since": NOW},
        ),
        id="canary-holds-on-inconclusive-verdict",
    ),
    pytest.param(
        Case(
            CANARY,
            at_step(0, 10, started=ago(3600), hold_since=ago(600)),
            seen(READY),
            verdict=WAIT,
        ),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-inconclusive-hold-times-out-rolls-back",
    ),
    pytest.param(
        Case(
            CANARY_PASS_ON_HOLD,
            at_step(0, 10, started=ago(3600), hold_since=ago(600)),
            seen(READY),
            verdict=WAIT,
        ),
        Want(
            "Deploying",
            50,
            (ScaleCandidate(1), Route(50)),
            ("step",),
            {"step_index": 1, "hold_since": None},
        ),
        id="canary-inconclusive-hold-times-out-with-pass-goes-on",
    ),
    pytest.param(
        Case(CANARY, at_step(1, 50, started=ago(10)), seen(READY), verdict=FAIL),
        Want(
            "RolledBack",
            0,
            (Route(0), ScaleCandidate(0)),
            ("rolled_back",),
            progress={"reason": FAIL.reason},
        ),
        id="canary-failed-verdict-rolls-back-at-once",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(NOT_READY, stable=False), verdict=FAIL),
        Want("Failed", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-first-rollout-failed-verdict-fails",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 10, started=ago(10)), seen(CRASHED)),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-candidate-failure-rolls-back",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(CRASHED, stable=False)),
        Want("Failed", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-first-rollout-candidate-failure-fails",
    ),
    pytest.param(
        Case(CANARY, at_step(1, 50, started=ago(10)), seen(READY), request=Request(action="abort")),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("aborted",), consumed=True),
        id="canary-abort-rolls-back",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(NOT_READY, stable=False), request=Request(action="abort")),
        Want("Failed", 0, (Route(0), ScaleCandidate(0)), ("aborted",), consumed=True),
        id="canary-first-rollout-abort-fails",
    ),
    pytest.param(
        Case(
            CANARY, at_step(0, 10, started=ago(10)), seen(READY), request=Request(action="promote")
        ),
        Want("Active", 100, (ScaleCandidate(1), Route(100)), ("promoted",), consumed=True),
        id="canary-promote-request-promotes-at-once",
    ),
    pytest.param(
        Case(
            CANARY,
            at_step(0, 10, started=ago(10)),
            seen(NOT_READY),
            request=Request(action="promote"),
        ),
        Want("Deploying", 10, (ScaleCandidate(1), Route(10)), ("held",), consumed=False),
        id="canary-promote-request-waits-while-not-ready",
    ),
    pytest.param(
        Case(
            CANARY_PASS_ON_HOLD,
            at_step(0, 10, started=ago(900), hold_since=ago(600)),
            seen(NOT_READY),
            request=Request(action="promote"),
        ),
        Want("Deploying", 10, (ScaleCandidate(1), Route(10)), consumed=False),
        id="canary-promote-request-not-carried-out-while-not-ready-after-pass-timeout",
    ),
    pytest.param(
        Case(CANARY, at_step(0, 10, started=ago(3600)), seen(READY), request=Request(paused=True)),
        Want(
            "Deploying",
            10,
            (ScaleCandidate(1), Route(10)),
            progress={"step_index": 0, "step_started_at": ago(3600)},
        ),
        id="canary-paused-freezes-the-step",
    ),
    pytest.param(
        Case(
            CANARY,
            at_step(0, 10, started=ago(3600)),
            seen(READY),
            verdict=FAIL,
            request=Request(paused=True),
        ),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="canary-paused-still-rolls-back-on-failed-verdict",
    ),
    pytest.param(
        Case(CANARY, at_step(1, 50, started=ago(60)), seen(READY)),
        Want("Active", 100, (ScaleCandidate(1), Route(100)), ("promoted",)),
        id="canary-last-step-of-100-percent-promotes",
    ),
    pytest.param(
        Case(CANARY_LAST_PAUSE, at_step(1, 50, started=ago(119)), seen(READY)),
        Want("Deploying", 50, (ScaleCandidate(1), Route(50))),
        id="canary-waits-for-the-last-steps-pause",
    ),
    pytest.param(
        Case(CANARY_LAST_PAUSE, at_step(1, 50, started=ago(120)), seen(READY)),
        Want("Active", 100, (ScaleCandidate(1), Route(100)), ("promoted",)),
        id="canary-promotes-after-the-last-steps-pause",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(READY, stable=False), verdict=WAIT),
        Want("Active", 100, (ScaleCandidate(1), Route(100)), ("promoted",)),
        id="canary-first-rollout-promotes-as-soon-as-ready",
    ),
    pytest.param(
        Case(CANARY, DEPLOYING, seen(NOT_READY, stable=False)),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), ("held",)),
        id="canary-first-rollout-waits-while-not-ready",
    ),
]


@pytest.mark.parametrize(("case", "want"), CANARY_CASES)
def test_canary(case: Case, want: Want) -> None:
    check(plan_canary, case, want)


# -- blue-green --------------------------------------------------------------------------

PREVIEWING = (ScaleCandidate(1), Route(0, preview=True))

BLUE_GREEN_CASES = [
    pytest.param(
        Case(BLUE_GREEN, INITIATED, seen(None)),
        Want("Deploying", 0, (ScaleCandidate(1),), ("deploying",)),
        id="blue-green-initiated-starts-candidate-without-traffic",
    ),
    pytest.param(
        Case(BLUE_GREEN, DEPLOYING, seen(NOT_READY)),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), ("held",), {"hold_since": NOW}),
        id="blue-green-holds-when-not-ready",
    ),
    pytest.param(
        Case(BLUE_GREEN, DEPLOYING, seen(READY)),
        Want("Deploying", 0, PREVIEWING, ("preview",), {"step_started_at": NOW}),
        id="blue-green-previews-when-ready",
    ),
    pytest.param(
        Case(BLUE_GREEN, at_step(0, 0, started=ago(299)), seen(READY)),
        Want("Deploying", 0, PREVIEWING, progress={"step_started_at": ago(299)}),
        id="blue-green-waits-for-preview-duration",
    ),
    pytest.param(
        Case(BLUE_GREEN, at_step(0, 0, started=ago(300)), seen(READY)),
        Want("Active", 100, (ScaleCandidate(1), Route(100)), ("promoted",)),
        id="blue-green-switches-atomically-after-preview-duration",
    ),
    pytest.param(
        Case(BLUE_GREEN, at_step(0, 0, started=ago(900)), seen(READY), verdict=WAIT),
        Want("Deploying", 0, PREVIEWING, ("held",), {"hold_since": NOW}),
        id="blue-green-holds-preview-on-inconclusive-verdict",
    ),
    pytest.param(
        Case(
            BLUE_GREEN,
            at_step(0, 0, started=ago(900), hold_since=ago(600)),
            seen(READY),
            verdict=WAIT,
        ),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="blue-green-inconclusive-hold-times-out-rolls-back",
    ),
    pytest.param(
        Case(BLUE_GREEN, at_step(0, 0, started=ago(10)), seen(NOT_READY)),
        Want("Deploying", 0, PREVIEWING, ("held",)),
        id="blue-green-preview-holds-when-not-ready",
    ),
    pytest.param(
        Case(BLUE_GREEN_MANUAL, at_step(0, 0, started=ago(86400)), seen(READY)),
        Want("Deploying", 0, PREVIEWING),
        id="blue-green-manual-waits-for-promote-request",
    ),
    pytest.param(
        Case(
            BLUE_GREEN_MANUAL,
            at_step(0, 0, started=ago(10)),
            seen(READY),
            request=Request(action="promote"),
        ),
        Want("Active", 100, (ScaleCandidate(1), Route(100)), ("promoted",), consumed=True),
        id="blue-green-manual-switches-on-promote-request",
    ),
    pytest.param(
        Case(
            BLUE_GREEN_PASS_ON_HOLD,
            at_step(0, 0, started=ago(900), hold_since=ago(600)),
            seen(NOT_READY),
            request=Request(action="promote"),
        ),
        Want("Deploying", 0, PREVIEWING, consumed=False),
        id="blue-green-never-switches-to-not-ready-after-pass-timeout",
    ),
    pytest.param(
        Case(BLUE_GREEN_PASS_ON_HOLD, at_step(0, 0, hold_since=ago(600)), seen(NOT_READY)),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), progress={"step_started_at": None}),
        id="blue-green-no-preview-of-not-ready-after-pass-timeout",
    ),
    pytest.param(
        Case(BLUE_GREEN, at_step(0, 0, started=ago(10)), seen(READY), verdict=FAIL),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="blue-green-failed-verdict-rolls-back",
    ),
    pytest.param(
        Case(BLUE_GREEN, at_step(0, 0, started=ago(10)), seen(CRASHED)),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="blue-green-candidate-failure-rolls-back",
    ),
    pytest.param(
        Case(BLUE_GREEN, DEPLOYING, seen(CRASHED, stable=False)),
        Want("Failed", 0, (Route(0), ScaleCandidate(0)), ("rolled_back",)),
        id="blue-green-first-rollout-candidate-failure-fails",
    ),
    pytest.param(
        Case(
            BLUE_GREEN, at_step(0, 0, started=ago(10)), seen(READY), request=Request(action="abort")
        ),
        Want("RolledBack", 0, (Route(0), ScaleCandidate(0)), ("aborted",), consumed=True),
        id="blue-green-abort-rolls-back",
    ),
    pytest.param(
        Case(
            BLUE_GREEN, at_step(0, 0, started=ago(900)), seen(READY), request=Request(paused=True)
        ),
        Want("Deploying", 0, PREVIEWING),
        id="blue-green-paused-does-not-switch",
    ),
]


@pytest.mark.parametrize(("case", "want"), BLUE_GREEN_CASES)
def test_blue_green(case: Case, want: Want) -> None:
    check(plan_blue_green, case, want)


# -- rolling update ----------------------------------------------------------------------


def rolled(candidate: SlotState | None, *, stable: bool = True) -> Observed:
    return seen(candidate, stable=stable, stable_replicas=4 if stable else 0)


ROLLING_CASES = [
    pytest.param(
        Case(ROLLING, INITIATED, rolled(None)),
        Want("Deploying", 0, (ScaleCandidate(1),), ("deploying",)),
        id="rolling-initiated-starts-one-new-replica",
    ),
    pytest.param(
        Case(ROLLING, INITIATED, rolled(None, stable=False)),
        Want("Deploying", 0, (ScaleCandidate(4),), ("deploying",)),
        id="rolling-first-rollout-starts-all-replicas",
    ),
    pytest.param(
        Case(ROLLING, DEPLOYING, rolled(slots(1, 0))),
        Want("Deploying", 0, (ScaleCandidate(1), Route(0)), ("held",), {"hold_since": NOW}),
        id="rolling-waits-for-the-first-new-replica",
    ),
    pytest.param(
        Case(ROLLING, DEPLOYING, rolled(slots(1, 1))),
        Want(
            "Deploying",
            25,
            (ScaleCandidate(1), Route(25), ScaleStable(3)),
            ("step",),
            {"step_index": 0, "step_started_at": NOW},
        ),
        id="rolling-first-replica-ready-takes-a-quarter",
    ),
    pytest.param(
        Case(ROLLING, at_step(0, 25, started=ago(29)), rolled(slots(1, 1))),
        Want("Deploying", 25, (ScaleCandidate(1), Route(25), ScaleStable(3))),
        id="rolling-waits-for-the-pause",
    ),
    pytest.param(
        Case(ROLLING, at_step(0, 25, started=ago(30)), rolled(slots(1, 1))),
        Want(
            "Deploying",
            25,
            (ScaleCandidate(2), Route(25), ScaleStable(3)),
            ("scaling",),
            {"step_index": 1, "step_started_at": None},
        ),
        id="rolling-starts-the-next-replica-after-the-pause",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 25), rolled(slots(2, 1))),
        Want("Deploying", 25, (ScaleCandidate(2), Route(25)), ("held",)),
        id="rolling-no-traffic-to-a-replica-not-ready",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 25), rolled(slots(2, 2))),
        Want("Deploying", 50, (ScaleCandidate(2), Route(50), ScaleStable(2)), ("step",)),
        id="rolling-second-replica-ready-takes-half",
    ),
    pytest.param(
        Case(ROLLING_3, at_step(1, 33), rolled(slots(2, 2))),
        Want("Deploying", 67, (ScaleCandidate(2), Route(67), ScaleStable(1)), ("step",)),
        id="rolling-weight-is-rounded",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 50, started=ago(300)), rolled(slots(2, 2)), verdict=WAIT),
        Want("Deploying", 50, (ScaleCandidate(2), Route(50), ScaleStable(2)), ("held",)),
        id="rolling-holds-on-inconclusive-verdict",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 50, started=ago(300)), rolled(slots(2, 2)), request=Request(True)),
        Want("Deploying", 50, (ScaleCandidate(2), Route(50), ScaleStable(2))),
        id="rolling-paused-freezes",
    ),
    pytest.param(
        Case(ROLLING, at_step(3, 75), rolled(slots(4, 4))),
        Want("Active", 100, (ScaleCandidate(4), Route(100), ScaleStable(0)), ("promoted",)),
        id="rolling-all-replicas-ready-promotes",
    ),
    pytest.param(
        Case(ROLLING, DEPLOYING, rolled(slots(4, 4), stable=False)),
        Want("Active", 100, (ScaleCandidate(4), Route(100)), ("promoted",)),
        id="rolling-first-rollout-promotes-when-all-ready",
    ),
    pytest.param(
        Case(ROLLING, DEPLOYING, rolled(slots(4, 2), stable=False)),
        Want("Deploying", 0, (ScaleCandidate(4), Route(0)), ("held",)),
        id="rolling-first-rollout-waits-for-all",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 50, started=ago(5)), rolled(slots(2, 2)), verdict=FAIL),
        Want(
            "RolledBack",
            0,
            (Route(0), ScaleCandidate(0), ScaleStable(4)),
            ("rolled_back",),
        ),
        id="rolling-failed-verdict-restores-the-stable",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 50, started=ago(5)), rolled(slots(2, 1, "OOMKilled"))),
        Want(
            "RolledBack",
            0,
            (Route(0), ScaleCandidate(0), ScaleStable(4)),
            ("rolled_back",),
        ),
        id="rolling-candidate-failure-restores-the-stable",
    ),
    pytest.param(
        Case(
            ROLLING,
            at_step(1, 50, started=ago(5)),
            rolled(slots(2, 2)),
            request=Request(action="abort"),
        ),
        Want(
            "RolledBack",
            0,
            (Route(0), ScaleCandidate(0), ScaleStable(4)),
            ("aborted",),
            consumed=True,
        ),
        id="rolling-abort-restores-the-stable",
    ),
    pytest.param(
        Case(
            ROLLING, DEPLOYING, rolled(slots(4, 1), stable=False), request=Request(action="abort")
        ),
        Want("Failed", 0, (Route(0), ScaleCandidate(0)), ("aborted",), consumed=True),
        id="rolling-first-rollout-abort-fails",
    ),
    pytest.param(
        Case(ROLLING, at_step(1, 25, hold_since=ago(600)), rolled(slots(2, 1))),
        Want(
            "RolledBack",
            0,
            (Route(0), ScaleCandidate(0), ScaleStable(4)),
            ("rolled_back",),
        ),
        id="rolling-not-ready-hold-timeout-restores-the-stable",
    ),
    pytest.param(
        Case(
            ROLLING,
            at_step(1, 50, started=ago(900), hold_since=ago(600)),
            rolled(slots(2, 2)),
            verdict=WAIT,
        ),
        Want(
            "RolledBack",
            0,
            (Route(0), ScaleCandidate(0), ScaleStable(4)),
            ("rolled_back",),
        ),
        id="rolling-inconclusive-hold-timeout-restores-the-stable",
    ),
    pytest.param(
        Case(ROLLING_PASS_ON_HOLD, at_step(1, 25, hold_since=ago(600)), rolled(slots(2, 1))),
        Want("Deploying", 25, (ScaleCandidate(2), Route(25))),
        id="rolling-pass-on-hold-timeout-never-routes-to-not-ready",
    ),
]


@pytest.mark.parametrize(("case", "want"), ROLLING_CASES)
def test_rolling_update(case: Case, want: Want) -> None:
    check(plan_rolling, case, want)


# -- dispatch ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "function"),
    [
        pytest.param(CANARY, plan_canary, id="canary"),
        pytest.param(BLUE_GREEN, plan_blue_green, id="blue-green"),
        pytest.param(ROLLING, plan_rolling, id="rolling-update"),
    ],
)
def test_plan_dispatches_by_strategy(spec: RolloutSpec, function: Strategy) -> None:
    for progress, observed in [
        (INITIATED, seen(None)),
        (DEPLOYING, seen(READY)),
        (DEPLOYING, seen(NOT_READY)),
    ]:
        direct = function(
            spec, observed=observed, progress=progress, verdict=PASS, now=NOW, request=Request()
        )
        assert plan(spec, observed=observed, progress=progress, verdict=PASS, now=NOW) == direct


# -- parse_spec --------------------------------------------------------------------------

BAD_SPECS = [
    pytest.param("linear", {}, "deploymentStrategy", id="unknown-strategy"),
    pytest.param("canary", {"stepz": []}, "stepz", id="unknown-field"),
    pytest.param(
        "canary", {"previewDuration": "1m"}, "previewDuration", id="other-strategys-field"
    ),
    pytest.param("canary", {"replicas": 0}, "strategyParams.replicas", id="replicas-zero"),
    pytest.param("canary", {"replicas": 101}, "strategyParams.replicas", id="replicas-too-many"),
    pytest.param("canary", {"replicas": "2"}, "strategyParams.replicas", id="replicas-string"),
    pytest.param("canary", {"replicas": True}, "strategyParams.replicas", id="replicas-bool"),
    pytest.param("canary", {"steps": []}, "strategyParams.steps", id="steps-empty"),
    pytest.param("canary", {"steps": "10,50"}, "strategyParams.steps", id="steps-not-a-list"),
    pytest.param(
        "canary",
        {"steps": [{"weight": 50}, {"weight": 50}]},
        "strategyParams.steps[1].weight",
        id="steps-weights-not-increasing",
    ),
    pytest.param(
        "canary",
        {"steps": [{"weight": 50}, {"weight": 20}]},
        "strategyParams.steps[1].weight",
        id="steps-weights-decreasing",
    ),
    pytest.param(
        "canary", {"steps": [{"weight": 0}]}, "strategyParams.steps[0].weight", id="weight-zero"
    ),
    pytest.param(
        "canary",
        {"steps": [{"weight": 10}, {"weight": 101}]},
        "strategyParams.steps[1].weight",
        id="weight-over-100",
    ),
    pytest.param(
        "canary", {"steps": [{"weight": True}]}, "strategyParams.steps[0].weight", id="weight-bool"
    ),
    pytest.param(
        "canary", {"steps": [{"weight": 10.5}]}, "strategyParams.steps[0].weight", id="weight-float"
    ),
    pytest.param(
        "canary",
        {"steps": [{"weight": 10, "wait": "1m"}]},
        "strategyParams.steps[0]",
        id="step-unknown-field",
    ),
    pytest.param(
        "canary",
        {"steps": [{"weight": 10, "pause": "abc"}]},
        "strategyParams.steps[0].pause",
        id="step-pause-not-a-duration",
    ),
    pytest.param("canary", {"maxHold": "abc"}, "strategyParams.maxHold", id="duration-abc"),
    pytest.param("canary", {"maxHold": -1}, "strategyParams.maxHold", id="duration-negative"),
    pytest.param("canary", {"maxHold": "-1s"}, "strategyParams.maxHold", id="duration-neg-str"),
    pytest.param("canary", {"maxHold": True}, "strategyParams.maxHold", id="duration-bool"),
    pytest.param("canary", {"maxHold": "8d"}, "strategyParams.maxHold", id="duration-bad-unit"),
    pytest.param("canary", {"maxHold": 8 * 86400}, "strategyParams.maxHold", id="duration-long"),
    pytest.param(
        "canary", {"scaleDownDelay": [1]}, "strategyParams.scaleDownDelay", id="duration-list"
    ),
    pytest.param(
        "blue_green",
        {"previewDuration": "soon"},
        "strategyParams.previewDuration",
        id="preview-duration-bad",
    ),
    pytest.param(
        "rolling_update", {"pause": "-5m"}, "strategyParams.pause", id="rolling-pause-bad"
    ),
    pytest.param(
        "canary", {"onHoldTimeout": "skip"}, "strategyParams.onHoldTimeout", id="on-hold-bad"
    ),
    pytest.param(
        "canary", {"onHoldTimeout": True}, "strategyParams.onHoldTimeout", id="on-hold-bool"
    ),
    pytest.param(
        "blue_green", {"autoPromote": "yes"}, "strategyParams.autoPromote", id="auto-promote-str"
    ),
    pytest.param(
        "blue_green", {"autoPromote": 1}, "strategyParams.autoPromote", id="auto-promote-int"
    ),
    pytest.param("canary", {"resources": "big"}, "strategyParams.resources", id="resources-str"),
    pytest.param("canary", {"analysis": []}, "strategyParams.analysis", id="analysis-list"),
]


@pytest.mark.parametrize(("strategy", "params", "field_name"), BAD_SPECS)
def test_parse_spec_rejects(strategy: str, params: dict[str, Any], field_name: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(strategy, params)
    assert field_name in str(error.value)


@pytest.mark.parametrize(
    ("strategy", "params", "expected"),
    [
        pytest.param(
            "canary",
            None,
            RolloutSpec(
                strategy="canary",
                replicas=1,
                steps=(
                    Step(10, timedelta(seconds=60)),
                    Step(50, timedelta(seconds=60)),
                    Step(100, timedelta(0)),
                ),
                scale_down_delay=timedelta(seconds=300),
                max_hold=timedelta(seconds=600),
                on_hold_timeout="fail",
            ),
            id="canary-defaults",
        ),
        pytest.param(
            "canary",
            {"steps": [{"weight": 5}, {"weight": 100, "pause": "1m"}], "replicas": 2},
            RolloutSpec(
                strategy="canary",
                replicas=2,
                steps=(Step(5, timedelta(0)), Step(100, timedelta(minutes=1))),
            ),
            id="canary-steps-pause-defaults-to-zero",
        ),
        pytest.param(
            "blue_green",
            {},
            RolloutSpec(strategy="blue_green", preview_duration=timedelta(0), auto_promote=True),
            id="blue-green-defaults",
        ),
        pytest.param(
            "blue_green",
            {"previewDuration": "90s", "autoPromote": False, "onHoldTimeout": "pass"},
            RolloutSpec(
                strategy="blue_green",
                preview_duration=timedelta(seconds=90),
                auto_promote=False,
                on_hold_timeout="pass",
            ),
            id="blue-green-params",
        ),
        pytest.param(
            "rolling_update",
            {"replicas": 3, "pause": "1m"},
            RolloutSpec(
                strategy="rolling_update",
                replicas=3,
                steps=tuple(Step(w, timedelta(minutes=1)) for w in (33, 67, 100)),
            ),
            id="rolling-one-step-per-replica",
        ),
        pytest.param(
            "canary",
            {"maxHold": "250ms", "scaleDownDelay": 1.5},
            RolloutSpec(
                strategy="canary",
                steps=parse_spec("canary", None).steps,
                max_hold=timedelta(milliseconds=250),
                scale_down_delay=timedelta(seconds=1.5),
            ),
            id="durations-ms-and-number",
        ),
        pytest.param(
            "canary",
            {"maxHold": "1h", "scaleDownDelay": " 2 m "},
            RolloutSpec(
                strategy="canary",
                steps=parse_spec("canary", None).steps,
                max_hold=timedelta(hours=1),
                scale_down_delay=timedelta(minutes=2),
            ),
            id="durations-hours-and-minutes",
        ),
    ],
)
def test_parse_spec_fills_defaults(
    strategy: str, params: dict[str, Any] | None, expected: RolloutSpec
) -> None:
    assert parse_spec(strategy, params) == expected


def test_spec_hash_is_stable_and_tells_specs_apart() -> None:
    one = spec_hash("canary", {"replicas": 2, "maxHold": "1m"}, "v1")
    assert one == spec_hash("canary", {"maxHold": "1m", "replicas": 2}, "v1")
    assert one != spec_hash("canary", {"replicas": 2, "maxHold": "1m"}, "v2")
    assert one != spec_hash("canary", {"replicas": 3, "maxHold": "1m"}, "v1")
    assert one != spec_hash("rolling_update", {"replicas": 2, "maxHold": "1m"}, "v1")
    assert spec_hash("canary", None, "v1") == spec_hash("canary", {}, "v1")


# -- a canary walked through random observations -----------------------------------------

TERMINAL = {"Active", "RolledBack", "Failed"}

ticks = st.tuples(
    st.sampled_from([Outcome.PASSED, Outcome.PASSED, Outcome.INCONCLUSIVE, Outcome.FAILED]),
    st.sampled_from(["ready", "ready", "ready", "starting", "absent", "crashed"]),
    st.integers(min_value=0, max_value=400),
    st.sampled_from([None, None, None, None, "paused", "promote", "abort"]),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=4, unique=True),
    max_hold=st.sampled_from([0, 30, 90, 300]),
    on_hold_timeout=st.sampled_from(["fail", "pass"]),
    has_stable=st.booleans(),
    walk=st.lists(ticks, max_size=40),
)
@example(  # a hold that times out with onHoldTimeout=pass must not route to a candidate not ready
    steps=[10, 50],
    max_hold=0,
    on_hold_timeout="pass",
    has_stable=True,
    walk=[(Outcome.PASSED, "ready", 0, None), (Outcome.PASSED, "starting", 0, None)],
)
@example(
    steps=[10],
    max_hold=0,
    on_hold_timeout="pass",
    has_stable=False,
    walk=[(Outcome.PASSED, "ready", 0, None), (Outcome.PASSED, "starting", 0, "promote")],
)
def test_canary_walk_keeps_its_invariants(
    steps: list[int],
    max_hold: int,
    on_hold_timeout: str,
    has_stable: bool,
    walk: list[tuple[Outcome, str, int, str | None]],
) -> None:
    spec = parse_spec(
        "canary",
        {
            "steps": [{"weight": w, "pause": "60s"} for w in sorted(steps)],
            "maxHold": max_hold,
            "onHoldTimeout": on_hold_timeout,
        },
    )
    allowed = {0, 100, *steps}
    candidates = {
        "ready": READY,
        "starting": NOT_READY,
        "absent": None,
        "crashed": CRASHED,
    }
    progress = INITIATED
    now = NOW
    for outcome, state, seconds, asked in walk:
        candidate = candidates[state]
        observed = Observed(candidate=candidate, has_stable=has_stable, stable_replicas=1)
        request = Request(
            paused=asked == "paused", action=asked if asked in ("promote", "abort") else None
        )
        verdict = Verdict(outcome, f"{outcome.value} at {now.isoformat()}")
        result = plan(
            spec, observed=observed, progress=progress, verdict=verdict, now=now, request=request
        )
        assert result == plan(
            spec, observed=observed, progress=progress, verdict=verdict, now=now, request=request
        )
        new = result.progress
        routes = [a.weight for a in result.actions if isinstance(a, Route)]
        ready = candidate is not None and candidate.ready
        if not ready:
            assert new.weight <= progress.weight
            assert all(weight <= progress.weight for weight in routes)
        assert new.status in {"Deploying", *TERMINAL}
        assert new.weight in allowed
        assert set(routes) <= allowed
        if new.status in ("RolledBack", "Failed"):
            assert new.weight == 0
            assert routes == [0]
            assert new.status == ("RolledBack" if has_stable else "Failed")
        if new.status == "Active":
            assert new.weight == 100
            assert routes == [100]
            assert ready
        if result.consumed:
            assert new.status in TERMINAL
        progress = new
        if new.status in TERMINAL:
            break
        now += timedelta(seconds=seconds)
