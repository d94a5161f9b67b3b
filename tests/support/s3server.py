"""S3 for the tests: moto's S3 server on a loopback port, and a TCP proxy that can cut a connection.

Test modules load the fixtures with ``pytest_plugins = ["tests.support.s3server"]``:

* ``moto_s3`` (session): one moto server for the whole run, wrapped in :class:`MotoS3`, which
  makes fresh buckets, stores pointed at them, and a boto3 client to look behind the store.
* ``s3_proxy``: a :class:`CuttingProxy` in front of that server, for one test.
* ``moto_process``: a moto server of one test's own, run as a process (:class:`MotoProcess`),
  which the test can kill, as a crash of the S3 service, and start again on the same port.

The test modules also import from here before pytest loads it as a plugin, hence
PYTEST_DONT_REWRITE (this module has no asserts to rewrite).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import urllib3
from moto.server import ThreadedMotoServer

from registry.storage.s3 import S3Store

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # the S3 minimum
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials
REGION = "us-east-1"


def no_retry_http() -> urllib3.PoolManager:
    """An HTTP client for the minio SDK that fails at once instead of retrying with backoff."""
    return urllib3.PoolManager(
        retries=urllib3.Retry(total=0, redirect=False), timeout=urllib3.Timeout(connect=5, read=60)
    )


class MotoS3:
    def __init__(self, host: str, port: int) -> None:
        self.endpoint = f"{host}:{port}"
        self.url = f"http://{self.endpoint}"
        self._stores: list[S3Store] = []

    def new_bucket(self) -> str:
        bucket = f"test-{uuid.uuid4().hex[:20]}"
        with self.boto() as s3:
            s3.create_bucket(Bucket=bucket)
        return bucket

    def store(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        part_size: int = PART_SIZE,
        create_bucket: bool = False,
    ) -> S3Store:
        """An S3Store on ``bucket`` that does not retry (a dead endpoint fails at once)."""
        store = S3Store(
            endpoint=endpoint or self.endpoint,
            bucket=bucket,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
            region=REGION,
            part_size=part_size,
            create_bucket=create_bucket,
            http_client=no_retry_http(),
        )
        self._stores.append(store)
        return store

    @contextlib.contextmanager
    def boto(self) -> Iterator[Any]:
        """A boto3 S3 client on the server, to see what the store left behind."""
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        try:
            yield client
        finally:
            client.close()

    def objects(self, bucket: str) -> list[str]:
        with self.boto() as s3:
            listing = s3.list_objects_v2(Bucket=bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def multipart_uploads(self, bucket: str) -> list[str]:
        """Keys of the multipart uploads begun and neither completed nor aborted."""
        with self.boto() as s3:
            listing = s3.list_multipart_uploads(Bucket=bucket)
        return sorted(upload["Key"] for upload in listing.get("Uploads", []))

    def etag(self, bucket: str, key: str) -> str:
        with self.boto() as s3:
            etag: str = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        return etag.strip('"')

    def close(self) -> None:
        for store in self._stores:
            store.client._http.clear()  # the SDK offers no close()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    helper = MotoS3(host, port)
    try:
        yield helper
    finally:
        helper.close()
        server.stop()
        wsgi = server._server  # stop() leaves the socket open
        if wsgi is not None:
            wsgi.server_close()


class MotoProcess(MotoS3):
    """moto's S3 server as a process of its own, on a fixed loopback port.

    ``kill()`` is a crash of the S3 service (SIGKILL): connections in flight are reset and new
    ones refused. moto keeps everything in memory, so ``start()`` again brings back an empty
    service on the same port; a test that wants the data back puts it back.
    """

    def __init__(self, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        super().__init__("127.0.0.1", port)
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoProcess:
        assert self.proc is None or self.proc.poll() is not None, "moto is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited: {self.log_path.read_text(errors='replace')}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=2)
                return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("moto did not start within 60 s")
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the connections in flight."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        super().close()
        if self.running:
            self.kill()


@pytest.fixture
def moto_process(tmp_path: Path) -> Iterator[MotoProcess]:
    """A moto server process of this test's own, started; killed at the end."""
    moto = MotoProcess(tmp_path / "moto.log")
    try:
        yield moto.start()
    finally:
        moto.close()


class CuttingProxy:
    """Forwards TCP connections from a free loopback port to ``upstream``.

    ``cut_after(n)`` arms it: the connection that carries the n-th byte sent upstream from then
    on is reset in the middle of its request, once; later connections pass untouched. ``stop()``
    closes the port, so the endpoint becomes dead: connections are refused.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._budget: int | None = None
        self.cuts = 0
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def cut_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            self._start(self._connection, client, upstream)

    def _spend(self, nbytes: int) -> bool:
        """Count bytes going upstream; True when this chunk must be cut."""
        with self._lock:
            if self._budget is None:
                return False
            self._budget -= nbytes
            if self._budget > 0:
                return False
            self._budget = None
            self.cuts += 1
            return True

    def _connection(self, client: socket.socket, upstream: socket.socket) -> None:
        """Pump client → upstream here and upstream → client in a second thread."""
        down = self._start(self._pump_down, upstream, client)
        cut = False
        try:
            while data := client.recv(256 * 1024):
                if self._spend(len(data)):
                    cut = True
                    break
                upstream.sendall(data)
            else:
                upstream.shutdown(socket.SHUT_WR)
        except OSError:
            cut = True
        if cut:  # a reset for the client, mid-request, and nothing more for the server
            with contextlib.suppress(OSError):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
        down.join()
        with self._lock:
            self._sockets.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump_down(upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(256 * 1024):
                client.sendall(data)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            return

    def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() on Linux
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stop()
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
            if not threads:
                return
            for thread in threads:
                thread.join(timeout=10)


@pytest.fixture
def s3_proxy(moto_s3: MotoS3) -> Iterator[CuttingProxy]:
    host, port = moto_s3.endpoint.rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()
