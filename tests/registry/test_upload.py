"""Artifact upload and download through the real server, on the local store and on S3.

An upload is all or nothing: whatever goes wrong (client gone, too large, wrong checksum, store
down, a conflict), the client gets a problem+json saying why, the version keeps no artifact,
the store keeps no object, and the version's upload lease is gone so the next upload works.

Uploads that change state get a server and a database of their own (SQLite and PostgreSQL).
Requests that change nothing (downloads, and uploads refused before the body is read) share one
server per store, on SQLite, so that the tables stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from registry.models import ArtifactUpload, UsageLog
from registry.services import Registry, build_registry
from registry.settings import Settings
from registry.storage import ArtifactStore
from registry.storage.local import LocalStore
from registry.storage.s3 import S3Store
from tests.support.helpers import PROBLEM, RawUpload, assert_problem
from tests.support.live_server import LiveServer
from tests.support.s3server import CuttingProxy, MiB, SeaweedS3

pytest_plugins = ["tests.support.s3server"]

LIMIT = 12 * MiB  # max_artifact_bytes in this module
SMALL = 3 * MiB + 17
LARGE = LIMIT  # three 5 MiB parts on S3: a multipart upload
MODEL = "text2img"
VERSION = "1.0"
VERSION_PATH = f"/api/v1/models/{MODEL}/versions/{VERSION}"
ARTIFACT = f"{VERSION_PATH}/artifact"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def body(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(
    http: httpx.Client,
    data: bytes,
    *,
    path: str = ARTIFACT,
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    return http.put(path, content=data, params=params, headers=headers)


def assert_no_artifact(http: httpx.Client, path: str = VERSION_PATH) -> None:
    row = http.get(path).json()
    assert (row["sourcePath"], row["sha256"], row["sizeBytes"], row["artifactUploadedAt"]) == (
        None,
        None,
        None,
        None,
    ), row


def key_of(version: dict[str, Any], filename: str = "model.onnx") -> str:
    return f"models/{version['modelId']}/versions/{version['id']}/{filename}"


def leases(registry: Registry) -> list[ArtifactUpload]:
    with registry.sessions() as s:
        return list(s.scalars(select(ArtifactUpload)))


def stored(registry: Registry, s3: SeaweedS3 | None) -> list[str]:
    """Every object the store holds, and every upload it has not finished."""
    store = registry.store
    found = sorted(store.list_keys())
    if isinstance(store, LocalStore):
        tmp = store.root / ".tmp"
        found += [f".tmp/{p.name}" for p in tmp.iterdir()] if tmp.is_dir() else []
    if isinstance(store, S3Store):
        assert s3 is not None
        found += [f"multipart upload of {k}" for k in s3.multipart_uploads(store.bucket)]
    return found


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until the server got there (the bound only keeps a bug from hanging the run)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"the server never got there: {what}")
        time.sleep(0.02)


# -- fixtures: one server per test ---------------------------------------------------------


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """``parametrize("settings", [{...}], indirect=True)`` changes more of them."""
    return settings.model_copy(
        update={"max_artifact_bytes": LIMIT, **getattr(request, "param", {})}
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ArtifactStore | None:
    """None: the registry's own local store. S3: SeaweedFS, through a proxy that can cut it off."""
    if request.param == "local":
        return None
    s3: SeaweedS3 = request.getfixturevalue("seaweed")
    proxy: CuttingProxy = request.getfixturevalue("s3_proxy")
    return s3.store(s3.new_bucket(), endpoint=proxy.endpoint)


@pytest.fixture
def s3(registry: Registry, request: pytest.FixtureRequest) -> SeaweedS3 | None:
    if isinstance(registry.store, S3Store):
        helper: SeaweedS3 = request.getfixturevalue("seaweed")
        return helper
    return None


@pytest.fixture
def version(http: httpx.Client) -> dict[str, Any]:
    """A model with one ONNX version, no artifact yet."""
    created = http.post(
        "/api/v1/models",
        json={"name": MODEL, "taskType": "ImageGeneration", "provider": "Internal"},
    )
    assert created.status_code == 201, created.text
    made = http.post(f"/api/v1/models/{MODEL}/versions", json={"versionNumber": VERSION})
    assert made.status_code == 201, made.text
    result: dict[str, Any] = made.json()
    return result


@pytest.fixture
def raw(server: LiveServer, admin_token: str) -> Iterator[Callable[..., RawUpload]]:
    opened: list[RawUpload] = []

    def start(**kwargs: Any) -> RawUpload:
        opened.append(RawUpload(server.port, admin_token, **{"path": ARTIFACT, **kwargs}))
        return opened[-1]

    yield start
    for sender in opened:
        sender.close()


@pytest.fixture
def nothing_kept(
    http: httpx.Client, registry: Registry, s3: SeaweedS3 | None
) -> Callable[[], None]:
    """Assert that a failed upload left no trace, then that the version still takes one."""

    def check() -> None:
        assert_no_artifact(http)
        assert stored(registry, s3) == []
        assert leases(registry) == []
        data = body(256 * 1024, seed=99)
        again = upload(http, data)
        assert again.status_code == 201, again.text
        assert again.json()["sha256"] == sha(data)

    return check


# -- successful uploads --------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [pytest.param(SMALL, id="3MiB"), pytest.param(LARGE, id="12MiB-multipart")]
)
def test_upload_then_download(
    http: httpx.Client, registry: Registry, s3: SeaweedS3 | None, version: dict[str, Any], size: int
) -> None:
    data = body(size)
    response = upload(http, data, headers={"X-Checksum-Sha256": sha(data)})
    assert response.status_code == 201, response.text
    uploaded = response.json()
    key = key_of(version)
    assert (uploaded["sha256"], uploaded["sizeBytes"], uploaded["sourcePath"]) == (
        sha(data),
        size,
        key,
    )
    assert uploaded["artifactUploadedAt"] is not None
    assert http.get(VERSION_PATH).json() == uploaded

    with registry.sessions() as s:
        logged = list(s.scalars(select(UsageLog).where(UsageLog.action_type == "version_uploaded")))
    assert len(logged) == 1
    details = dict(logged[0].details or {})
    queued = details.pop("validationRequestId")
    assert details == {
        "modelVersionId": version["id"],
        "sourcePath": key,
        "sha256": sha(data),
        "sizeBytes": size,
    }
    (run,) = http.get(f"{VERSION_PATH}/validations").json()  # queued with the upload
    assert (run["id"], run["status"], run["sha256"]) == (queued, "Queued", sha(data))
    assert stored(registry, s3) == [key]
    assert leases(registry) == []
    if s3 is not None and isinstance(registry.store, S3Store) and size == LARGE:
        assert s3.etag(registry.store.bucket, key).endswith("-3")  # it went up in 3 parts

    download = http.get(ARTIFACT)
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["etag"] == f'"{sha(data)}"'
    assert download.headers["x-checksum-sha256"] == sha(data)
    assert download.headers["content-length"] == str(size)
    assert download.headers["accept-ranges"] == "bytes"
    assert download.headers["content-disposition"] == 'attachment; filename="model.onnx"'


@SQLITE_ONLY
def test_upload_with_a_filename(http: httpx.Client, version: dict[str, Any]) -> None:
    response = upload(http, b"weights", filename="unet.safetensors")
    assert response.status_code == 201, response.text
    assert response.json()["sourcePath"] == key_of(version, "unet.safetensors")
    download = http.get(ARTIFACT)
    assert download.content == b"weights"
    assert download.headers["content-disposition"] == 'attachment; filename="unet.safetensors"'


@SQLITE_ONLY
def test_upload_of_a_chunked_body(http: httpx.Client, version: dict[str, Any]) -> None:
    data = body(SMALL)
    response = http.put(ARTIFACT, content=iter([data[:MiB], data[MiB:]]))  # no Content-Length
    assert response.status_code == 201, response.text
    assert (response.json()["sha256"], response.json()["sizeBytes"]) == (sha(data), SMALL)
    assert http.get(ARTIFACT).content == data


# -- failed uploads: the client ------------------------------------------------------------


def test_client_disconnect_mid_body(
    raw: Callable[..., RawUpload],
    registry: Registry,
    s3: SeaweedS3 | None,
    version: dict[str, Any],
    nothing_kept: Callable[[], None],
) -> None:
    data = body(LARGE)
    sender = raw(length=LARGE)
    sender.send(data[: 11 * MiB])
    wait_until(lambda: len(leases(registry)) == 1, "the upload holds its lease")
    wait_until(
        lambda: any(k.startswith((".tmp/", "multipart upload of ")) for k in stored(registry, s3)),
        "the store is writing: a temp file, or an S3 multipart upload",
    )
    sender.close()
    wait_until(lambda: leases(registry) == [], "the abandoned upload released its lease")
    nothing_kept()


@pytest.mark.parametrize(
    "settings", [pytest.param({"upload_idle_timeout": 2.0}, id="idle-2s")], indirect=True
)
def test_a_client_that_stops_sending_gets_408_and_nothing_is_kept(
    raw: Callable[..., RawUpload],
    registry: Registry,
    s3: SeaweedS3 | None,
    version: dict[str, Any],
    nothing_kept: Callable[[], None],
) -> None:
    data = body(LARGE)
    sender = raw(length=LARGE)
    sender.send(data[: 11 * MiB])
    wait_until(lambda: len(leases(registry)) == 1, "the upload holds its lease")
    wait_until(
        lambda: any(k.startswith((".tmp/", "multipart upload of ")) for k in stored(registry, s3)),
        "the store is writing: a temp file, or an S3 multipart upload",
    )
    status, headers, answer = sender.response()  # the client sends nothing more
    assert status == 408, answer
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(answer)["idleTimeoutSeconds"] == 2.0
    wait_until(lambda: leases(registry) == [], "the stalled upload released its lease")
    nothing_kept()


def test_chunked_body_above_the_limit_is_413(
    http: httpx.Client, version: dict[str, Any], nothing_kept: Callable[[], None]
) -> None:
    data = body(LIMIT + MiB)
    response = http.put(ARTIFACT, content=(data[i : i + MiB] for i in range(0, len(data), MiB)))
    problem = assert_problem(response, 413, f"exceeds the limit of {LIMIT} bytes")
    assert problem["limit"] == LIMIT
    nothing_kept()


def test_checksum_mismatch_is_400(
    http: httpx.Client, version: dict[str, Any], nothing_kept: Callable[[], None]
) -> None:
    data = body(LARGE)
    wrong = sha(b"something else")
    response = upload(http, data, headers={"X-Checksum-Sha256": wrong})
    problem = assert_problem(
        response, 400, f"X-Checksum-Sha256 was {wrong}", f"the body hashes to {sha(data)}"
    )
    assert (problem["expected"], problem["actual"]) == (wrong, sha(data))
    nothing_kept()


# -- failed uploads: the store -------------------------------------------------------------


def test_store_failure_mid_upload_is_503(
    http: httpx.Client,
    registry: Registry,
    version: dict[str, Any],
    request: pytest.FixtureRequest,
    nothing_kept: Callable[[], None],
) -> None:
    blocker = None
    if isinstance(registry.store, S3Store):
        proxy: CuttingProxy = request.getfixturevalue("s3_proxy")
        proxy.cut_after(7 * MiB)  # S3 drops the connection inside the second part
    else:
        assert isinstance(registry.store, LocalStore)
        blocker = registry.store.root / key_of(version)  # the final rename will fail
        blocker.mkdir(parents=True)
    response = upload(http, body(LARGE))
    problem = assert_problem(response, 503)
    # What failed (a host, a path, an object key) is for the log; the client learns no more.
    assert problem["detail"] == "the artifact store is unavailable; retry later"
    assert key_of(version) not in response.text
    if blocker is not None:
        blocker.rmdir()
    nothing_kept()


def test_store_down_before_upload_is_503(
    http: httpx.Client,
    registry: Registry,
    s3: SeaweedS3 | None,
    version: dict[str, Any],
    request: pytest.FixtureRequest,
    nothing_kept: Callable[[], None],
) -> None:
    if isinstance(registry.store, LocalStore):
        tmp = registry.store.root / ".tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(b"")  # a file where the temp directory belongs
        assert_problem(upload(http, body(SMALL)), 503, "artifact store is unavailable")
        tmp.unlink()
        nothing_kept()
        return
    assert isinstance(registry.store, S3Store)
    assert s3 is not None
    proxy: CuttingProxy = request.getfixturevalue("s3_proxy")
    proxy.stop()  # the endpoint is dead: connections are refused
    assert_problem(upload(http, body(SMALL)), 503, "artifact store is unavailable")
    assert_no_artifact(http)
    assert leases(registry) == []
    assert s3.objects(registry.store.bucket) == []
    assert s3.multipart_uploads(registry.store.bucket) == []


# -- concurrent uploads --------------------------------------------------------------------


def test_second_upload_while_one_is_in_progress_is_409(
    raw: Callable[..., RawUpload],
    http: httpx.Client,
    registry: Registry,
    s3: SeaweedS3 | None,
    version: dict[str, Any],
) -> None:
    first = body(SMALL, seed=1)
    sender = raw(length=SMALL)
    sender.send(first[:MiB])
    wait_until(lambda: len(leases(registry)) == 1, "the first upload holds its lease")

    second = upload(http, body(SMALL, seed=2))
    problem = assert_problem(second, 409, "already in progress")
    assert problem["leaseExpiresAt"]

    sender.send(first[MiB:])
    status, _headers, answer = sender.response()
    assert status == 201, answer
    row = http.get(VERSION_PATH).json()
    assert (row["sha256"], row["sizeBytes"]) == (sha(first), SMALL)
    assert http.get(ARTIFACT).content == first
    assert stored(registry, s3) == [key_of(version)]
    assert leases(registry) == []


def test_upload_racing_the_end_of_another_is_409(
    raw: Callable[..., RawUpload],
    server: LiveServer,
    admin_token: str,
    http: httpx.Client,
    registry: Registry,
    s3: SeaweedS3 | None,
    version: dict[str, Any],
) -> None:
    first, second = body(SMALL, seed=1), body(SMALL, seed=2)
    sender = raw(length=SMALL)
    sender.send(first[:MiB])
    wait_until(lambda: len(leases(registry)) == 1, "the first upload holds its lease")

    # Hold the second upload's claim between its two reads: the version row (no artifact yet)
    # and the lease row. The first upload completes in that gap.
    at_lease_read, resume = threading.Event(), threading.Event()

    def pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if (
            threading.current_thread().name.startswith("upload")
            and statement.lstrip().upper().startswith("SELECT")
            and "FROM artifact_upload" in statement
            and not at_lease_read.is_set()
        ):
            at_lease_read.set()
            resume.wait(timeout=5)  # a claim that locks the row would block the first upload

    results: list[httpx.Response] = []

    def send_second() -> None:
        with httpx.Client(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {admin_token}"}
        ) as client:
            results.append(upload(client, second, filename="b.onnx"))

    event.listen(registry.engine, "before_cursor_execute", pause)
    racer = threading.Thread(target=send_second)
    try:
        racer.start()
        wait_until(at_lease_read.is_set, "the second upload is claiming the version")
        sender.send(first[MiB:])
        status, _headers, answer = sender.response()
        resume.set()
        racer.join()
    finally:
        resume.set()
        event.remove(registry.engine, "before_cursor_execute", pause)

    assert status == 201, answer
    assert_problem(results[0], 409)
    row = http.get(VERSION_PATH).json()
    assert (row["sha256"], row["sourcePath"]) == (sha(first), key_of(version))
    assert stored(registry, s3) == [key_of(version)]
    assert http.get(ARTIFACT).content == first
    assert leases(registry) == []


# -- one shared server per store: downloads, and uploads refused before the body -----------


@dataclass
class Site:
    """A server with version 1.0 uploaded, 2.0 without an artifact, and api-1 of format API."""

    live: LiveServer
    http: httpx.Client
    token: str
    registry: Registry
    s3: SeaweedS3 | None
    data: bytes
    key: str

    @property
    def etag(self) -> str:
        return f'"{sha(self.data)}"'

    def assert_unchanged(self) -> None:
        """Still only 1.0's artifact, no lease, and nothing half-written."""
        assert_no_artifact(self.http, f"/api/v1/models/{MODEL}/versions/2.0")
        assert_no_artifact(self.http, f"/api/v1/models/{MODEL}/versions/api-1")
        assert self.http.get(VERSION_PATH).json()["sha256"] == sha(self.data)
        assert stored(self.registry, self.s3) == [self.key]
        assert leases(self.registry) == []


@pytest.fixture(scope="module", params=["local", "s3"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    shutil.copyfile(sqlite_template, root / "modelreg.db")
    settings = Settings(
        data_dir=root,
        database_url=f"sqlite:///{root / 'modelreg.db'}",
        storage="local",
        credentials_file=root / "credentials",
        max_artifact_bytes=LIMIT,
    )
    s3 = None
    store = None
    if request.param == "s3":
        s3 = request.getfixturevalue("seaweed")
        store = s3.store(s3.new_bucket())
    registry = build_registry(settings, store=store)
    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    data = body(SMALL)
    try:
        with (
            LiveServer(registry) as live,
            httpx.Client(
                base_url=live.url, headers={"Authorization": f"Bearer {issued.token}"}, timeout=30
            ) as client,
        ):
            client.post(
                "/api/v1/models",
                json={"name": MODEL, "taskType": "ImageGeneration", "provider": "Internal"},
            ).raise_for_status()
            for number, fmt, parameters in (
                (VERSION, "ONNX", None),
                ("2.0", "ONNX", None),
                ("api-1", "API", {"endpoint": "https://x.test/v1"}),
            ):
                client.post(
                    f"/api/v1/models/{MODEL}/versions",
                    json={
                        "versionNumber": number,
                        "format": fmt,
                        "parameters": parameters,
                    },
                ).raise_for_status()
            response = upload(client, data)
            response.raise_for_status()
            yield Site(
                live, client, issued.token, registry, s3, data, response.json()["sourcePath"]
            )
    finally:
        registry.close()


@pytest.mark.parametrize(
    "if_none_match",
    [
        pytest.param("{etag}", id="same-etag"),
        pytest.param("W/{etag}", id="weak-same-etag"),
        pytest.param('"other", {etag}', id="in-a-list"),
        pytest.param("*", id="star"),
    ],
)
def test_if_none_match_gives_304(site: Site, if_none_match: str) -> None:
    response = site.http.get(
        ARTIFACT, headers={"If-None-Match": if_none_match.format(etag=site.etag)}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == site.etag


def test_if_none_match_with_another_etag_gives_the_artifact(site: Site) -> None:
    response = site.http.get(ARTIFACT, headers={"If-None-Match": f'"{sha(b"older")}"'})
    assert response.status_code == 200
    assert response.content == site.data
    assert response.headers["etag"] == site.etag


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        pytest.param("bytes=0-9", 0, 9, id="head"),
        pytest.param("bytes=1048570-1048580", 1048570, 1048580, id="across-a-chunk"),
        pytest.param("bytes=5-5", 5, 5, id="one-byte"),
        pytest.param("bytes=3145000-", 3145000, SMALL - 1, id="open-ended"),
        pytest.param("bytes=-10", SMALL - 10, SMALL - 1, id="suffix"),
        pytest.param(f"bytes=-{SMALL + 5}", 0, SMALL - 1, id="suffix-longer-than-the-file"),
        pytest.param(f"bytes=100-{SMALL + 100}", 100, SMALL - 1, id="end-past-the-file"),
        pytest.param("Bytes=0-0", 0, 0, id="unit-in-capitals"),
    ],
)
def test_range_gives_206(site: Site, range_header: str, first: int, last: int) -> None:
    response = site.http.get(ARTIFACT, headers={"Range": range_header})
    assert response.status_code == 206, response.text
    assert response.headers["content-range"] == f"bytes {first}-{last}/{SMALL}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.headers["etag"] == site.etag
    assert response.content == site.data[first : last + 1]


@pytest.mark.parametrize(
    "range_header",
    [
        pytest.param(f"bytes={SMALL}-", id="starts-at-the-end"),
        pytest.param(f"bytes={SMALL + 10}-{SMALL + 20}", id="past-the-end"),
        pytest.param("bytes=9-5", id="backwards"),
        pytest.param("bytes=-0", id="empty-suffix"),
        pytest.param("bytes=-", id="no-numbers"),
        pytest.param("bytes=abc", id="not-numbers"),
    ],
)
def test_unsatisfiable_range_gives_416(site: Site, range_header: str) -> None:
    response = site.http.get(ARTIFACT, headers={"Range": range_header})
    problem = assert_problem(response, 416)
    assert response.headers["content-range"] == f"bytes */{SMALL}"
    assert problem["size"] == SMALL


@pytest.mark.parametrize(
    "range_header",
    [
        pytest.param("bytes=0-1,5-6", id="several-ranges"),
        pytest.param("items=0-1", id="unknown-unit"),
    ],
)
def test_range_the_server_ignores_gives_the_whole_artifact(site: Site, range_header: str) -> None:
    response = site.http.get(ARTIFACT, headers={"Range": range_header})
    assert response.status_code == 200
    assert response.content == site.data


def test_download_without_an_artifact_is_404(site: Site) -> None:
    response = site.http.get(f"/api/v1/models/{MODEL}/versions/2.0/artifact")
    assert_problem(response, 404, "has no artifact")


def test_declared_length_above_the_limit_is_413_before_the_body(site: Site) -> None:
    sender = RawUpload(
        site.live.port,
        site.token,
        length=LIMIT + 1,
        path=f"/api/v1/models/{MODEL}/versions/2.0/artifact",
    )
    try:  # not one byte of body is sent: the answer cannot be waiting for it
        status, headers, answer = sender.response()
    finally:
        sender.close()
    assert status == 413
    assert headers["content-type"].startswith(PROBLEM)
    assert f"artifact of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes" in answer.decode()
    site.assert_unchanged()


@pytest.mark.parametrize(
    "checksum",
    [
        pytest.param("abc123", id="too-short"),
        pytest.param("z" * 64, id="not-hex"),
        pytest.param("a" * 65, id="too-long"),
        pytest.param("sha256:" + "a" * 64, id="prefixed"),
        pytest.param("a" * 128, id="sha512-sized"),
    ],
)
def test_malformed_checksum_is_400(site: Site, checksum: str) -> None:
    response = upload(
        site.http,
        body(1000),
        path=f"/api/v1/models/{MODEL}/versions/2.0/artifact",
        headers={"X-Checksum-Sha256": checksum},
    )
    assert_problem(response, 400, "X-Checksum-Sha256 must be 64 hexadecimal characters")
    site.assert_unchanged()


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("../../etc/passwd", id="path-traversal"),
        pytest.param("evil.exe", id="unsupported-suffix"),
        pytest.param(".hidden.onnx", id="leading-dot"),
        pytest.param("model weights.onnx", id="space"),
        pytest.param("..", id="dotdot"),
    ],
)
def test_bad_filename_is_422(site: Site, filename: str) -> None:
    response = upload(
        site.http,
        body(1000),
        path=f"/api/v1/models/{MODEL}/versions/2.0/artifact",
        filename=filename,
    )
    assert_problem(response, 422, "artifact filename")
    site.assert_unchanged()


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        pytest.param(
            f"/api/v1/models/nope/versions/{VERSION}/artifact", "'nope'", id="unknown-model"
        ),
        pytest.param(
            f"/api/v1/models/{MODEL}/versions/9.9/artifact", "'9.9'", id="unknown-version"
        ),
    ],
)
def test_unknown_model_or_version_is_404(site: Site, path: str, fragment: str) -> None:
    assert_problem(upload(site.http, body(1000), path=path), 404, fragment)
    site.assert_unchanged()


def test_version_with_an_artifact_is_409(site: Site) -> None:
    before = site.http.get(VERSION_PATH).json()
    response = upload(site.http, body(1000, seed=5))
    assert_problem(response, 409, "already has an artifact", sha(site.data))
    assert site.http.get(VERSION_PATH).json() == before
    assert site.http.get(ARTIFACT).content == site.data
    site.assert_unchanged()


def test_version_of_format_api_is_409(site: Site) -> None:
    response = upload(site.http, body(1000), path=f"/api/v1/models/{MODEL}/versions/api-1/artifact")
    assert_problem(response, 409, "format API has no artifact")
    site.assert_unchanged()


# -- uploads that are refused before anything is kept ---------------------------------------


def test_an_empty_artifact_is_422_and_nothing_is_kept(
    http: httpx.Client, version: dict[str, Any], nothing_kept: Callable[[], None]
) -> None:
    response = upload(http, b"")
    assert_problem(response, 422)
    assert "empty (0 bytes)" in response.json()["detail"]
    nothing_kept()


@pytest.mark.parametrize("status", ["Archived", "Failed"])
def test_an_upload_to_an_archived_or_failed_version_is_409(
    http: httpx.Client, registry: Registry, s3: SeaweedS3 | None, status: str
) -> None:
    created = http.post(
        "/api/v1/models",
        json={"name": MODEL, "taskType": "ImageGeneration", "provider": "Internal"},
    )
    assert created.status_code == 201, created.text
    made = http.post(f"/api/v1/models/{MODEL}/versions", json={"versionNumber": VERSION})
    assert made.status_code == 201, made.text
    moved = http.post(f"{VERSION_PATH}/transitions", json={"status": status, "reason": "done"})
    assert moved.status_code == 200, moved.text
    response = upload(http, body(1024))
    assert_problem(response, 409)
    assert response.json()["currentStatus"] == status
    assert f"is {status}" in response.json()["detail"]
    assert_no_artifact(http)
    assert stored(registry, s3) == []
    assert leases(registry) == []


def _torch_zip() -> bytes:
    """What ``torch.save`` writes (its zip layout: ``<archive>/data.pkl`` first), made with
    torch when it is installed."""
    torch = pytest.importorskip("torch")
    import io

    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(4)}, buffer)
    return buffer.getvalue()


def test_a_file_whose_content_contradicts_its_declared_format_is_422_naming_both(
    http: httpx.Client, version: dict[str, Any], nothing_kept: Callable[[], None]
) -> None:
    response = upload(http, _torch_zip(), filename="model.pt")
    assert_problem(response, 422)
    detail = response.json()["detail"]
    assert "a PyTorch file" in detail
    assert "declares format ONNX" in detail
    assert response.json()["declaredFormat"] == "ONNX"
    nothing_kept()
