"""Crashes, with real processes: the S3 service, the API and the validation worker are killed
(SIGKILL) in the middle of their work, and we look at what each crash left behind.

* S3 (SeaweedFS) dies mid-upload: the client gets a 503 problem+json, no version points at an
  object that is not there, downloads and validations fail cleanly while it is down, and once
  it is back (with what it held on disk) ``modelreg gc`` aborts the multipart upload left
  behind and the same upload works.
* The API dies mid-upload: after a restart the version has no artifact and no queued
  validation, the upload's lease expires by itself, ``modelreg gc`` removes the partial file,
  and the upload can be made again.
* The worker dies mid-validation: its child dies with it (an orphan records nothing), the lease
  expires, another worker runs the validation, and exactly one result is stored.

Every wait polls for a condition; the bounds only keep a bug from hanging the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from registry.models import (
    AIModelValidationResult,
    AIModelVersion,
    ArtifactUpload,
    UsageLog,
    ValidationRequest,
)
from registry.services import Registry
from registry.storage import ArtifactStore
from registry.storage.s3 import S3Store
from tests.support.helpers import PROBLEM, RawUpload
from tests.support.live import Modelreg, wait_for
from tests.support.onnx_models import add_model
from tests.support.processes import alive, children
from tests.support.s3server import PART_SIZE, MiB, SeaweedS3

pytest_plugins = ["tests.support.s3server"]

MODEL = "m"
PARTIAL = "upload-*.part"  # an unfinished upload in the local store's .tmp directory


def versions_path(version: str) -> str:
    return f"/api/v1/models/{MODEL}/versions/{version}"


def artifact_path(version: str) -> str:
    return f"{versions_path(version)}/artifact"


def body(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    for fragment in fragments:
        assert fragment in problem["detail"], problem
    return problem


def assert_no_artifact(live: Modelreg, version: str) -> None:
    row = live.api.get(versions_path(version)).json()
    fields = ("sourcePath", "sha256", "sizeBytes", "artifactUploadedAt", "validationResultId")
    assert {k: row[k] for k in fields} == dict.fromkeys(fields), row


def runs(live: Modelreg, version: str) -> list[dict[str, Any]]:
    answer = live.api.get(f"{versions_path(version)}/validations")
    assert answer.status_code == 200, answer.text
    result: list[dict[str, Any]] = answer.json()
    return result


def finished_run(live: Modelreg, version: str, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = [r for r in runs(live, version) if r["id"] == run_id]
        return found[0] if found and found[0]["status"] == "Done" else None

    return wait_for(done, what=f"validation run {run_id}", timeout=120)


def request_validation(live: Modelreg, version: str) -> str:
    answer = live.api.post(f"{versions_path(version)}/validations")
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["id"]
    return run_id


@contextlib.contextmanager
def database(url: str) -> Iterator[sessionmaker[Session]]:
    """The server's database, read from the test, behind the server's back."""
    engine = create_engine(url)
    try:
        yield sessionmaker(engine)
    finally:
        engine.dispose()


def leases(sessions: sessionmaker[Session]) -> list[ArtifactUpload]:
    with sessions() as s:
        return list(s.scalars(select(ArtifactUpload)))


def audit_count(sessions: sessionmaker[Session], action: str) -> int:
    with sessions() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(UsageLog).where(UsageLog.action_type == action)
            )
            or 0
        )


def send_in_background(sender: RawUpload, data: bytes) -> threading.Thread:
    """Send the rest of a body while the test reads the answer; the server may stop reading."""

    def send() -> None:
        with contextlib.suppress(OSError):
            sender.send(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


# -- 1. the S3 service dies in the middle of an upload --------------------------------------


def s3_env(s3: SeaweedS3, bucket: str) -> dict[str, str]:
    return {**s3.env(bucket), "MODELREG_S3_PART_SIZE": str(PART_SIZE)}


@pytest.mark.slow
def test_s3_killed_mid_upload_gives_503_and_leaves_no_version_on_a_missing_object(
    tmp_path: Path, seaweed_process: SeaweedS3
) -> None:
    s3 = seaweed_process
    bucket = s3.new_bucket()
    live = Modelreg(tmp_path, env=s3_env(s3, bucket)).start()
    try:
        # Version 1 is in the store before the outage, validated.
        live.new_version(MODEL, "1")
        kept = add_model()
        put = live.api.put(artifact_path("1"), content=kept)
        assert put.status_code == 201, put.text
        one = put.json()
        assert finished_run(live, "1", runs(live, "1")[0]["id"])["result"] is not None

        # Version 2's upload: three parts of 5 MiB; S3 dies once the multipart upload began.
        live.new_version(MODEL, "2")
        data = body(3 * PART_SIZE - MiB, seed=2)
        sender = RawUpload(live.port, live.token, length=len(data), path=artifact_path("2"))
        try:
            sender.send(data[: 2 * PART_SIZE + MiB])
            wait_for(lambda: s3.multipart_uploads(bucket), what="the multipart upload began")
            s3.kill()
            rest = send_in_background(sender, data[2 * PART_SIZE + MiB :])
            sender.sock.settimeout(120)  # the S3 client's retries come first
            status, headers, answer = sender.response()
            rest.join(timeout=60)
        finally:
            sender.close()
        assert status == 503, answer
        assert headers["content-type"].startswith(PROBLEM), headers
        problem = json.loads(answer)
        assert problem["status"] == 503
        assert problem["detail"] == "the artifact store is unavailable; retry later", problem
        assert_no_artifact(live, "2")
        assert runs(live, "2") == []
        with database(f"sqlite:///{tmp_path / 'data' / 'modelreg.db'}") as sessions:
            assert leases(sessions) == []  # released: the next upload need not wait
            assert audit_count(sessions, "version_uploaded") == 1  # version 1's alone

        # While S3 is down: a download is a 503, readiness says why, and a validation records
        # a named finding instead of crashing the worker.
        run_id = request_validation(live, "1")
        with ThreadPoolExecutor(1) as pool:  # each waits out the S3 client's retries
            readiness = pool.submit(httpx.get, f"{live.url}/readyz", timeout=60)
            assert_problem(live.api.get(artifact_path("1")), 503, "artifact store is unavailable")
            ready = readiness.result()
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["store"] == "unavailable", ready.text
        outage = finished_run(live, "1", run_id)["result"]
        assert outage["securityScanStatus"] == "Failed", outage
        (finding,) = outage["results"]["findings"]
        assert finding["ruleId"] == "artifact.unavailable", finding
        assert outage["artifactSha256"] == one["sha256"]

        # S3 is back, with what it held: version 1's object, and the multipart upload of
        # version 2 that the store could not abort while S3 was down.
        s3.start()
        assert s3.objects(bucket) == [one["sourcePath"]]
        assert live.api.get(artifact_path("1")).content == kept
        (stale,) = s3.multipart_uploads(bucket)
        # `modelreg gc` aborts it; the versions' objects stay.
        gc = live.cli("gc", "--older-than", "0s", "--json")
        assert gc.returncode == 0, gc.stdout + gc.stderr
        report = json.loads(gc.stdout)
        assert report["partialRemoved"] == 1, report
        assert s3.multipart_uploads(bucket) == []
        assert s3.objects(bucket) == [one["sourcePath"]]
        again = live.api.put(artifact_path("2"), content=data)
        assert again.status_code == 201, again.text
        two = again.json()
        assert two["sourcePath"] == stale
        assert live.api.get(artifact_path("2")).content == data
        assert s3.multipart_uploads(bucket) == []
        assert s3.objects(bucket) == sorted([one["sourcePath"], two["sourcePath"]])
        # No version points at an object the store does not hold.
        for row in live.api.get(f"/api/v1/models/{MODEL}/versions").json()["items"]:
            assert row["sourcePath"] in s3.objects(bucket), row
        # The worker survived the outage: validation works again.
        passed = finished_run(live, "1", request_validation(live, "1"))["result"]
        assert (passed["securityScanStatus"], passed["functionalStatus"]) == ("Passed", "Passed")
    finally:
        live.stop()


# -- 2. the API dies in the middle of an upload ----------------------------------------------


@pytest.mark.slow
def test_api_killed_mid_upload_leaves_no_artifact_and_the_upload_can_be_made_again(
    tmp_path: Path, database_url: str
) -> None:
    env = {"MODELREG_DATABASE_URL": database_url, "MODELREG_UPLOAD_LEASE_SECONDS": "6"}
    live = Modelreg(tmp_path, env=env).start()
    partial_dir = tmp_path / "data" / "artifacts" / ".tmp"
    try:
        live.new_version(MODEL, "1")
        data = body(24 * MiB, seed=3)
        sender = RawUpload(live.port, live.token, length=len(data), path=artifact_path("1"))
        with database(database_url) as sessions:
            try:
                sender.send(data[: 8 * MiB])

                def writing() -> bool:
                    parts = list(partial_dir.glob(PARTIAL))
                    return bool(leases(sessions)) and any(p.stat().st_size > 0 for p in parts)

                wait_for(writing, what="the upload is being written")
                live.kill()
            finally:
                sender.close()
            assert list(partial_dir.glob(PARTIAL)), "expected the killed upload's partial file"

            live.start()
            assert_no_artifact(live, "1")
            assert runs(live, "1") == []
            assert audit_count(sessions, "version_uploaded") == 0
            # The dead upload's lease holds the version (409) until it expires, then lets go.
            (lease,) = leases(sessions)
            expires = lease.expires_at.replace(tzinfo=lease.expires_at.tzinfo or UTC)
            wait_for(lambda: datetime.now(UTC) > expires, what="the dead upload's lease expired")

            # The partial file is garbage, which gc removes.
            gc = live.cli("gc", "--older-than", "0s", "--json")
            assert gc.returncode == 0, gc.stdout + gc.stderr
            report = json.loads(gc.stdout)
            assert report["partialRemoved"] >= 1, report
            assert list(partial_dir.glob(PARTIAL)) == []

            uploaded = live.api.put(artifact_path("1"), content=add_model())
            assert uploaded.status_code == 201, uploaded.text
            assert uploaded.json()["sha256"] is not None
            assert len(runs(live, "1")) == 1  # the new upload's validation, and only it
            assert leases(sessions) == []
            assert audit_count(sessions, "version_uploaded") == 1
    finally:
        live.stop()


# -- 3. the worker dies in the middle of a validation ----------------------------------------


def validator_child(worker: subprocess.Popen[bytes]) -> int | None:
    """The worker's validation child (``python -m registry.children ... validators.child``)."""
    found = children(worker.pid, marker=b"validators.child")
    return found[0] if found else None


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_worker_killed_mid_validation_is_taken_over_and_completes_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    env = {
        "MODELREG_DATABASE_URL": database_url,
        "MODELREG_WORKER_ENABLED": "false",
        "MODELREG_VALIDATION_LEASE_SECONDS": "6",
    }
    live = Modelreg(tmp_path, env=env).start()
    scratch = tmp_path / "worker-tmp"
    scratch.mkdir()
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker(n: int) -> subprocess.Popen[bytes]:
        workers.append(live.spawn("worker", log=f"worker{n}.log", env={"TMPDIR": str(scratch)}))
        return workers[-1]

    try:
        live.new_version(MODEL, "1")
        uploaded = live.api.put(artifact_path("1"), content=add_model())
        assert uploaded.status_code == 201, uploaded.text
        sha = uploaded.json()["sha256"]

        first = start_worker(1)
        # The benchmark alone measures for over a second per phase, so once the child runs
        # it has a few seconds of work left: the kill lands mid-validation.
        child = wait_for(lambda: validator_child(first), what="the validation child", timeout=120)
        first.send_signal(signal.SIGKILL)  # the worker alone, as the OOM killer would
        first.wait(timeout=30)
        wait_for(lambda: not alive(child), what="the orphaned child to die", timeout=30)
        assert not list(scratch.rglob("result.json")), "the orphan finished its validation"
        (running,) = runs(live, "1")
        assert (running["status"], running["attempts"], running["result"]) == ("Running", 1, None)

        start_worker(2)
        done = finished_run(live, "1", running["id"])
        assert done["attempts"] == 2, done
        result = done["result"]
        assert (result["securityScanStatus"], result["functionalStatus"]) == ("Passed", "Passed")
        assert result["artifactSha256"] == sha
        assert result["results"]["sha256"] == sha
        assert result["results"]["attempt"] == 2
        version = live.api.get(versions_path("1")).json()
        assert version["validationResultId"] == result["id"]
        assert [r["id"] for r in runs(live, "1")] == [running["id"]]
        with database(database_url) as sessions, sessions() as s:
            stored = list(s.scalars(select(AIModelValidationResult)))
            assert [str(r.id) for r in stored] == [result["id"]]
            (request,) = s.scalars(select(ValidationRequest))
            assert (request.status, request.lease_owner) == ("Done", None)
            row = s.scalar(select(AIModelVersion))
            assert row is not None
            assert str(row.validation_result_id) == result["id"]
            assert audit_count(sessions, "version_validated") == 1
        # The dead worker's scratch directory (a copy of the artifact) was cleared away.
        wait_for(
            lambda: not list(scratch.glob("modelreg-validate*")), what="no scratch directory left"
        )
    finally:
        for worker in workers:
            stop(worker)
        live.stop()


# -- what a killed writer leaves on S3: a multipart upload, which gc aborts -------------------


@pytest.fixture
def store(request: pytest.FixtureRequest) -> ArtifactStore | None:
    """The ``registry`` fixture of this module keeps its artifacts in SeaweedFS (the shared one)."""
    s3: SeaweedS3 = request.getfixturevalue("seaweed")
    return s3.store(s3.new_bucket())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_gc_aborts_the_multipart_upload_of_a_writer_that_died(
    registry: Registry, seaweed: SeaweedS3
) -> None:
    store = registry.store
    assert isinstance(store, S3Store)
    dead = "models/a/versions/b/model.onnx"
    with seaweed.boto() as s3:  # an upload begun, one part sent, then nothing: a crash
        begun = s3.create_multipart_upload(Bucket=store.bucket, Key=dead)
        s3.upload_part(
            Bucket=store.bucket,
            Key=dead,
            UploadId=begun["UploadId"],
            PartNumber=1,
            Body=body(PART_SIZE),
        )
    assert seaweed.multipart_uploads(store.bucket) == [dead]
    young = registry.gc.collect(older_than=timedelta(hours=1), dry_run=False)
    assert young.partial_removed == 0  # it may still be being written
    assert seaweed.multipart_uploads(store.bucket) == [dead]
    dry = registry.gc.collect(older_than=timedelta(0), dry_run=True)
    assert dry.partial_removed == 1
    assert seaweed.multipart_uploads(store.bucket) == [dead]
    done = registry.gc.collect(older_than=timedelta(0), dry_run=False)
    assert (done.partial_removed, done.failed) == (1, 0)
    assert seaweed.multipart_uploads(store.bucket) == []
