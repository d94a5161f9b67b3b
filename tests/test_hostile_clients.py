"""Clients that hold connections without finishing a request: raw sockets against a real
``modelreg serve``. Each must lose its connection within the configured time, or get an error,
while normal requests go on being answered."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.live import Modelreg

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
