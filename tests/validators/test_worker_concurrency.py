"""A worker that runs several validator children at once (``MODELREG_VALIDATION_CONCURRENCY``),
and what it does when told to stop: real children, real validators, on both databases."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from registry.children import available_memory
from registry.models import AIModelValidationResult, ValidationRequest
from registry.services import Registry
from registry.settings import GiB, Settings, default_validation_concurrency
from registry.types import utcnow
from tests.support.helpers import make_model, make_version, upload
from tests.support.live import wait_for
from tests.support.onnx_models import add_model
from validators.worker import ValidationWorker


def _queue(http: httpx.Client, count: int) -> None:
    make_model(http, "m")
    for i in range(count):
        make_version(http, "m", str(i))
        upload(http, "m", str(i), add_model(constant=float(i)))


def _requests(registry: Registry) -> list[ValidationRequest]:
    with registry.sessions() as s:
        return list(s.scalars(select(ValidationRequest).order_by(ValidationRequest.requested_at)))


def _results(registry: Registry) -> list[AIModelValidationResult]:
    with registry.sessions() as s:
        return list(s.scalars(select(AIModelValidationResult)))


def _start(worker: ValidationWorker) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def test_a_worker_at_concurrency_2_runs_two_validator_children_at_once(
    http: httpx.Client, registry: Registry
) -> None:
    registry.settings.worker_poll_seconds = 0.1
    _queue(http, 4)
    worker = ValidationWorker(registry, concurrency=2)
    thread, stop = _start(worker)
    try:
        wait_for(lambda: len(_results(registry)) == 4, what="4 results", timeout=240)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    results = _results(registry)
    assert {(r.security_scan_status, r.functional_status) for r in results} == {
        ("Passed", "Passed")
    }
    processes = [r.results["process"] for r in results if r.results is not None]
    assert len({p["pid"] for p in processes}) == 4  # one child per run
    spans = sorted(
        (datetime.fromisoformat(p["startedAt"]), datetime.fromisoformat(p["endedAt"]))
        for p in processes
    )
    # The first two runs were claimed together: the second child started before the first
    # ended. A worker that ran one child at a time could never show this.
    (first_start, first_end), (second_start, _) = spans[0], spans[1]
    assert first_start < second_start < first_end
    # ... and never more than two at once: each child starts after all but one of those
    # that started before it had ended.
    for index, (start, _) in enumerate(spans[2:], start=2):
        still_running = [end for _, end in spans[:index] if end > start]
        assert len(still_running) <= 1, spans
    assert [r.attempts for r in _requests(registry)] == [1, 1, 1, 1]


def test_a_stopped_worker_puts_its_running_runs_back_in_the_queue(
    http: httpx.Client, registry: Registry
) -> None:
    registry.settings.worker_poll_seconds = 0.1
    _queue(http, 2)
    worker = ValidationWorker(registry, concurrency=2)
    thread, stop = _start(worker)
    try:

        def both_validating() -> bool:
            return [(r.status, r.phase not in (None, "fetch")) for r in _requests(registry)] == [
                ("Running", True)
            ] * 2

        wait_for(both_validating, what="two runs in their children", timeout=120)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert _results(registry) == []  # stopped, not finished
    requeued = _requests(registry)
    assert [(r.status, r.attempts, r.lease_owner, r.phase) for r in requeued] == [
        ("Queued", 0, None, None)
    ] * 2
    # Another worker takes them at once (no lease to wait out) and the stop counted no attempt.
    other = ValidationWorker(registry)
    assert other.run_once()
    assert other.run_once()
    assert not other.run_once()
    assert [(r.status, r.attempts) for r in _requests(registry)] == [("Done", 1)] * 2
    assert len(_results(registry)) == 2


def test_a_run_given_up_does_not_hide_the_next_one(http: httpx.Client, registry: Registry) -> None:
    _queue(http, 2)
    stuck, _ = _requests(registry)
    now = utcnow()
    step = timedelta(seconds=registry.settings.validation_lease_seconds + 1)
    for attempt in range(3):  # the first run kills its worker three times
        job = registry.validations.claim(f"w{attempt}", now=now + step * attempt)
        assert job is not None
        assert job.request_id == stuck.id
        assert registry.validations.release(job, "someone else") is False  # not its run
    job = registry.validations.claim("w3", now=now + step * 4)
    assert job is not None  # the stuck run is recorded Failed, and this claim gets the next
    assert job.request_id != stuck.id
    assert [r.status for r in _requests(registry)] == ["Done", "Running"]


def test_the_concurrency_must_be_at_least_one(tmp_path: Path) -> None:
    for bad in (0, -2):
        with pytest.raises(ValueError, match="MODELREG_VALIDATION_CONCURRENCY must be at least 1"):
            Settings(data_dir=tmp_path, validation_concurrency=bad)
    assert Settings(data_dir=tmp_path, validation_concurrency=3).validation_concurrency == 3


def test_the_default_concurrency_is_the_cores_within_the_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import registry.settings as settings_module

    monkeypatch.setattr(settings_module, "available_cores", lambda: 8)
    monkeypatch.setattr(settings_module, "available_memory", lambda: 10 * GiB)
    assert default_validation_concurrency(4 * GiB) == 2  # 8 children at 4 GiB would not fit
    assert default_validation_concurrency(1 * GiB) == 8
    assert default_validation_concurrency(0) == 8  # no cap: one per core
    assert default_validation_concurrency(64 * GiB) == 1  # always one
    monkeypatch.setattr(settings_module, "available_memory", lambda: None)
    assert default_validation_concurrency(4 * GiB) == 8


def test_the_memory_children_may_use_is_the_lower_of_ram_and_the_cgroup_limit(
    tmp_path: Path,
) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    unlimited = available_memory(cgroup_limits=[v2, v1])  # neither file: the RAM
    assert unlimited is not None
    assert unlimited > 0
    v2.write_text("max\n")
    v1.write_text(f"{GiB}\n")
    assert available_memory(cgroup_limits=[v2, v1]) == unlimited  # v2 says none, and wins
    v2.write_text(f"{2 * GiB}\n")
    assert available_memory(cgroup_limits=[v2, v1]) == min(2 * GiB, unlimited)
    v2.unlink()
    assert available_memory(cgroup_limits=[v2, v1]) == min(GiB, unlimited)  # cgroup v1
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert available_memory(cgroup_limits=[v2, v1]) == unlimited
