"""What every deployer promises, as a test base class.

A subclass provides two fixtures, ``deployer`` (a fresh deployer) and ``versions`` (two
:class:`VersionRef` that can really run), and may set ``target_kind``. The tests use nothing
but the :class:`Deployer` protocol (``observe``, ``apply``, ``owned``, ``remove``), so a
local, a simulated or a real Kubernetes deployer can all run them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from deployers.base import Deployer, Target, VersionRef, Workload, WorkloadStatus

POLL_SECONDS = 0.05
READY_TIMEOUT = 60.0


def wait_for(
    deployer: Deployer,
    target: Target,
    deployment_id: uuid.UUID,
    *,
    timeout: float,
    until: Callable[[WorkloadStatus | None], bool],
    what: str,
) -> WorkloadStatus | None:
    """Observe ``target`` until ``until(status)`` holds (``status`` is ``None`` while the
    workload is absent); the last status seen."""
    deadline = time.monotonic() + timeout
    while True:
        status = deployer.observe(target).get(deployment_id)
        if until(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {deployment_id} is not {what}: {status}")
        time.sleep(POLL_SECONDS)


def wait_ready(
    deployer: Deployer, target: Target, deployment_id: uuid.UUID, timeout: float = READY_TIMEOUT
) -> WorkloadStatus:
    """The status of the workload once it is ready; fails at once if it reports a failure."""

    def ready(status: WorkloadStatus | None) -> bool:
        if status is not None and status.failure is not None:
            raise AssertionError(f"deployment {deployment_id} failed: {status.failure}")
        return status is not None and status.ready

    status = wait_for(deployer, target, deployment_id, timeout=timeout, until=ready, what="ready")
    assert status is not None
    return status


def instance_keys(status: WorkloadStatus) -> list[tuple[str | None, str, int | None]]:
    """What identifies the instances of a workload, whether they are ready or not."""
    return sorted((i.name, i.url, i.pid) for i in status.instances)


class DeployerContract:
    target_kind = "local"

    @pytest.fixture
    def target(self) -> Target:
        return Target(kind=self.target_kind, model="m", model_id=uuid.uuid4(), environment="test")

    @pytest.fixture(autouse=True)
    def _scale_down_at_teardown(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> Iterator[None]:
        yield
        left = deployer.observe(target)
        by_id = {v.id: v for v in versions}  # any version does to scale down
        deployer.apply(
            target,
            [
                Workload(s.deployment_id, by_id.get(s.version_id, versions[0]), 0)
                for s in left.values()
            ],
        )
        assert deployer.observe(target) == {}

    def test_apply_then_observe_becomes_ready_with_a_url(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        deployment = uuid.uuid4()
        deployer.apply(target, [Workload(deployment, versions[0], 1)])
        status = wait_ready(deployer, target, deployment)
        assert status.version_id == versions[0].id
        assert status.replicas == 1
        assert status.ready_replicas == 1
        assert status.failure is None
        assert status.url is not None
        assert status.url.startswith("http")
        assert status.restarts == 0

    def test_applying_twice_changes_nothing(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        deployment = uuid.uuid4()
        workload = Workload(deployment, versions[0], 2)
        deployer.apply(target, [workload])
        deployer.apply(target, [workload])
        first = wait_ready(deployer, target, deployment)
        assert len(first.instances) == 2
        deployer.apply(target, [workload])
        again = deployer.observe(target)[deployment]
        assert instance_keys(again) == instance_keys(first)
        assert again.ready
        assert again.restarts == 0

    def test_scaling_to_zero_removes_the_workload(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        deployment = uuid.uuid4()
        deployer.apply(target, [Workload(deployment, versions[0], 1)])
        wait_ready(deployer, target, deployment)
        deployer.apply(target, [Workload(deployment, versions[0], 0)])
        wait_for(
            deployer,
            target,
            deployment,
            timeout=READY_TIMEOUT,
            until=lambda status: status is None,
            what="gone",
        )
        # Scaling an absent workload to zero is harmless.
        deployer.apply(target, [Workload(deployment, versions[0], 0)])
        assert deployment not in deployer.observe(target)

    def test_apply_touches_only_the_given_workloads(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        stable, canary = uuid.uuid4(), uuid.uuid4()
        deployer.apply(
            target, [Workload(stable, versions[0], 1), Workload(canary, versions[1], 1, "canary")]
        )
        kept = wait_ready(deployer, target, stable)
        wait_ready(deployer, target, canary)
        deployer.apply(target, [Workload(canary, versions[1], 0, "canary")])
        wait_for(
            deployer,
            target,
            canary,
            timeout=READY_TIMEOUT,
            until=lambda status: status is None,
            what="gone",
        )
        observed = deployer.observe(target)
        assert set(observed) == {stable}
        assert observed[stable].ready
        assert observed[stable].version_id == versions[0].id
        assert instance_keys(observed[stable]) == instance_keys(kept)

    def test_a_new_version_replaces_the_old_one(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        deployment = uuid.uuid4()
        deployer.apply(target, [Workload(deployment, versions[0], 1)])
        old = wait_ready(deployer, target, deployment)
        deployer.apply(target, [Workload(deployment, versions[1], 1)])
        new = wait_for(
            deployer,
            target,
            deployment,
            timeout=READY_TIMEOUT,
            until=lambda s: s is not None and s.version_id == versions[1].id and s.ready,
            what=f"ready with version {versions[1].number}",
        )
        assert new is not None
        assert new.replicas == 1
        assert len(new.instances) == 1
        assert instance_keys(new) != instance_keys(old)

    def test_observing_an_unknown_target_finds_nothing(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        deployment = uuid.uuid4()
        deployer.apply(target, [Workload(deployment, versions[0], 1)])
        other_model = Target(target.kind, target.model, uuid.uuid4(), target.environment)
        other_environment = Target(target.kind, target.model, target.model_id, "elsewhere")
        assert deployer.observe(other_model) == {}
        assert deployer.observe(other_environment) == {}
        assert set(deployer.observe(target)) == {deployment}

    def test_owned_lists_every_target_and_remove_stops_only_that_workload(
        self, deployer: Deployer, target: Target, versions: Sequence[VersionRef]
    ) -> None:
        mine, theirs = uuid.uuid4(), uuid.uuid4()
        elsewhere = Target(target.kind, "other", uuid.uuid4(), "staging")
        deployer.apply(target, [Workload(mine, versions[0], 1)])
        deployer.apply(elsewhere, [Workload(theirs, versions[1], 1)])
        kept = wait_ready(deployer, target, mine)
        wait_ready(deployer, elsewhere, theirs)
        owned = {w.deployment_id: w for w in deployer.owned()}
        assert set(owned) == {mine, theirs}
        assert owned[theirs].target.kind == target.kind
        assert owned[theirs].target.model_id == elsewhere.model_id
        assert owned[theirs].target.environment == "staging"
        assert owned[theirs].version_number == versions[1].number
        assert str(theirs) in owned[theirs].describe()
        deployer.remove(owned[theirs])
        assert deployer.observe(elsewhere) == {}
        assert [w.deployment_id for w in deployer.owned()] == [mine]
        deployer.remove(owned[theirs])  # removing what is gone is harmless
        still = deployer.observe(target)[mine]
        assert still.ready
        assert instance_keys(still) == instance_keys(kept)
