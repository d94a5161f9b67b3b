"""The controller's pass, against a fake deployer, on SQLite and PostgreSQL, with a fixed clock."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from controller import orphans
from controller.analysis import StepAnalysis
from controller.orphans import orphaned_because
from controller.reconcile import Controller
from deployers.base import (
    PermanentError,
    Target,
    TemporaryError,
    VersionRef,
    Workload,
    WorkloadStatus,
)
from deployers.kubernetes import KubernetesDeployer
from deployers.local import LocalDeployer, child_env
from registry.auth import Principal
from registry.models import AIModelDeployment, AIModelVersion, ControllerLease, DeploymentEvent
from registry.services import Registry, build_registry
from registry.services.deployments import DeploymentView, VersionInfo
from registry.services.routing import current_routes
from registry.settings import Settings
from registry.types import utcnow
from tests.support.fakes import FakeDeployer, FakeKubeApi, SteadyTraffic
from tests.support.helpers import pass_validation
from tests.support.kube_settings import make_settings as make_kube_settings
from tests.support.onnx_models import add_model
from tests.support.processes import kill_if_recorded, process_start

# The pass clock is fixed per test run, near the wall clock: the API's own checks (is a
# rollback still instant?) read the wall clock.
T0 = datetime.now(UTC).replace(microsecond=0)
STEPS = [{"weight": 10, "pause": "60s"}, {"weight": 50, "pause": "60s"}, {"weight": 100}]


@pytest.fixture
def actor(registry: Registry, admin_token: str) -> Principal:
    return registry.keys.authenticate(admin_token)


@pytest.fixture
def deployer() -> FakeDeployer:
    return FakeDeployer()


@pytest.fixture
def controller(registry: Registry, deployer: FakeDeployer) -> Controller:
    return make_controller(registry, deployer, holder="test-1")


def make_controller(
    registry: Registry, deployer: FakeDeployer, *, holder: str, **kwargs: Any
) -> Controller:
    return Controller(
        registry.deployments,
        deployers={"local": deployer},
        analysis=StepAnalysis(scrape=SteadyTraffic()),
        holder=holder,
        **kwargs,
    )


def add_version(registry: Registry, actor: Principal, model: str, number: str) -> None:
    try:
        registry.models.get(model)
    except Exception:
        registry.models.create(actor, name=model, provider="Internal", task_type="ImageGeneration")
    registry.versions.create(actor, model, version_number=number)
    registry.versions.upload(actor, model, number, [f"weights {number}".encode()])
    pass_validation(registry)


def deploy(
    registry: Registry,
    actor: Principal,
    model: str,
    number: str,
    *,
    strategy: str = "canary",
    environment: str = "production",
    **params: Any,
) -> uuid.UUID:
    dep = registry.deployments.create(
        actor,
        model_name=model,
        version_number=number,
        environment=environment,
        strategy=strategy,
        params=params,
    )
    return dep.id


def passes(controller: Controller, *times: datetime) -> None:
    for now in times:
        result = controller.run_pass(now=now)
        assert result.leader
        assert not result.errors, result.failures


def view(registry: Registry, dep_id: uuid.UUID) -> DeploymentView:
    return registry.deployments.get(dep_id)


def weights(registry: Registry, model: str, environment: str = "production") -> dict[str, int]:
    with registry.sessions() as s:
        model_id = registry.models.get(model).id
        return {
            r.version_number: r.weight
            for r in current_routes(s, model_id=model_id, environment=environment)
        }


def kinds(registry: Registry, dep_id: uuid.UUID) -> list[str]:
    return [e.kind for e in registry.deployments.events(dep_id)]


def lifecycle(registry: Registry, model: str) -> dict[str, str]:
    with registry.sessions() as s:
        model_id = registry.models.get(model).id
        rows = s.scalars(select(AIModelVersion).where(AIModelVersion.model_id == model_id))
        return {v.version_number: v.status for v in rows}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def live_v1(registry: Registry, actor: Principal, controller: Controller) -> uuid.UUID:
    """text2img 1.0 Active in production, 2.0 uploaded and validated."""
    add_version(registry, actor, "text2img", "1.0")
    add_version(registry, actor, "text2img", "2.0")
    dep = deploy(registry, actor, "text2img", "1.0")
    passes(controller, at(0), at(1))
    assert view(registry, dep).status == "Active"
    return dep


def test_first_rollout_goes_active_and_serves(
    registry: Registry, actor: Principal, controller: Controller, deployer: FakeDeployer
) -> None:
    add_version(registry, actor, "text2img", "1.0")
    dep = deploy(registry, actor, "text2img", "1.0")
    assert view(registry, dep).status == "Initiated"
    passes(controller, at(0))
    assert view(registry, dep).status == "Deploying"
    assert weights(registry, "text2img") == {}, "nothing is routed before it is ready"
    passes(controller, at(1))
    current = view(registry, dep)
    assert current.status == "Active"
    assert current.traffic_weight == 100
    assert current.endpoint == "http://127.0.0.1:9100"
    assert weights(registry, "text2img") == {"1.0": 100}
    assert lifecycle(registry, "text2img") == {"1.0": "Production"}
    assert kinds(registry, dep) == [
        "created",
        "deploying",
        "verdict",
        "promoted",
        "traffic",
    ]
    assert deployer.running() == {"1.0": 1}


def test_canary_walks_its_steps_and_retires_the_old_version(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
) -> None:
    dep = deploy(registry, actor, "text2img", "2.0", steps=STEPS, scaleDownDelay="5m")
    passes(controller, at(10))
    assert weights(registry, "text2img") == {"1.0": 100}
    passes(controller, at(11))
    assert view(registry, dep).traffic_weight == 10
    assert weights(registry, "text2img") == {"1.0": 90, "2.0": 10}
    passes(controller, at(40))
    assert weights(registry, "text2img") == {"1.0": 90, "2.0": 10}, "the pause is not over"
    passes(controller, at(71))
    assert weights(registry, "text2img") == {"1.0": 50, "2.0": 50}
    assert view(registry, dep).step_index == 1
    passes(controller, at(131))
    assert view(registry, dep).status == "Active"
    assert weights(registry, "text2img") == {"2.0": 100}
    old = view(registry, live_v1)
    assert old.status == "Inactive"
    assert old.scale_down_at == at(131) + timedelta(minutes=5)
    assert lifecycle(registry, "text2img") == {"1.0": "Deprecated", "2.0": "Production"}
    assert deployer.running() == {"1.0": 1, "2.0": 1}, "the old servers wait for scaleDownDelay"
    passes(controller, at(300))
    assert deployer.running() == {"1.0": 1, "2.0": 1}
    passes(controller, at(432), at(433))
    assert deployer.running() == {"2.0": 1}
    assert view(registry, live_v1).finished_at is not None
    steps = [e for e in registry.deployments.events(dep) if e.kind == "step"]
    assert [e.details["weight"] for e in steps] == [10, 50]
    assert all(e.actor == "controller" for e in steps)


def test_a_failing_candidate_is_rolled_back_and_stable_keeps_serving(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
) -> None:
    dep = deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    passes(controller, at(10), at(11))
    assert weights(registry, "text2img") == {"1.0": 90, "2.0": 10}
    deployer.fail_versions["2.0"] = "model server exited with code 1"
    passes(controller, at(20))
    current = view(registry, dep)
    assert current.status == "RolledBack"
    assert current.traffic_weight == 0
    assert weights(registry, "text2img") == {"1.0": 100}
    assert deployer.running() == {"1.0": 1}
    assert view(registry, live_v1).status == "Active"
    rolled = [e for e in registry.deployments.events(dep) if e.kind == "rolled_back"]
    assert "exited with code 1" in (rolled[0].reason or "")
    assert lifecycle(registry, "text2img") == {"1.0": "Production", "2.0": "Staged"}


def test_a_rollback_drains_between_the_routes_and_stopping_the_candidate(
    registry: Registry, actor: Principal, deployer: FakeDeployer, live_v1: uuid.UUID
) -> None:
    """With the API in other processes, which see route changes only at their next poll, the
    candidate's server must outlive the routes that named it by ``drain``: during the wait the
    routes are already back on stable and the candidate still runs. A pass that stops nothing
    does not wait."""
    controller = make_controller(registry, deployer, holder="test-1", drain=timedelta(seconds=0.5))
    seen: list[tuple[float, dict[str, int], dict[str, int]]] = []
    controller.sleep = lambda s: seen.append((s, weights(registry, "text2img"), deployer.running()))
    deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    passes(controller, at(10), at(11))
    assert weights(registry, "text2img") == {"1.0": 90, "2.0": 10}
    assert seen == []
    deployer.fail_versions["2.0"] = "model server exited with code 1"
    passes(controller, at(20))
    assert seen == [(0.5, {"1.0": 100}, {"1.0": 1, "2.0": 1})]
    assert deployer.running() == {"1.0": 1}


def test_abort_promote_pause_resume_requests(
    registry: Registry, actor: Principal, controller: Controller, live_v1: uuid.UUID
) -> None:
    dep = deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    passes(controller, at(10), at(11))
    registry.deployments.request(actor, dep, "pause", reason="looking at dashboards")
    passes(controller, at(200))
    assert weights(registry, "text2img") == {"1.0": 90, "2.0": 10}, "paused: no step"
    registry.deployments.request(actor, dep, "resume")
    passes(controller, at(201))
    assert weights(registry, "text2img") == {"1.0": 50, "2.0": 50}
    registry.deployments.request(actor, dep, "abort", reason="bad outputs")
    assert view(registry, dep).status == "Deploying", "the API only records the request"
    passes(controller, at(202))
    assert view(registry, dep).status == "RolledBack"
    assert weights(registry, "text2img") == {"1.0": 100}
    ledger = registry.deployments.events(dep)
    aborted = next(e for e in ledger if e.kind == "aborted")
    assert aborted.actor.startswith("key:")
    assert [e.kind for e in ledger if e.kind.endswith(("requested", "paused", "resumed"))] == [
        "paused",
        "resumed",
        "abort_requested",
    ]
    second = deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    passes(controller, at(300), at(301))
    registry.deployments.request(actor, second, "promote")
    passes(controller, at(302))
    assert view(registry, second).status == "Active"
    assert weights(registry, "text2img") == {"2.0": 100}


def test_rollback_is_instant_while_the_old_servers_are_up(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
) -> None:
    dep = deploy(registry, actor, "text2img", "2.0", steps=[{"weight": 100}])
    passes(controller, at(10), at(11))
    assert weights(registry, "text2img") == {"2.0": 100}
    back = registry.deployments.rollback(actor, "text2img", "production", reason="regression")
    assert back.id == live_v1
    assert weights(registry, "text2img") == {"1.0": 100}, "switched in the request itself"
    assert view(registry, live_v1).status == "Active"
    assert view(registry, dep).status == "Inactive"
    assert lifecycle(registry, "text2img") == {"1.0": "Production", "2.0": "Deprecated"}
    passes(controller, at(12))
    assert weights(registry, "text2img") == {"1.0": 100}
    assert deployer.running() == {"1.0": 1, "2.0": 1}


def test_rollback_after_scale_down_rolls_the_old_version_out_again(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
) -> None:
    deploy(registry, actor, "text2img", "2.0", steps=[{"weight": 100}], scaleDownDelay="10s")
    passes(controller, at(10), at(11), at(30), at(31))
    assert deployer.running() == {"2.0": 1}
    again = registry.deployments.rollback(actor, "text2img", "production")
    assert again.id != live_v1
    assert weights(registry, "text2img") == {"2.0": 100}
    passes(controller, at(40), at(41), at(42))
    assert view(registry, again.id).status == "Active"
    assert weights(registry, "text2img") == {"1.0": 100}


def test_a_new_controller_resumes_at_the_same_step(
    registry: Registry, actor: Principal, deployer: FakeDeployer
) -> None:
    first = make_controller(registry, deployer, holder="crashed", lease_ttl=timedelta(seconds=3))
    add_version(registry, actor, "text2img", "1.0")
    add_version(registry, actor, "text2img", "2.0")
    deploy(registry, actor, "text2img", "1.0")
    passes(first, at(0), at(1))
    dep = deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    passes(first, at(10), at(11))
    started = view(registry, dep).step_started_at
    assert started == at(11)
    second = make_controller(registry, deployer, holder="restarted")
    assert not second.run_pass(now=at(80)).leader, "the crashed one's lease has not expired"
    time.sleep(3.2)  # the crashed controller never renews: its lease runs out
    applied_before = len(deployer.workloads)
    passes(second, at(50))
    assert view(registry, dep).step_index == 0, "the pause counts from the stored step start"
    assert view(registry, dep).step_started_at == started
    passes(second, at(72))
    assert weights(registry, "text2img") == {"1.0": 50, "2.0": 50}
    assert len(deployer.workloads) == applied_before, "no duplicate workloads"


@pytest.mark.parametrize("rounds", [15])
def test_two_controllers_never_both_act(
    settings: Any, registry: Registry, actor: Principal, deployer: FakeDeployer, rounds: int
) -> None:
    other_registry = build_registry(settings)
    try:
        one = make_controller(registry, deployer, holder="one")
        two = Controller(
            other_registry.deployments,
            deployers={"local": deployer},
            analysis=StepAnalysis(scrape=SteadyTraffic()),
            holder="two",
        )
        add_version(registry, actor, "text2img", "1.0")
        add_version(registry, actor, "text2img", "2.0")
        deploy(registry, actor, "text2img", "1.0")
        passes(one, at(-2), at(-1))
        one.release()
        dep = deploy(registry, actor, "text2img", "2.0", steps=[{"weight": 50}, {"weight": 100}])
        leaders: list[tuple[str, bool]] = []
        barrier = threading.Barrier(2)

        def run(ctl: Controller) -> None:
            for i in range(rounds):
                barrier.wait()
                leaders.append((ctl.holder, ctl.run_pass(now=at(i * 61)).leader))

        threads = [threading.Thread(target=run, args=(c,)) for c in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        acting = {holder for holder, leader in leaders if leader}
        assert len(acting) == 1, leaders
        assert sum(leader for _, leader in leaders) == rounds
        with registry.sessions() as s:
            steps = s.scalars(
                select(DeploymentEvent.details).where(
                    DeploymentEvent.deployment_id == dep, DeploymentEvent.kind == "step"
                )
            ).all()
        assert [d["weight"] for d in steps if d] == [50], "each step happened exactly once"
        assert view(registry, dep).status == "Active"
    finally:
        other_registry.close()


class FlakyDeployer(FakeDeployer):
    """Observing one model fails; the others are fine."""

    broken_model: str = ""

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        if target.model == self.broken_model:
            raise TemporaryError("connection refused")
        return super().observe(target)


def test_a_temporary_error_backs_off_and_does_not_stop_the_others(
    registry: Registry, actor: Principal
) -> None:
    deployer = FlakyDeployer()
    deployer.broken_model = "broken"
    controller = make_controller(registry, deployer, holder="t")
    add_version(registry, actor, "broken", "1.0")
    add_version(registry, actor, "fine", "1.0")
    bad = deploy(registry, actor, "broken", "1.0")
    good = deploy(registry, actor, "fine", "1.0")
    result = controller.run_pass(now=at(0))
    assert result.errors == 1
    assert "connection refused" in result.failures[str(bad)]
    controller.run_pass(now=at(1))
    assert view(registry, good).status == "Active"
    broken = view(registry, bad)
    assert broken.status == "Initiated"
    assert broken.retry_count == 1
    error = next(c for c in broken.conditions if c["type"] == "ReconcileError")
    assert error["status"] == "True"
    assert "connection refused" in error["message"]
    deployer.broken_model = ""
    passes(controller, at(10), at(11))
    healed = view(registry, bad)
    assert healed.status == "Active"
    assert healed.retry_count == 0


def test_a_permanent_error_fails_the_rollout_with_its_reason(
    registry: Registry, actor: Principal, deployer: FakeDeployer, controller: Controller
) -> None:
    add_version(registry, actor, "text2img", "1.0")
    dep = deploy(registry, actor, "text2img", "1.0")
    deployer.raise_on_apply = PermanentError("403 Forbidden: the service account cannot create")
    controller.run_pass(now=at(0))
    failed = view(registry, dep)
    assert failed.status == "Failed"
    assert "403 Forbidden" in (failed.conditions and str(failed.conditions))
    assert "failed" in kinds(registry, dep)


def test_undeploy_takes_it_out_of_service(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
) -> None:
    registry.deployments.request(actor, live_v1, "undeploy")
    passes(controller, at(10), at(11))
    assert view(registry, live_v1).status == "Inactive"
    assert weights(registry, "text2img") == {}
    assert deployer.running() == {}
    assert view(registry, live_v1).finished_at is not None


def test_blue_green_previews_then_switches_at_once(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    live_v1: uuid.UUID,
) -> None:
    dep = deploy(registry, actor, "text2img", "2.0", strategy="blue_green", previewDuration="30s")
    passes(controller, at(10), at(11))
    with registry.sessions() as s:
        model_id = registry.models.get("text2img").id
        routes = current_routes(s, model_id=model_id, environment="production")
    assert {(r.version_number, r.weight, r.role) for r in routes} == {
        ("1.0", 100, "stable"),
        ("2.0", 0, "preview"),
    }
    passes(controller, at(30))
    assert weights(registry, "text2img") == {"1.0": 100, "2.0": 0}
    passes(controller, at(42))
    assert weights(registry, "text2img") == {"2.0": 100}
    assert view(registry, dep).status == "Active"
    traffic = [e for e in registry.deployments.events(dep) if e.kind == "traffic"]
    assert [[(r["versionNumber"], r["weight"]) for r in e.details["routes"]] for e in traffic][
        -1
    ] == [("2.0", 100)], "one write switches all traffic"


def test_rolling_update_replaces_replicas_one_by_one(
    registry: Registry, actor: Principal, controller: Controller, deployer: FakeDeployer
) -> None:
    add_version(registry, actor, "text2img", "1.0")
    add_version(registry, actor, "text2img", "2.0")
    deploy(registry, actor, "text2img", "1.0", replicas=2)
    passes(controller, at(0), at(1))
    assert deployer.running() == {"1.0": 2}
    dep = deploy(registry, actor, "text2img", "2.0", strategy="rolling_update", replicas=2)
    passes(controller, at(10))
    assert deployer.running() == {"1.0": 2, "2.0": 1}
    passes(controller, at(11))
    assert weights(registry, "text2img") == {"1.0": 50, "2.0": 50}
    assert deployer.running() == {"1.0": 1, "2.0": 1}
    passes(controller, at(12), at(13), at(14))
    assert view(registry, dep).status == "Active"
    assert weights(registry, "text2img") == {"2.0": 100}
    passes(controller, at(15), at(16))
    assert deployer.running() == {"2.0": 2}


def test_history_answers_what_served_at_a_time(
    registry: Registry, actor: Principal, controller: Controller, live_v1: uuid.UUID
) -> None:
    deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    passes(controller, at(10), at(11))
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    passes(controller, at(72))
    _, serving = registry.deployments.history("text2img", "production", at=middle)
    assert serving is not None
    assert {r["versionNumber"]: r["weight"] for r in serving} == {"1.0": 90, "2.0": 10}
    _, now_serving = registry.deployments.history("text2img", "production", at=datetime.now(UTC))
    assert now_serving is not None
    assert {r["versionNumber"]: r["weight"] for r in now_serving} == {"1.0": 50, "2.0": 50}


def test_api_format_versions_roll_out_like_any_other(
    registry: Registry, actor: Principal, settings: Any
) -> None:
    """A version of format API runs no process: the real local deployer registers its URL."""
    from deployers.local import LocalDeployer, child_env

    assert settings.server_state_dir is not None
    local = LocalDeployer(state_dir=settings.server_state_dir, env=child_env(settings))
    controller = Controller(
        registry.deployments,
        deployers={"local": local},
        analysis=StepAnalysis(scrape=SteadyTraffic()),
        holder="api-format",
    )
    registry.models.create(actor, name="vendor", provider="Vendor", task_type="TextGeneration")
    for number, url in (("1", "https://v1.example.com"), ("2", "https://v2.example.com")):
        registry.versions.create(
            actor, "vendor", version_number=number, fmt="API", parameters={"endpoint": url}
        )
    deploy(registry, actor, "vendor", "1")
    passes(controller, at(0), at(1))
    with registry.sessions() as s:
        model_id = registry.models.get("vendor").id
        assert [r.url for r in current_routes(s, model_id=model_id, environment="production")] == [
            "https://v1.example.com"
        ]
    dep = deploy(registry, actor, "vendor", "2", steps=[{"weight": 25, "pause": "10s"}])
    passes(controller, at(10), at(11))
    assert weights(registry, "vendor") == {"1": 75, "2": 25}
    passes(controller, at(22))
    assert view(registry, dep).status == "Active"
    assert weights(registry, "vendor") == {"2": 100}
    assert not list(settings.server_state_dir.glob("instances/*.json")), "no process ran"


# -- the orphan sweep ----------------------------------------------------------------------------


def run_elsewhere(
    deployer: FakeDeployer,
    deployment_id: uuid.UUID,
    *,
    model: str = "ghost",
    model_id: uuid.UUID | None = None,
) -> Target:
    """Give ``deployer`` a workload for ``deployment_id``, as a controller that has since died
    (or lost its lease in the middle of a pass) would have left it."""
    target = Target("local", model, model_id or uuid.uuid4(), "production")
    version = VersionRef(
        id=uuid.uuid4(), number="0.9", format="ONNX", sha256="0" * 64, artifact_key="k"
    )
    deployer.apply(target, [Workload(deployment_id, version, 1)])
    return target


def sweeping(registry: Registry, deployer: FakeDeployer, **kwargs: Any) -> Controller:
    return make_controller(registry, deployer, holder="test-1", sweep_every=timedelta(0), **kwargs)


def test_a_workload_no_row_owns_is_stopped_and_those_of_live_rows_are_kept(
    registry: Registry,
    actor: Principal,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(orphans, "SWEEP_BATCH", 2)  # the rows are read in batches
    ghost = uuid.uuid4()
    run_elsewhere(deployer, ghost)
    dep = deploy(registry, actor, "text2img", "2.0", steps=STEPS)
    controller = sweeping(registry, deployer)
    caplog.set_level(logging.INFO, logger="modelreg.controller")
    passes(controller, at(10), at(11))
    assert ghost not in deployer.workloads
    assert deployer.removed == [ghost]
    assert set(deployer.workloads) == {live_v1, dep}, "the Active one and the canary serve on"
    assert weights(registry, "text2img") == {"1.0": 90, "2.0": 10}
    lines = [r.getMessage() for r in caplog.records if "orphan" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"ghost 0.9 in production (deployment {ghost})" in lines[0]
    assert "no deployment row has its id" in lines[0]
    passes(controller, at(12))
    assert deployer.removed == [ghost], "nothing else is ever swept"


def test_a_deleted_row_and_a_finished_retired_row_own_nothing(
    registry: Registry,
    actor: Principal,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
) -> None:
    controller = sweeping(registry, deployer)
    registry.deployments.request(actor, live_v1, "undeploy")
    passes(controller, at(10), at(11))
    assert view(registry, live_v1).finished_at is not None
    assert deployer.workloads == {}
    # A controller that lost its lease mid-pass applies late for the finished row; and the
    # row of another deployment is deleted under the controller (a crash, a bad migration).
    run_elsewhere(deployer, live_v1, model="text2img")
    again = deploy(registry, actor, "text2img", "2.0")
    passes(controller, at(20), at(21))
    assert view(registry, again).status == "Active"
    with registry.sessions.begin() as s:
        s.execute(delete(AIModelDeployment).where(AIModelDeployment.id == again))
    assert set(deployer.workloads) == {again}, "the late workload is gone already"
    assert live_v1 in deployer.removed
    passes(controller, at(30))
    assert deployer.workloads == {}
    assert deployer.removed == [live_v1, again]


def test_the_sweep_keeps_a_deployment_created_after_the_worklist_was_read(
    registry: Registry,
    actor: Principal,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controller = sweeping(registry, deployer)
    worklist = registry.deployments.ledger.worklist
    late: list[uuid.UUID] = []

    def worklist_then_a_new_deployment(now: datetime) -> list[DeploymentView]:
        read = worklist(now)
        if not late:
            # Right after this pass read its worklist, a new deployment is created and its
            # workload started (by the controller that held the lease a moment ago).
            add_version(registry, actor, "other", "1.0")
            dep = deploy(registry, actor, "other", "1.0")
            late.append(dep)
            run_elsewhere(deployer, dep, model="other", model_id=registry.models.get("other").id)
        return read

    monkeypatch.setattr(registry.deployments.ledger, "worklist", worklist_then_a_new_deployment)
    result = controller.run_pass(now=at(10))
    assert result.leader
    assert result.deployments == 1, "the pass planned only what it read"
    assert late
    assert set(deployer.workloads) == {live_v1, late[0]}
    assert deployer.removed == []


def test_only_the_lease_holder_sweeps_and_at_most_every_sweep_interval(
    registry: Registry, actor: Principal, deployer: FakeDeployer, live_v1: uuid.UUID
) -> None:
    standby = FakeDeployer()
    ghost = uuid.uuid4()
    run_elsewhere(standby, ghost)
    other = make_controller(registry, standby, holder="standby")
    assert not other.run_pass(now=at(10)).leader
    assert ghost in standby.workloads, "a controller without the lease stops nothing"

    controller = make_controller(registry, deployer, holder="test-1")
    passes(controller, at(10))
    first, second = uuid.uuid4(), uuid.uuid4()
    run_elsewhere(deployer, first)
    passes(controller, at(11), at(39))
    assert first in deployer.workloads, "swept at 10s; the next sweep is due at 40s"
    passes(controller, at(40))
    assert first not in deployer.workloads
    run_elsewhere(deployer, second)
    passes(controller, at(41))
    assert second in deployer.workloads
    passes(controller, at(70))
    assert deployer.removed == [first, second]
    assert set(deployer.workloads) == {live_v1}


def test_a_kubernetes_orphan_is_deleted_and_a_live_rows_workload_kept(
    settings: Settings, actor: Principal
) -> None:
    kube_registry = build_registry(settings.model_copy(update={"kube_enabled": True}))
    cluster = FakeKubeApi()
    kube = KubernetesDeployer(cluster, settings=make_kube_settings())
    controller = Controller(
        kube_registry.deployments,
        deployers={"local": FakeDeployer(), "kubernetes": kube},
        analysis=StepAnalysis(scrape=SteadyTraffic()),
        holder="test-1",
        sweep_every=timedelta(0),
    )
    try:
        add_version(kube_registry, actor, "text2img", "1.0")
        live = kube_registry.deployments.create(
            actor,
            model_name="text2img",
            version_number="1.0",
            environment="production",
            strategy="canary",
            target="kubernetes",
        ).id
        passes(controller, *(at(i) for i in range(5)))
        assert view(kube_registry, live).status == "Active"
        ghost = uuid.uuid4()
        elsewhere = Target("kubernetes", "ghost", uuid.uuid4(), "staging")
        version = VersionRef(uuid.uuid4(), "0.9", "ONNX", sha256="ab" * 32, artifact_key="k")
        kube.apply(elsewhere, [Workload(ghost, version, 1)])
        before = {key for key in cluster.objects if key[0] in ("Deployment", "Service")}
        assert len(before) == 4
        passes(controller, at(10))
        after = {key for key in cluster.objects if key[0] in ("Deployment", "Service")}
        assert {w.deployment_id for w in kube.owned()} == {live}
        assert len(after) == 2
        assert after < before
        assert view(kube_registry, live).status == "Active"
        deleted = [c for c in cluster.calls if c[0] == "delete"]
        assert sorted(c[1] for c in deleted) == ["Deployment", "Service"]
        assert all("ghost-staging" in c[3] for c in deleted)
    finally:
        kube_registry.close()


def test_real_servers_whose_row_was_deleted_are_stopped_by_a_pass(
    registry: Registry, actor: Principal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "servers"
    local = LocalDeployer(state_dir=state_dir, env=child_env(registry.settings))
    controller = Controller(
        registry.deployments,
        deployers={"local": local},
        analysis=StepAnalysis(scrape=SteadyTraffic()),
        holder="test-1",
        sweep_every=timedelta(0),
    )
    registry.models.create(actor, name="text2img", provider="Internal", task_type="ImageGeneration")
    registry.versions.create(actor, "text2img", version_number="1.0")
    registry.versions.upload(actor, "text2img", "1.0", [add_model(constant=1.0)])
    pass_validation(registry)
    dep = deploy(registry, actor, "text2img", "1.0", replicas=2)
    pids: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 60
        while view(registry, dep).status != "Active":
            assert time.monotonic() < deadline, view(registry, dep)
            passes(controller, utcnow())
            time.sleep(0.1)
        for record in (json.loads(p.read_text()) for p in state_dir.glob("instances/*.json")):
            pids[record["pid"]] = record["proc_start"]
        assert len(pids) == 2
        # The row goes, as a crash or a bad migration would take it; nothing else is told.
        with registry.sessions.begin() as s:
            s.execute(delete(AIModelDeployment).where(AIModelDeployment.id == dep))
        caplog.set_level(logging.INFO)
        passes(controller, utcnow())
        for pid, started in pids.items():
            assert process_start(pid) != started, f"model server pid {pid} still runs"
        assert list(state_dir.glob("instances/*.json")) == []
        assert list(state_dir.glob("workloads/*.json")) == []
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 1, lines
        listed = ", ".join(map(str, sorted(pids)))
        assert lines[0] == (
            f"stopped orphaned workload text2img 1.0 in production (deployment {dep}): "
            f"2 model-server processes (pids {listed}), because no deployment row has its id "
            "(the row is gone)"
        )
    finally:
        for pid, started in pids.items():
            kill_if_recorded(pid, started)


MODEL_ID = uuid.UUID(int=1)


def a_row(**changes: Any) -> DeploymentView:
    row = DeploymentView(
        id=uuid.UUID(int=2),
        model_id=MODEL_ID,
        model_name="text2img",
        environment="production",
        target="local",
        status="Active",
        strategy="canary",
        params={},
        spec_hash=None,
        version=VersionInfo(uuid.uuid4(), "1.0", "ONNX", "Production", "ab" * 32, "k", None),
        step_index=0,
        step_started_at=None,
        traffic_weight=100,
        hold_since=None,
        paused=False,
        requested_action=None,
        conditions=[],
        endpoint=None,
        stable_deployment_id=None,
        retry_count=0,
        scale_down_at=None,
        finished_at=None,
        created_at=T0,
    )
    return dataclasses.replace(row, **changes)


@pytest.mark.parametrize(
    ("row", "why"),
    [
        pytest.param(a_row(), None, id="active-owns-it"),
        pytest.param(a_row(status="Deploying", traffic_weight=10), None, id="rollout-owns-it"),
        pytest.param(
            a_row(status="Inactive", scale_down_at=at(300)), None, id="inactive-keeps-servers"
        ),
        pytest.param(a_row(status="Failed"), None, id="failed-not-yet-stopped-owns-it"),
        pytest.param(None, "the row is gone", id="no-row"),
        pytest.param(
            a_row(status="Inactive", finished_at=at(5)),
            f"its deployment is Inactive and finished at {at(5).isoformat()}",
            id="inactive-and-finished",
        ),
        pytest.param(
            a_row(status="RolledBack", finished_at=at(5)),
            "RolledBack and finished",
            id="rolled-back",
        ),
        pytest.param(
            a_row(target="kubernetes"),
            "runs on target 'kubernetes', not 'local'",
            id="other-target",
        ),
        pytest.param(a_row(environment="staging"), None, id="its-id-is-enough"),
    ],
)
def test_which_workloads_a_row_owns(row: DeploymentView | None, why: str | None) -> None:
    answer = orphaned_because(row, kind="local")
    if why is None:
        assert answer is None
    else:
        assert answer is not None
        assert why in answer


def test_an_undeploy_that_cannot_be_recorded_stops_nothing(
    registry: Registry,
    actor: Principal,
    controller: Controller,
    deployer: FakeDeployer,
    live_v1: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry.deployments.request(actor, live_v1, "undeploy")
    other = make_controller(registry, deployer, holder="other")
    worklist = registry.deployments.ledger.worklist

    def worklist_then_lose_the_lease(now: datetime) -> list[DeploymentView]:
        read = worklist(now)
        with registry.sessions.begin() as s:
            lease = s.get(ControllerLease, registry.deployments.leases.name)
            assert lease is not None
            lease.expires_at = utcnow() - timedelta(seconds=1)
        assert registry.deployments.leases.acquire("other", ttl=timedelta(seconds=60))
        return read

    # Not monkeypatch.undo(): that would also undo the conftest's T0 (near now).
    with monkeypatch.context() as patched:
        patched.setattr(registry.deployments.ledger, "worklist", worklist_then_lose_the_lease)
        controller.run_pass(now=at(10))
        assert view(registry, live_v1).status == "Active", "nothing was recorded"
        assert live_v1 in deployer.workloads, "so the servers the routes name keep serving"
        assert weights(registry, "text2img") == {"1.0": 100}
    passes(other, at(11), at(12))
    assert view(registry, live_v1).status == "Inactive"
    assert weights(registry, "text2img") == {}
    assert deployer.workloads == {}


def test_the_scheduler_keeps_its_routine_lines_out_of_the_log(
    controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    from controller.runner import ControllerRunner

    caplog.set_level(logging.INFO)
    runner = ControllerRunner(controller, interval=0.05)
    runner.start()
    try:
        time.sleep(0.3)
    finally:
        runner.stop()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")] == []
    assert any("controller test-1 started" in r.getMessage() for r in caplog.records)


def test_a_pass_turns_the_cyclic_collector_back_on_even_when_it_fails(
    registry: Registry, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    seen: list[bool] = []
    worklist = registry.deployments.ledger.worklist

    def watched(now: datetime) -> list[DeploymentView]:
        seen.append(gc.isenabled())
        return worklist(now)

    monkeypatch.setattr(registry.deployments.ledger, "worklist", watched)
    controller.run_pass(now=at(0))
    assert seen == [False], "off during the pass"
    assert gc.isenabled()

    def broken(now: datetime) -> list[DeploymentView]:
        raise RuntimeError("boom")

    monkeypatch.setattr(registry.deployments.ledger, "worklist", broken)
    with pytest.raises(RuntimeError):
        controller.run_pass(now=at(1))
    assert gc.isenabled(), "on again after a pass that raised"
