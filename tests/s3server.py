"""S3 for the tests: moto's S3 server on a loopback port, and a TCP proxy that can cut a connection.

Test modules load the fixtures with ``pytest_plugins = ["tests.s3server"]``:

* ``moto_s3`` (session): one moto server for the whole run, wrapped in :class:`MotoS3`, which
  makes fresh buckets, stores pointed at them, and a boto3 client to look behind the store.
* ``s3_proxy``: a :class:`CuttingProxy` in front of that server, for one test.

The test modules also import from here before pytest loads it as a plugin, hence
PYTEST_DONT_REWRITE (this module has no asserts to rewrite).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
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
