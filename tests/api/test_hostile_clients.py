"""Hostile or merely curious clients.

Clients that hold connections without finishing a request: raw sockets against a real
``modelreg serve``. Each must lose its connection within the configured time, or get an error,
while normal requests go on being answered. And what anyone learns when a dependency fails."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import urllib3

from registry.services import Registry, build_registry
from registry.settings import Settings
from registry.storage import ArtifactStore, StoreUnavailable
from registry.storage.base import WriteProbe
from registry.storage.local import LocalStore
from registry.storage.s3 import S3Store
from tests.support.helpers import assert_problem, make_model, make_version, upload
from tests.support.live import Modelreg
from tests.support.live_server import LiveServer
from tests.support.ports import free_port

HEADER_TIMEOUT = 1
KEEP_ALIVE = 1
#: How long a test waits for the server to close a connection before calling it held for ever;
#: far above the limits under test, so that a slow machine does not fail it.
PATIENCE = 30.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Modelreg]:
    server = Modelreg(
        tmp_path_factory.mktemp("hostile"),
        env={
            "MODELREG_WORKER_ENABLED": "false",
            "MODELREG_CONTROLLER_ENABLED": "false",
            "MODELREG_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "MODELREG_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
            "MODELREG_MAX_HEADER_BYTES": "8192",
        },
    ).start()
    yield server
    server.stop()


@contextlib.contextmanager
def connection(live: Modelreg) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=PATIENCE)
    try:
        yield sock
    finally:
        sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes (True) or PATIENCE passes with it still open (False)."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
    return False


def healthy(live: Modelreg) -> bool:
    return httpx.get(f"{live.url}/healthz", timeout=PATIENCE).status_code == 200


def test_a_connection_that_sends_nothing_is_closed(live: Modelreg) -> None:
    with connection(live) as idle:
        assert healthy(live)  # others are served meanwhile
        assert closed_by_server(idle)


def test_headers_sent_a_byte_at_a_time_are_cut_off(live: Modelreg) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000 + b"\r\n\r\n"
    with connection(live) as slow:
        deadline = time.monotonic() + PATIENCE
        cut_off = False
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            readable, _, _ = select.select([slow], [], [], 0.1)
            if readable:
                cut_off = slow.recv(65536) == b""  # closed, and no response was sent
                break
            assert time.monotonic() < deadline, "the server held the slow connection"
        assert cut_off, "the whole request went through"
        assert healthy(live)


def test_many_idle_connections_do_not_stop_normal_requests(live: Modelreg) -> None:
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(connection(live)) for _ in range(50)]
        assert healthy(live)
        assert all(closed_by_server(sock) for sock in idle)
    assert healthy(live)


def test_an_idle_kept_alive_connection_is_closed(live: Modelreg) -> None:
    with connection(live) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        assert closed_by_server(sock)


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000, id="one-header"
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 100) for i in range(200)),
            id="many-headers",
        ),
        pytest.param(b"GET /healthz?" + b"q" * 20000 + b" HTTP/1.1\r\n", id="long-url"),
    ],
)
def test_oversized_headers_get_an_error(live: Modelreg, request_head: bytes) -> None:
    with connection(live) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request_head + b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert healthy(live)


def test_headers_just_under_the_limit_are_served(live: Modelreg) -> None:
    response = httpx.get(f"{live.url}/healthz", headers={"X-Pad": "a" * 6000}, timeout=PATIENCE)
    assert response.status_code == 200


# -- what a caller learns when a dependency fails ----------------------------------------------
#
# An unauthenticated /readyz says ok or unavailable per dependency, a 503 says which kind of
# dependency failed: never a host, a bucket, a path, an object key or the library's message.
# Those go to the server log, once per change of state.

STORE_DOWN = "the artifact store is unavailable; retry later"


@contextlib.contextmanager
def serving(settings: Settings, store: ArtifactStore) -> Iterator[tuple[Registry, LiveServer]]:
    registry = build_registry(settings, store=store)
    try:
        with LiveServer(registry) as server:
            yield registry, server
    finally:
        registry.close()


def readiness(server: LiveServer) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=PATIENCE)


def log_lines(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


def test_readyz_with_s3_down_names_no_host_bucket_or_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there: connections are refused
    store = S3Store(
        endpoint=f"127.0.0.1:{port}",
        bucket="internal-artifacts-7f3a",
        access_key="k",
        secret_key="s",
        secure=False,
        http_client=urllib3.PoolManager(retries=False, timeout=5),
    )
    caplog.set_level(logging.INFO, logger="modelreg.api")
    with serving(settings, store) as (_registry, server):
        for _ in range(3):
            answer = readiness(server)
            assert answer.status_code == 503
            assert answer.json() == {
                "status": "unavailable",
                "checks": {"database": "ok", "store": "unavailable"},
            }
            for secret in ("internal-artifacts-7f3a", str(port), "Connection", "Errno"):
                assert secret not in answer.text
    (line,) = log_lines(caplog, "not ready")  # once, not once per probe
    assert "internal-artifacts-7f3a" in line


def test_a_full_store_is_not_ready_until_it_has_room_again(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "small-disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        store = LocalStore(root, probe_every=0)
        caplog.set_level(logging.INFO, logger="modelreg.api")
        with serving(settings, store) as (_registry, server):
            assert readiness(server).status_code == 200
            filler = root / "filler"
            with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
                while True:  # until the disk is full
                    out.write(b"x" * 4096)
            for _ in range(2):
                full = readiness(server)
                assert full.status_code == 503, full.text
                assert full.json()["checks"] == {"database": "ok", "store": "unavailable"}
                assert str(root) not in full.text
            filler.unlink()
            assert readiness(server).status_code == 200
        (down,) = log_lines(caplog, "not ready")
        assert "No space left" in down
        assert len(log_lines(caplog, "ready again")) == 1
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_an_unwritable_store_is_not_ready_and_uploads_get_a_bare_503(
    settings: Settings, tmp_path: Path, admin_token: str
) -> None:
    store = LocalStore(tmp_path / "artifacts", probe_every=0)
    store.root.mkdir()
    with serving(settings, store) as (_registry, server):
        assert readiness(server).status_code == 200
        (store.root / ".tmp").rmdir()
        (store.root / ".tmp").write_bytes(b"")  # a file where the temporary directory belongs
        answer = readiness(server)
        assert answer.status_code == 503
        assert answer.json()["checks"]["store"] == "unavailable"
        headers = {"Authorization": f"Bearer {admin_token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=PATIENCE) as http:
            model = make_model(http, "m")
            version = make_version(http, "m", "1")
            refused = upload(http, "m", "1", b"onnx bytes", filename="model.onnx")
        body = assert_problem(refused, 503)
        assert body["detail"] == STORE_DOWN
        assert refused.headers["Retry-After"]
        for internal in (str(store.root), model["id"], version["id"], ".tmp", "Errno"):
            assert internal not in refused.text


def test_the_write_probe_writes_at_most_once_per_interval() -> None:
    clock = [100.0]
    writes: list[float] = []
    failing = [False]

    def write() -> None:
        writes.append(clock[0])
        if failing[0]:
            raise OSError(28, "No space left on device")

    probe = WriteProbe(write, every=5, clock=lambda: clock[0])
    for _ in range(10):
        probe.check()
    assert writes == [100.0]
    failing[0] = True
    clock[0] = 105.0
    with pytest.raises(StoreUnavailable, match="No space left"):
        probe.check()
    failing[0] = False
    clock[0] = 107.0
    with pytest.raises(StoreUnavailable):  # the last probe failed; the next is not due yet
        probe.check()
    clock[0] = 110.0
    probe.check()
    assert writes == [100.0, 105.0, 110.0]
