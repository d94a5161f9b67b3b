"""The local deployer, with real ``modelreg serve-model`` processes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import ssl
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployers.base import (
    PermanentError,
    Target,
    TemporaryError,
    VersionRef,
    Workload,
    WorkloadStatus,
)
from deployers.local import LocalDeployer, child_env
from registry.settings import Settings
from registry.storage import HashingReader
from registry.storage.local import LocalStore
from tests.support.deployer_contract import (
    POLL_SECONDS,
    READY_TIMEOUT,
    DeployerContract,
    instance_keys,
    wait_for,
    wait_ready,
)
from tests.support.onnx_models import add_model
from tests.support.processes import kill_if_recorded, process_start
from tests.support.s3server import SeaweedS3

pytest_plugins = ["tests.support.s3server"]

X = [0.0, 1.0, 2.0, 3.0]


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", storage="local", credentials_file=tmp_path / "credentials"
    )


@pytest.fixture
def artifacts(local_settings: Settings) -> LocalStore:
    return LocalStore(local_settings.artifact_root)


@pytest.fixture
def store_version(artifacts: LocalStore) -> Callable[..., VersionRef]:
    """Stores ``data`` and returns a version of it (with ``sha256`` instead of the real one
    when given)."""

    def store(data: bytes, *, number: str, sha256: str | None = None) -> VersionRef:
        version_id = uuid.uuid4()
        key = f"models/m/versions/{version_id}/model.onnx"
        stored = artifacts.put(key, HashingReader([data], max_bytes=1 << 20))
        return VersionRef(
            id=version_id,
            number=number,
            format="ONNX",
            sha256=sha256 or stored.sha256,
            artifact_key=key,
        )

    return store


@pytest.fixture
def versions(store_version: Callable[..., VersionRef]) -> list[VersionRef]:
    """1.0 adds one, 2.0 adds two."""
    return [
        store_version(add_model(constant=1.0), number="1.0"),
        store_version(add_model(constant=2.0), number="2.0"),
    ]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_deployer(
    state_dir: Path, local_settings: Settings
) -> Iterator[Callable[..., LocalDeployer]]:
    """New LocalDeployers on one state folder; every server still recorded there is killed at
    teardown, whatever the test did."""

    def make(*, max_restarts: int = 3) -> LocalDeployer:
        return LocalDeployer(
            state_dir=state_dir, env=child_env(local_settings), max_restarts=max_restarts
        )

    yield make
    for path in (state_dir / "instances").glob("*.json"):
        record = json.loads(path.read_text())
        kill_if_recorded(record["pid"], record["proc_start"])


@pytest.fixture
def deployer(make_deployer: Callable[..., LocalDeployer]) -> LocalDeployer:
    return make_deployer()


def instance_records(state_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((state_dir / "instances").glob("*.json"))]


def infer(url: str, model: str = "m") -> list[float]:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X}]}
    with httpx.Client(timeout=10, trust_env=False) as client:
        answer = client.post(f"{url}/v2/models/{model}/infer", json=body)
    assert answer.status_code == 200, answer.text
    data: list[float] = answer.json()["outputs"][0]["data"]
    return data


def apply_until_failed(
    deployer: LocalDeployer, target: Target, workload: Workload
) -> WorkloadStatus:
    """Apply ``workload`` again and again, as the controller would, until it reports a
    failure."""
    deadline = time.monotonic() + 3 * READY_TIMEOUT
    while time.monotonic() < deadline:
        deployer.apply(target, [workload])
        status = deployer.observe(target)[workload.deployment_id]
        if status.failure is not None:
            return status
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"no failure reported: {status}")


class TestLocalDeployer(DeployerContract):
    target_kind = "local"

    def test_the_observed_url_serves_inference(
        self, deployer: LocalDeployer, target: Target, versions: list[VersionRef]
    ) -> None:
        one, two = uuid.uuid4(), uuid.uuid4()
        deployer.apply(target, [Workload(one, versions[0], 1), Workload(two, versions[1], 1)])
        first = wait_ready(deployer, target, one)
        second = wait_ready(deployer, target, two)
        assert first.url is not None
        assert second.url is not None
        assert infer(first.url) == [v + 1 for v in X]
        for instance in (*first.instances, *second.instances):
            assert instance.pid is not None
            assert os.getsid(instance.pid) == instance.pid  # its own session: outlives us
        assert infer(second.url) == [v + 2 for v in X]
        with httpx.Client(timeout=10, trust_env=False) as client:
            assert client.get(f"{first.url}/v2/models/m/versions/1.0").status_code == 200

    def test_a_restarted_controller_adopts_running_servers(
        self,
        make_deployer: Callable[..., LocalDeployer],
        target: Target,
        versions: list[VersionRef],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        deployment = uuid.uuid4()
        workload = Workload(deployment, versions[0], 2)
        make_deployer().apply(target, [workload])
        before = wait_ready(make_deployer(), target, deployment)
        caplog.set_level(logging.INFO, logger="modelreg.deployers.local")
        caplog.clear()
        restarted = make_deployer()
        pids = sorted(i.pid for i in before.instances if i.pid is not None)
        for pid in pids:
            assert f"pid {pid}" in caplog.text
        assert "adopted model server m 1.0" in caplog.text
        restarted.apply(target, [workload])
        after = restarted.observe(target)[deployment]
        assert after.ready
        assert instance_keys(after) == instance_keys(before)
        assert after.restarts == 0
        assert "started" not in caplog.text

    def test_a_killed_server_is_restarted(
        self, deployer: LocalDeployer, target: Target, versions: list[VersionRef]
    ) -> None:
        deployment = uuid.uuid4()
        workload = Workload(deployment, versions[0], 2)
        deployer.apply(target, [workload])
        before = wait_ready(deployer, target, deployment)
        killed, kept = (i.pid for i in before.instances)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        down = wait_for(
            deployer,
            target,
            deployment,
            timeout=READY_TIMEOUT,
            until=lambda s: s is not None and s.ready_replicas == 1,
            what="down to one ready replica",
        )
        assert down is not None
        assert down.failure is None
        deployer.apply(target, [workload])
        after = wait_ready(deployer, target, deployment)
        pids = [i.pid for i in after.instances]
        assert killed not in pids
        assert kept in pids
        assert after.restarts == 1
        assert after.ready_replicas == 2

    def test_a_wrong_digest_fails_at_once_and_is_not_restarted(
        self,
        deployer: LocalDeployer,
        target: Target,
        store_version: Callable[..., VersionRef],
    ) -> None:
        wrong = "0" * 64
        version = store_version(add_model(), number="3.0", sha256=wrong)
        deployment = uuid.uuid4()
        workload = Workload(deployment, version, 1)
        deployer.apply(target, [workload])
        failed = wait_for(
            deployer,
            target,
            deployment,
            timeout=READY_TIMEOUT,
            until=lambda s: s is not None and s.failure is not None,
            what="failed",
        )
        assert failed is not None
        assert failed.failure is not None
        assert failed.failure.startswith("model server exited with code 2:")
        assert "sha256" in failed.failure
        assert wrong in failed.failure
        assert not failed.ready
        assert failed.restarts == 0
        deployer.apply(target, [workload])
        again = deployer.observe(target)[deployment]
        assert instance_keys(again) == instance_keys(failed)
        assert again.restarts == 0
        assert again.failure == failed.failure

    def test_an_artifact_that_cannot_load_crash_loops_into_a_failure(
        self,
        make_deployer: Callable[..., LocalDeployer],
        target: Target,
        store_version: Callable[..., VersionRef],
    ) -> None:
        deployer = make_deployer(max_restarts=2)
        version = store_version(b"not an onnx model", number="4.0")
        workload = Workload(uuid.uuid4(), version, 1)
        failed = apply_until_failed(deployer, target, workload)
        assert failed.failure is not None
        assert "exited with code 1" in failed.failure
        assert "crash 3 (more than max_restarts=2)" in failed.failure
        assert "onnxruntime cannot load" in failed.failure
        assert failed.restarts == 2
        deployer.apply(target, [workload])
        again = deployer.observe(target)[workload.deployment_id]
        assert again.restarts == 2
        assert instance_keys(again) == instance_keys(failed)

    def test_a_stale_record_is_neither_adopted_nor_killed(
        self,
        make_deployer: Callable[..., LocalDeployer],
        state_dir: Path,
        target: Target,
        versions: list[VersionRef],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        deployment = uuid.uuid4()
        workload = Workload(deployment, versions[0], 2)
        make_deployer().apply(target, [workload])
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            # The servers die while the controller is down, and their pids are reused.
            for path, pid in zip(
                sorted((state_dir / "instances").glob("*.json")),
                (sleeper.pid, os.getpid()),
                strict=True,
            ):
                record = json.loads(path.read_text())
                kill_if_recorded(record["pid"], record["proc_start"])
                path.write_text(json.dumps({**record, "pid": pid}))
            caplog.set_level(logging.INFO, logger="modelreg.deployers.local")
            restarted = make_deployer()
            assert "adopted" not in caplog.text
            down = restarted.observe(target)[deployment]
            assert down.ready_replicas == 0
            assert sorted(i.pid for i in down.instances if i.pid) == sorted(
                [sleeper.pid, os.getpid()]
            )
            restarted.apply(target, [workload])
            up = wait_ready(restarted, target, deployment)
            assert not {sleeper.pid, os.getpid()} & {i.pid for i in up.instances}
            assert up.restarts == 2
            restarted.apply(target, [Workload(deployment, versions[0], 0)])
            assert sleeper.poll() is None
            assert instance_records(state_dir) == []
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_an_api_version_runs_no_process(
        self, deployer: LocalDeployer, state_dir: Path, target: Target
    ) -> None:
        endpoint = "https://models.example.com/v2/models/m"
        version = VersionRef(id=uuid.uuid4(), number="5.0", format="API", endpoint=endpoint)
        deployment = uuid.uuid4()
        deployer.apply(target, [Workload(deployment, version, 2)])
        status = deployer.observe(target)[deployment]
        assert status.ready
        assert status.url == endpoint
        assert status.replicas == status.ready_replicas == 2
        assert status.instances == ()
        assert instance_records(state_dir) == []
        deployer.apply(target, [Workload(deployment, version, 0)])
        assert deployer.observe(target) == {}

    @pytest.mark.parametrize(
        ("version", "needle"),
        [
            pytest.param(
                VersionRef(id=uuid.uuid4(), number="6.0", format="ONNX"),
                "no stored artifact",
                id="no-artifact",
            ),
            pytest.param(
                VersionRef(id=uuid.uuid4(), number="6.0", format="API"),
                "no endpoint",
                id="api-without-endpoint",
            ),
        ],
    )
    def test_a_version_that_cannot_run_is_refused(
        self,
        deployer: LocalDeployer,
        target: Target,
        versions: list[VersionRef],
        version: VersionRef,
        needle: str,
    ) -> None:
        runnable = Workload(uuid.uuid4(), versions[0], 1)
        with pytest.raises(PermanentError, match=needle):
            deployer.apply(target, [runnable, Workload(uuid.uuid4(), version, 1)])
        assert deployer.observe(target) == {}  # nothing was started

    def test_a_process_that_cannot_start_is_a_temporary_error(
        self,
        tmp_path: Path,
        target: Target,
        versions: list[VersionRef],
    ) -> None:
        broken = LocalDeployer(state_dir=tmp_path / "broken", python=str(tmp_path / "nope"))
        with pytest.raises(TemporaryError, match=r"cannot start the model server for m 1\.0"):
            broken.apply(target, [Workload(uuid.uuid4(), versions[0], 1)])

    def test_remove_stops_the_servers_and_deletes_their_records(
        self,
        make_deployer: Callable[..., LocalDeployer],
        state_dir: Path,
        target: Target,
        versions: list[VersionRef],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        deployment = uuid.uuid4()
        make_deployer().apply(target, [Workload(deployment, versions[0], 2)])
        running = wait_ready(make_deployer(), target, deployment)
        started = {i.pid: process_start(i.pid) for i in running.instances if i.pid}
        assert len(started) == 2
        # A controller died between writing the instance records and the workload record.
        (state_dir / "workloads" / f"{deployment}.json").unlink()
        restarted = make_deployer()
        [found] = restarted.owned()
        assert found.deployment_id == deployment
        assert found.target == target
        assert found.version_number == "1.0"
        pids = ", ".join(str(pid) for pid in sorted(started))
        assert found.parts == f"2 model-server processes (pids {pids})"
        caplog.set_level(logging.DEBUG, logger="modelreg.deployers.local")
        caplog.clear()
        restarted.remove(found)
        for pid, start in started.items():
            assert process_start(pid) != start, f"pid {pid} still runs"
        assert instance_records(state_dir) == []
        assert list((state_dir / "workloads").glob("*.json")) == []
        assert restarted.owned() == []
        assert restarted.observe(target) == {}
        assert json.loads(restarted.targets_path.read_text()) == []
        assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
        caplog.set_level(logging.INFO, logger="modelreg.deployers.local")
        make_deployer()
        assert "adopted" not in caplog.text


SECRETS = {
    "MODELREG_DATABASE_URL": "postgresql+psycopg://admin:hunter2@db.internal/modelreg",
    "MODELREG_TOKEN": "mr_secret_token_value",
    "MODELREG_S3_ACCESS_KEY": "AKIAEXAMPLE",
    "MODELREG_S3_SECRET_KEY": "s3-secret-value",
    "MODELREG_WEBHOOK_SECRET": "whsec_value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
}


@pytest.fixture
def target() -> Target:
    return Target(kind="local", model="m", model_id=uuid.uuid4(), environment="test")


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def proc_limit(pid: int, name: str) -> list[str]:
    """The soft and hard values of one line of ``/proc/<pid>/limits``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            return line[26:].split()[:2]
    raise AssertionError(f"no {name!r} in /proc/{pid}/limits")


def test_child_env_names_the_local_store_and_nothing_secret(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    env = child_env(local_settings)
    assert env["MODELREG_STORAGE"] == "local"
    assert env["MODELREG_ARTIFACT_DIR"] == str(local_settings.artifact_root)
    assert env["MODELREG_LOG_LEVEL"] == "INFO"
    assert env["PATH"] == os.environ["PATH"]
    assert not set(SECRETS) & set(env)
    s3 = Settings(storage="s3", s3_endpoint="127.0.0.1:9", s3_access_key="ak", s3_secret_key="sk")
    assert not [name for name in child_env(s3) if "S3" in name]


def test_a_model_server_sees_no_credentials(
    state_dir: Path,
    local_settings: Settings,
    target: Target,
    versions: list[VersionRef],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Even an env that holds them (the controller's own) is cleaned before a server starts.
    deployer = LocalDeployer(state_dir=state_dir, env={**os.environ, **child_env(local_settings)})
    deployment = uuid.uuid4()
    try:
        deployer.apply(target, [Workload(deployment, versions[0], 1)])
        status = wait_ready(deployer, target, deployment)
        (instance,) = status.instances
        assert instance.pid is not None
        seen = proc_environ(instance.pid)
        raw = Path(f"/proc/{instance.pid}/environ").read_bytes().decode()
    finally:
        deployer.apply(target, [Workload(deployment, versions[0], 0)])
    assert not set(SECRETS) & set(seen)
    assert not [value for value in SECRETS.values() if value in raw]
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["OMP_NUM_THREADS"] == "1"
    assert seen["MODELREG_ARTIFACT_DIR"] == str(local_settings.artifact_root)


def test_a_model_server_runs_under_its_memory_limit(
    deployer: LocalDeployer, target: Target, versions: list[VersionRef]
) -> None:
    deployment = uuid.uuid4()
    resources = {"limits": {"memory": "1Gi"}}
    deployer.apply(target, [Workload(deployment, versions[0], 1, resources=resources)])
    status = wait_ready(deployer, target, deployment)
    (instance,) = status.instances
    assert instance.pid is not None
    assert proc_limit(instance.pid, "Max address space") == [str(1024**3)] * 2
    assert status.url is not None
    assert infer(status.url) == [v + 1 for v in X]


def test_a_model_server_over_its_memory_limit_dies_and_is_unhealthy(
    make_deployer: Callable[..., LocalDeployer], target: Target, versions: list[VersionRef]
) -> None:
    deployer = make_deployer(max_restarts=1)
    resources = {"limits": {"memory": "64Mi"}}
    workload = Workload(uuid.uuid4(), versions[0], 1, resources=resources)
    failed = apply_until_failed(deployer, target, workload)
    assert not failed.ready
    assert failed.ready_replicas == 0
    assert failed.failure is not None
    assert "crash 2 (more than max_restarts=1)" in failed.failure


def test_a_bad_memory_limit_is_refused_before_anything_starts(
    deployer: LocalDeployer, target: Target, versions: list[VersionRef]
) -> None:
    workload = Workload(uuid.uuid4(), versions[0], 1, resources={"limits": {"memory": "lots"}})
    with pytest.raises(PermanentError, match=r"resources\.limits\.memory"):
        deployer.apply(target, [workload])
    assert deployer.observe(target) == {}


def test_with_s3_the_server_gets_a_verified_copy_and_no_s3_keys(
    state_dir: Path,
    local_settings: Settings,
    target: Target,
    seaweed: SeaweedS3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELREG_S3_SECRET_KEY", SECRETS["MODELREG_S3_SECRET_KEY"])
    store = seaweed.store(seaweed.new_bucket())
    data = add_model(constant=3.0)
    good = VersionRef(uuid.uuid4(), "1.0", "ONNX", hashlib.sha256(data).hexdigest(), "m/1.onnx")
    store.put("m/1.onnx", HashingReader([data], max_bytes=1 << 20))
    store.put("m/2.onnx", HashingReader([data + b"x"], max_bytes=1 << 20))  # tampered
    expected = hashlib.sha256(add_model(constant=4.0)).hexdigest()  # what the registry holds
    bad = VersionRef(uuid.uuid4(), "2.0", "ONNX", expected, "m/2.onnx")
    deployer = LocalDeployer(state_dir=state_dir, env=child_env(local_settings), artifacts=store)
    one, two = uuid.uuid4(), uuid.uuid4()
    try:
        deployer.apply(target, [Workload(one, good, 1)])
        status = wait_ready(deployer, target, one)
        (instance,) = status.instances
        assert instance.pid is not None
        assert not [name for name in proc_environ(instance.pid) if "S3" in name]
        assert status.url is not None
        assert infer(status.url) == [v + 3 for v in X]
        assert (state_dir / "artifacts" / f"{good.sha256}.onnx").read_bytes() == data
        failed = apply_until_failed(deployer, target, Workload(two, bad, 1))
        assert failed.failure is not None
        assert failed.failure.startswith("model server exited with code 2:")
    finally:
        deployer.apply(target, [Workload(one, good, 0), Workload(two, bad, 0)])


def test_a_bundle_of_several_models_serves_the_one_its_version_names(
    deployer: LocalDeployer, target: Target, artifacts: LocalStore
) -> None:
    """A bundle the functional check accepted because ``parameters.modelFile`` named its model
    is served the same way: the deployer passes the name on to the server."""
    members = {"model.onnx": add_model(constant=1.0), "extra/other.onnx": add_model(constant=5.0)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    version_id = uuid.uuid4()
    key = f"models/m/versions/{version_id}/model.tar.gz"
    stored = artifacts.put(key, HashingReader([buffer.getvalue()], max_bytes=1 << 20))
    version = VersionRef(
        id=version_id,
        number="1.0",
        format="ONNX",
        sha256=stored.sha256,
        artifact_key=key,
        model_file="extra/other.onnx",
    )
    deployment = uuid.uuid4()
    deployer.apply(target, [Workload(deployment, version, 1)])
    status = wait_ready(deployer, target, deployment)
    assert status.url is not None
    assert infer(status.url) == [v + 5 for v in X]


def test_observe_loads_no_ca_bundle_per_call(
    deployer: LocalDeployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller observes every target in every pass: an SSL context built per call (its
    CA bundle loaded from disk) cost most of a pass over 20 deployments (bench.rollout_latency)."""
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    for environment in ("production", "staging", "production"):
        target = Target("local", "m", uuid.UUID(int=1), environment)
        assert deployer.observe(target) == {}
    assert loads == []
