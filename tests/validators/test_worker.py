"""The validation worker: the durable queue, leases, digest re-check, and crash isolation."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from registry.models import AIModelValidationResult, ValidationRequest
from registry.services import Registry
from registry.types import utcnow
from registry.validation_outcome import ValidationOutcome
from registry.vocabulary import CheckStatus
from tests.support.helpers import audit_actions, make_model, make_version, upload
from tests.support.onnx_models import add_model, nan_model
from validators.worker import ValidationWorker


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


EVIL_PICKLE = pickle.dumps(_Evil(), protocol=4)  # built, never loaded


def crash_in_child(**_kwargs: Any) -> None:
    os.abort()


def hang_in_child(**_kwargs: Any) -> None:
    time.sleep(600)


def _results(registry: Registry) -> list[AIModelValidationResult]:
    with registry.sessions() as s:
        return list(s.scalars(select(AIModelValidationResult)))


def _version(http: httpx.Client, model: str, version: str) -> dict[str, Any]:
    data: dict[str, Any] = http.get(f"/api/v1/models/{model}/versions/{version}").json()
    return data


@pytest.fixture
def model(http: httpx.Client) -> str:
    make_model(http, "m")
    return "m"


def test_a_good_onnx_model_passes_and_opens_the_gate(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0", parameters={"dimensions": {"batch": 2}})
    uploaded = upload(http, model, "1.0", add_model()).json()
    worker = ValidationWorker(registry)
    assert worker.run_once() is True
    assert worker.run_once() is False  # the queue is empty: exactly one run
    (result,) = _results(registry)
    assert (result.security_scan_status, result.functional_status) == ("Passed", "Passed")
    assert result.artifact_sha256 == uploaded["sha256"]
    assert result.results is not None
    assert result.results["sha256"] == uploaded["sha256"]
    assert result.performance_benchmark is not None
    latency = result.performance_benchmark["latencyMs"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert _version(http, model, "1.0")["validationResultId"] == str(result.id)
    assert "version_validated" in audit_actions(registry)
    response = http.post(
        f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": "Production"}
    )
    assert response.status_code == 200, response.text


def test_a_malicious_pickle_fails_the_scan_and_is_never_loaded(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0", format="Pickle")
    upload(http, model, "1.0", EVIL_PICKLE, filename="model.pkl")
    assert ValidationWorker(registry).run_once()
    (result,) = _results(registry)
    assert result.security_scan_status == "Failed"
    assert result.functional_status == "Skipped"
    assert result.results is not None
    rules = {f["ruleId"] for f in result.results["security"]["findings"]}
    assert any(rule.startswith("pickle.") for rule in rules), rules
    assert "posix.system" in str(result.results) or "os.system" in str(result.results)
    response = http.post(
        f"/api/v1/models/{model}/versions/1.0/transitions", json={"status": "Production"}
    )
    assert response.status_code == 409


def test_a_model_with_non_finite_outputs_fails_the_functional_check(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", nan_model())
    assert ValidationWorker(registry).run_once()
    (result,) = _results(registry)
    assert (result.security_scan_status, result.functional_status) == ("Passed", "Failed")
    assert result.performance_benchmark is None


def test_malformed_bytes_fail_with_a_finding_and_the_worker_survives(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", b"\x08\x07garbage that claims to be onnx" * 10)
    worker = ValidationWorker(registry)
    assert worker.run_once()
    (result,) = _results(registry)
    # declared ONNX, and not one: the scan says so (a claimed format that does not parse is
    # not "unknown"), and the artifact is never loaded
    assert (result.security_scan_status, result.functional_status) == ("Failed", "Skipped")
    assert result.results is not None
    rules = {f["ruleId"] for f in result.results["security"]["findings"]}
    assert "onnx.corrupt" in rules, rules


def test_the_worker_refuses_an_artifact_whose_digest_changed(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    uploaded = upload(http, model, "1.0", add_model()).json()
    root = registry.settings.artifact_root
    (root / uploaded["sourcePath"]).write_bytes(add_model(constant=2.0))  # tampered at rest
    assert ValidationWorker(registry).run_once()
    (result,) = _results(registry)
    assert result.security_scan_status == "Failed"
    assert result.results is not None
    assert "digest mismatch" in result.results["error"]
    assert result.results["findings"][0]["ruleId"] == "artifact.digest-mismatch"


@pytest.mark.parametrize(
    ("entry", "timeout", "expected"),
    [
        pytest.param(crash_in_child, 60, "killed by signal SIGABRT", id="validator-crashes"),
        pytest.param(hang_in_child, 2, "did not finish within 2 s", id="validator-hangs"),
    ],
)
def test_a_crashing_or_hanging_validator_gives_failed_and_the_worker_survives(
    http: httpx.Client,
    model: str,
    registry: Registry,
    entry: Any,
    timeout: int,
    expected: str,
) -> None:
    registry.settings.validation_timeout_seconds = timeout
    make_version(http, model, "1.0")
    make_version(http, model, "2.0")
    upload(http, model, "1.0", add_model())
    upload(http, model, "2.0", add_model())
    worker = ValidationWorker(registry, child_entry=entry)
    assert worker.run_once()
    assert worker.run_once()  # the same worker goes on with the next run
    results = _results(registry)
    assert len(results) == 2
    for result in results:
        assert result.security_scan_status == "Failed"
        assert result.results is not None
        assert expected in result.results["error"]


def test_an_expired_lease_is_claimed_again_and_completes_exactly_once(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    dead = registry.validations.claim("dead-worker")
    assert dead is not None
    assert registry.validations.claim("other-worker") is None  # leased: not claimable
    later = utcnow() + timedelta(seconds=registry.settings.validation_lease_seconds + 1)
    taken = registry.validations.claim("other-worker", now=later)
    assert taken is not None
    assert taken.request_id == dead.request_id
    assert taken.attempts == 2
    done = registry.validations.complete(
        taken,
        "other-worker",
        ValidationOutcome(
            security=CheckStatus.PASSED, functional=CheckStatus.PASSED, sha256=taken.sha256
        ),
    )
    assert done is not None
    late = registry.validations.complete(
        dead,
        "dead-worker",
        ValidationOutcome(
            security=CheckStatus.FAILED, functional=CheckStatus.FAILED, sha256=dead.sha256
        ),
    )
    assert late is None  # the dead worker's late result is dropped
    assert [r.security_scan_status for r in _results(registry)] == ["Passed"]


def test_a_run_that_keeps_killing_workers_is_given_up(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    now = utcnow()
    step = timedelta(seconds=registry.settings.validation_lease_seconds + 1)
    for attempt in range(3):
        assert registry.validations.claim(f"w{attempt}", now=now + step * attempt) is not None
    assert registry.validations.claim("w4", now=now + step * 4) is None
    (result,) = _results(registry)
    assert result.security_scan_status == "Failed"
    assert result.results is not None
    assert "3 attempts" in result.results["error"]
    with registry.sessions() as s:
        assert s.scalar(select(ValidationRequest.status)) == "Done"


def test_concurrent_workers_never_take_the_same_run(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    for i in range(6):
        make_version(http, model, f"{i}")
        upload(http, model, f"{i}", add_model())
    claimed: list[uuid.UUID] = []
    lock = threading.Lock()
    barrier = threading.Barrier(3)

    def claim_all(name: str) -> None:
        barrier.wait()
        while (job := registry.validations.claim(name)) is not None:
            with lock:
                claimed.append(job.request_id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 6
    assert len(set(claimed)) == 6


def test_modelreg_worker_runs_alone_and_stops_on_sigterm(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    make_version(http, model, "1.0")
    upload(http, model, "1.0", add_model())
    settings = registry.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        MODELREG_DATABASE_URL=settings.database_url,
        MODELREG_DATA_DIR=str(settings.data_dir),
        MODELREG_WORKER_POLL_SECONDS="0.2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _results(registry) and time.monotonic() < deadline:
            time.sleep(0.2)
        (result,) = _results(registry)
        assert (result.security_scan_status, result.functional_status) == ("Passed", "Passed")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "validated m 1.0: security Passed, functional Passed" in output
    assert "stopped" in output


def test_a_bundle_is_unpacked_after_the_scan_and_its_model_validated(
    http: httpx.Client, model: str, registry: Registry
) -> None:
    import io
    import tarfile

    data = add_model()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    make_version(http, model, "1.0")
    upload(http, model, "1.0", buffer.getvalue(), filename="model.tar.gz")
    assert ValidationWorker(registry).run_once()
    (result,) = _results(registry)
    assert (result.security_scan_status, result.functional_status) == ("Passed", "Passed")
    assert result.performance_benchmark is not None
