"""A rollout's pause is not stretched to the controller's interval: a pass says when its
earliest rollout is due (``PassResult.next_due``), and the runner starts the next pass then,
not a whole interval later (issue 15, item 5)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from controller.reconcile import Controller
from controller.runner import ControllerRunner
from registry.auth import Principal
from registry.services import Registry
from registry.types import utcnow
from tests.controller.test_controller import add_version, deploy, make_controller, passes, view
from tests.support.fakes import FakeDeployer

T0 = datetime.now(UTC).replace(microsecond=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def actor(registry: Registry, admin_token: str) -> Principal:
    return registry.keys.authenticate(admin_token)


@pytest.fixture
def controller(registry: Registry) -> Controller:
    return make_controller(registry, FakeDeployer(), holder="test-1")


def canary(registry: Registry, actor: Principal, controller: Controller, pause: str) -> uuid.UUID:
    """text2img 1.0 Active, 2.0 rolling out as a canary 10 % for ``pause``, then 100 %."""
    add_version(registry, actor, "text2img", "1.0")
    add_version(registry, actor, "text2img", "2.0")
    deploy(registry, actor, "text2img", "1.0")
    passes(controller, at(0), at(1))
    return deploy(
        registry, actor, "text2img", "2.0", steps=[{"weight": 10, "pause": pause}, {"weight": 100}]
    )


def test_a_pass_says_when_a_pause_ends_before_the_next_interval(
    registry: Registry, actor: Principal, controller: Controller
) -> None:
    dep = canary(registry, actor, controller, "1500ms")
    passes(controller, at(10), at(11))  # started; ready: step 1 (10 %) begins at 11 s
    assert view(registry, dep).traffic_weight == 10
    result = controller.run_pass(now=at(11.5))
    assert result.next_due == at(12.5), "the pause's end, not the interval's next tick"
    passes(controller, at(12.5))
    assert view(registry, dep).status == "Active"


def test_a_pass_with_no_rollout_names_no_due_time(
    registry: Registry, actor: Principal, controller: Controller
) -> None:
    add_version(registry, actor, "text2img", "1.0")
    deploy(registry, actor, "text2img", "1.0")
    passes(controller, at(0), at(1))
    assert controller.run_pass(now=at(5)).next_due is None, "Active ones keep the interval"


def wait_for(check: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def test_the_runner_starts_the_next_pass_when_a_pause_ends_not_an_interval_later(
    registry: Registry, actor: Principal, controller: Controller
) -> None:
    dep = canary(registry, actor, controller, "2s")
    passes(controller, utcnow(), utcnow())  # on the wall clock, as the runner's passes are
    assert view(registry, dep).traffic_weight == 10, "step 1 and its 2 s pause began"
    runner = ControllerRunner(controller, interval=60)  # one interval would outlast the test
    runner.start()
    try:
        done = wait_for(lambda: view(registry, dep).status == "Active")
    finally:
        runner.stop()
    assert done, "the canary waited for the 60 s interval"
    assert view(registry, dep).traffic_weight == 100


def test_an_abort_is_carried_out_without_waiting_for_the_interval(
    registry: Registry, actor: Principal, controller: Controller
) -> None:
    dep = canary(registry, actor, controller, "1h")
    passes(controller, utcnow(), utcnow())
    assert view(registry, dep).traffic_weight == 10
    fresh = make_controller(registry, FakeDeployer(), holder="test-1")  # not a leader yet
    runner = ControllerRunner(fresh, interval=60)
    runner.start()
    try:
        assert wait_for(lambda: fresh.is_leader), "the runner's first pass is done"
        registry.deployments.request(actor, dep, "abort", reason="bad outputs")
        done = wait_for(lambda: view(registry, dep).status == "RolledBack")
    finally:
        runner.stop()
    assert done, "the abort waited for the 60 s interval"


def test_what_waits_for_the_controller_is_requests_and_new_deployments(
    registry: Registry, actor: Principal, controller: Controller
) -> None:
    ledger = registry.deployments.ledger
    dep = canary(registry, actor, controller, "1h")
    assert ledger.waiting() == {(dep, "Initiated")}
    passes(controller, at(10), at(11))
    assert ledger.waiting() == set(), "a rollout in its pause waits for nothing"
    registry.deployments.request(actor, dep, "promote")
    assert ledger.waiting() == {(dep, "promote")}
    passes(controller, at(12))
    assert ledger.waiting() == set(), "the request is carried out, its JSON null is no request"
