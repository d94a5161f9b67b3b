"""Several ``modelreg worker`` processes on one PostgreSQL queue: each run is validated exactly
once, none is lost, and a worker killed with two children running loses neither run.

Real processes and real validators; every wait polls for a condition, and the bounds only keep
a bug from hanging the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from registry.models import AIModelValidationResult, UsageLog, ValidationRequest
from tests.conftest import PgDatabases
from tests.support.live import Modelreg, wait_for
from tests.support.onnx_models import add_model
from tests.support.processes import alive, children

MODEL = "m"
#: in a validation child's command line (``python -m registry.children ... validators.child``)
CHILD = b"validators.child"


@pytest.fixture
def pg_url(pg_databases: PgDatabases | None) -> Iterator[str]:
    if pg_databases is None:
        pytest.skip("no PostgreSQL: set MODELREG_TEST_DATABASE_URL or run one on 127.0.0.1:5432")
    name, url = pg_databases.new()
    yield url
    pg_databases.drop(name)


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(pg_url)
    yield sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def live(tmp_path: Path, pg_url: str) -> Iterator[Modelreg]:
    env = {
        "MODELREG_DATABASE_URL": pg_url,
        "MODELREG_WORKER_ENABLED": "false",
        "MODELREG_VALIDATION_LEASE_SECONDS": "6",
    }
    server = Modelreg(tmp_path, env=env).start()
    yield server
    server.stop()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def queue(live: Modelreg, count: int) -> None:
    for i in range(count):
        live.version(MODEL, str(i), add_model(constant=float(i)))


def requests(sessions: sessionmaker[Session]) -> list[ValidationRequest]:
    with sessions() as s:
        return list(s.scalars(select(ValidationRequest)))


def done(sessions: sessionmaker[Session], count: int) -> bool:
    return [r.status for r in requests(sessions)] == ["Done"] * count


def assert_each_validated_once(sessions: sessionmaker[Session], count: int) -> None:
    with sessions() as s:
        reqs = list(s.scalars(select(ValidationRequest)))
        results = list(s.scalars(select(AIModelValidationResult)))
        validated = s.scalar(
            select(func.count())
            .select_from(UsageLog)
            .where(UsageLog.action_type == "version_validated")
        )
    assert len(reqs) == count
    assert {r.status for r in reqs} == {"Done"}
    assert sorted(str(r.result_id) for r in reqs) == sorted(str(r.id) for r in results)
    assert {(r.security_scan_status, r.functional_status) for r in results} == {
        ("Passed", "Passed")
    }
    assert validated == count


@pytest.mark.slow
def test_two_workers_share_the_queue_and_validate_each_run_exactly_once(
    live: Modelreg, sessions: sessionmaker[Session], workers: list[subprocess.Popen[bytes]]
) -> None:
    count = 10
    queue(live, count)
    for n in (1, 2):
        workers.append(
            live.spawn("worker", log=f"worker{n}.log", env={"MODELREG_VALIDATION_CONCURRENCY": "1"})
        )
    wait_for(lambda: done(sessions, count), what=f"{count} runs done", timeout=300)
    assert_each_validated_once(sessions, count)
    assert [r.attempts for r in requests(sessions)] == [1] * count
    # No run was started twice: every "validating m N" line, over both logs, names another
    # version, and both workers took some.
    started: Counter[str] = Counter()
    per_worker = []
    for n in (1, 2):
        text = (live.home / f"worker{n}.log").read_text()
        versions = re.findall(rf"validating {MODEL} (\S+) ", text)
        per_worker.append(len(versions))
        started.update(versions)
    assert started == Counter({str(i): 1 for i in range(count)})
    assert all(per_worker), per_worker


@pytest.mark.slow
def test_a_worker_killed_with_two_children_running_loses_neither_run(
    live: Modelreg, sessions: sessionmaker[Session], workers: list[subprocess.Popen[bytes]]
) -> None:
    queue(live, 2)
    env = {"MODELREG_VALIDATION_CONCURRENCY": "2"}
    workers.append(live.spawn("worker", log="worker1.log", env=env))
    first = workers[0]
    running = wait_for(
        lambda: len(found := children(first.pid, marker=CHILD)) == 2 and found,
        what="two validation children",
        timeout=120,
    )
    first.send_signal(signal.SIGKILL)  # the worker alone, as the OOM killer would
    first.wait(timeout=30)
    wait_for(lambda: not any(alive(pid) for pid in running), what="the orphans to die")
    assert [(r.status, r.attempts, r.result_id) for r in requests(sessions)] == [
        ("Running", 1, None)
    ] * 2
    workers.append(live.spawn("worker", log="worker2.log", env=env))
    wait_for(lambda: done(sessions, 2), what="both runs taken over", timeout=180)
    assert_each_validated_once(sessions, 2)
    assert [r.attempts for r in requests(sessions)] == [2, 2]
