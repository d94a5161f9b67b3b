"""``modelreg serve`` as processes: the API, the validation worker and the controller each in
its own; one SIGINT stops them all, a SIGKILLed serve takes them with it; ``--workers 2``
serves one port from two processes that both see a routing change, and one scrape of it
sums their metrics; and every accepted socket has ``TCP_NODELAY``."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import select

from api.server import uvicorn_config
from api.supervisor import MULTIPROCESS_DIR, forget_metrics
from registry.models import AIModel, AIModelDeployment
from registry.services import build_registry
from registry.services.routing import RouteEntry, set_routes
from registry.settings import Settings
from tests.support.ports import free_port


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        HOME=str(home),
        MODELREG_DATA_DIR=str(home / "data"),
        MODELREG_CREDENTIALS_FILE=str(home / "credentials"),
        MODELREG_CONTROLLER_METRICS_PORT="0",
        TMPDIR=str(home),  # where serve makes its metrics directory, even when it is killed
        **extra,
    )
    return env


def _wait(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


def _alive(pid: int) -> bool:
    """Running, or stopped: not gone and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Serve:
    """``modelreg serve --port P [--workers N]`` as a real process, its log in a file."""

    def __init__(self, home: Path, env: dict[str, str], *args: str) -> None:
        self.home, self.port = home, free_port()
        self.log_path = home / "serve.log"
        with self.log_path.open("wb") as log:
            argv = [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), *args]
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> None:
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited:\n{self.log()[-4000:]}")
            try:
                url = f"http://127.0.0.1:{self.port}/readyz"
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(answers, "serve to answer")

    def kinds(self, expected: int) -> dict[int, str]:
        """pid -> what the child runs (api.server, worker, controller)."""

        def listed() -> dict[int, str] | None:
            kinds = {pid: _cmdline(pid)[-1] for pid in _children(self.proc.pid)}
            kinds = {pid: "api" if "--fd" in _cmdline(pid) else k for pid, k in kinds.items()}
            return kinds if len(kinds) == expected else None

        found: dict[int, str] = _wait(listed, f"{expected} children")
        return found

    def token(self) -> str:
        lines = (self.home / "credentials").read_text().splitlines()
        return dict(line.split(" = ", 1) for line in lines if " = " in line)["token"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, **env: str) -> Serve:
        started.append(Serve(tmp_path, _env(tmp_path, **env), *args))
        return started[-1]

    yield start
    for s in started:
        s.close()


def test_one_sigint_stops_the_api_the_worker_and_the_controller(
    serving: Callable[..., Serve],
) -> None:
    serve = serving()
    serve.ready()
    kinds = serve.kinds(3)
    assert sorted(kinds.values()) == ["api", "controller", "worker"], kinds
    by_kind = {kind: pid for pid, kind in kinds.items()}
    _wait(lambda: "is the leader now" in serve.log(), "the controller to lead")
    log = serve.log()
    assert f"validation worker vm:{by_kind['worker']}:" in log, "the worker runs in its own process"
    assert f"controller vm:{by_kind['controller']}:" in log, "so does the controller"
    assert serve.proc.pid not in kinds
    serve.proc.send_signal(signal.SIGINT)
    assert serve.proc.wait(timeout=60) == 0, serve.log()[-4000:]
    assert [pid for pid in kinds if _alive(pid)] == [], "every child is gone"
    log = serve.log()
    for name in ("API process", "validation worker", "controller"):
        assert f"stopped the {name} (pid " in log, log[-3000:]
    assert not (serve.home / "data" / "serve.json").exists()


def test_a_killed_serve_takes_its_children_with_it(serving: Callable[..., Serve]) -> None:
    serve = serving(MODELREG_WORKER_ENABLED="false")
    serve.ready()
    kinds = serve.kinds(2)
    serve.proc.kill()
    serve.proc.wait(timeout=20)
    _wait(lambda: not any(_alive(pid) for pid in kinds), "the children to die", timeout=30)


def test_a_child_that_dies_stops_serve_with_exit_1(serving: Callable[..., Serve]) -> None:
    serve = serving(MODELREG_CONTROLLER_ENABLED="false")
    serve.ready()
    kinds = serve.kinds(2)
    worker = next(pid for pid, kind in kinds.items() if kind == "worker")
    os.kill(worker, signal.SIGKILL)
    assert serve.proc.wait(timeout=60) == 1
    assert f"the validation worker (pid {worker}) exited with code -9" in serve.log()
    assert not any(_alive(pid) for pid in kinds)


def _tcp_inodes(server_port: int) -> dict[int, int]:
    """Server side of every connection to ``server_port``: client port -> socket inode."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.rsplit(":", 1)[1], 16) == server_port and inode:
                found[int(remote.rsplit(":", 1)[1], 16)] = inode
    return found


def _holder(pids: list[int], inode: int) -> int | None:
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def _connection_per_process(
    serve: Serve, api: list[int]
) -> tuple[dict[int, http.client.HTTPConnection], list[http.client.HTTPConnection]]:
    """One kept-alive connection per API process (pid -> it), found by opening connections
    until each process holds one, and every connection opened (to close)."""
    by_pid: dict[int, http.client.HTTPConnection] = {}
    opened = []
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
        conn.connect()
        opened.append(conn)
        client_port = conn.sock.getsockname()[1]
        inode = _wait(lambda p=client_port: _tcp_inodes(serve.port).get(p), "the accepted socket")
        pid = _wait(lambda i=inode: _holder(api, i), "the process holding it")
        by_pid.setdefault(pid, conn)
        if len(by_pid) == len(api):
            break
    assert sorted(by_pid) == sorted(api), "every API process accepts connections"
    return by_pid, opened


def _route(settings: Settings, weights: dict[str, int]) -> None:
    """Make ``weights`` (version number -> weight) the model's routing set, as the controller
    writes it: from another process."""
    from registry.models import AIModelVersion

    registry = build_registry(settings)
    try:
        with registry.sessions.begin() as s:
            model_id = s.scalar(select(AIModel.id).where(AIModel.name == "m"))
            assert model_id is not None
            rows = s.execute(
                select(AIModelVersion.version_number, AIModelDeployment)
                .join(AIModelDeployment, AIModelDeployment.model_version_id == AIModelVersion.id)
                .where(AIModelVersion.version_number.in_(weights))
            ).all()
            entries = [
                RouteEntry(
                    dep.id,
                    dep.model_version_id,
                    number,
                    "http://10.0.0.1:9000",
                    weights[number],
                    "stable",
                )
                for number, dep in rows
            ]
            set_routes(
                s,
                model_id=model_id,
                environment="production",
                routes=entries,
                deployment_id=entries[0].deployment_id,
                actor="test",
                reason="test",
            )
    finally:
        registry.close()


def test_two_api_processes_serve_one_port_and_both_see_a_routing_change(
    serving: Callable[..., Serve],
) -> None:
    serve = serving(
        "--workers", "2", MODELREG_WORKER_ENABLED="false", MODELREG_CONTROLLER_ENABLED="false"
    )
    serve.ready()
    api = list(serve.kinds(2))
    headers = {"Authorization": f"Bearer {serve.token()}"}
    base = f"http://127.0.0.1:{serve.port}/api/v1"
    with httpx.Client(base_url=base, headers=headers, timeout=30) as h:
        body = {"name": "m", "taskType": "ImageGeneration", "provider": "Internal"}
        h.post("/models", json=body).raise_for_status()
        versions = [
            h.post("/models/m/versions", json={"versionNumber": v}).raise_for_status().json()["id"]
            for v in ("1.0", "2.0")
        ]
    settings = Settings(data_dir=serve.home / "data")
    registry = build_registry(settings)
    with registry.sessions.begin() as s:
        for vid in versions:
            s.add(AIModelDeployment(model_version_id=uuid.UUID(vid), environment="production"))
    registry.close()
    _route(settings, {"1.0": 100})

    by_pid, opened = _connection_per_process(serve, api)

    def selected(conn: http.client.HTTPConnection) -> str | None:
        conn.request("GET", "/api/v1/models/m/endpoint", headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            return None
        return str(json.loads(data)["selected"]["versionNumber"])

    for conn in by_pid.values():
        _wait(lambda c=conn: selected(c) == "1.0", "both processes to serve 1.0")
    _route(settings, {"2.0": 100})
    for pid, conn in by_pid.items():
        _wait(lambda c=conn: selected(c) == "2.0", f"process {pid} to see the change", timeout=30)
    for conn in opened:
        conn.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_every_accepted_socket_has_tcp_nodelay(tmp_path: Path, loop: str) -> None:
    """On a listening socket made with proto 0, as uvicorn's own ``--workers`` makes it:
    asyncio then leaves Nagle on for the sockets it accepts."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    settings = Settings(data_dir=tmp_path, log_level="WARNING")
    config = uvicorn_config(app, settings)
    config.lifespan, config.loop = "off", loop
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started, "the server")
        with socket.create_connection(listener.getsockname()) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 204")
            (connection,) = server.server_state.connections
            accepted = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def _scrape(conn: http.client.HTTPConnection) -> list[Sample]:
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 200, text
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_one_scrape_sums_the_metrics_of_every_api_process(
    serving: Callable[..., Serve], tmp_path: Path
) -> None:
    # What a SIGKILLed serve (pid 2**22 + 1: above pid_max, never running) left behind.
    stale = tmp_path / f"modelreg-metrics-{2**22 + 1}-abc"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"")
    serve = serving("--workers", "2", MODELREG_CONTROLLER_ENABLED="false")
    serve.ready()
    kinds = serve.kinds(3)
    api = [pid for pid, kind in kinds.items() if kind == "api"]
    (shared,) = {_environ(pid).get(MULTIPROCESS_DIR) for pid in kinds}  # the worker's too
    assert shared is not None
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    assert Path(shared).parent == tmp_path
    assert not stale.exists(), "a directory of a serve that is gone is removed at start"
    by_pid, opened = _connection_per_process(serve, api)
    sent = dict(zip(api, (3, 5), strict=True))
    for pid, conn in by_pid.items():
        for _ in range(sent[pid]):
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    healthz = {"route": "/healthz", "method": "GET"}
    for pid, conn in by_pid.items():  # whichever process answers the scrape
        samples = _scrape(conn)
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
        key = tuple(sorted({**healthz, "status": "200"}.items()))
        assert values[("modelreg_http_requests_total", key)] == 8, pid
        count = ("modelreg_http_request_duration_seconds_count", tuple(sorted(healthz.items())))
        assert values[count] == 8, pid
        assert not [s for s in samples if "pid" in s.labels], "summed: no per-process series"
        # Read from the database once, by the process that answers; and one leader gauge.
        for name, labels in (
            ("modelreg_deployments", {"status": "Active"}),
            ("modelreg_validation_queue_depth", {}),
            ("modelreg_controller_leader", {}),
        ):
            found = [s.value for s in samples if s.name == name and s.labels == labels]
            assert found == [0], (pid, name, found)
    for conn in opened:
        conn.close()
    serve.proc.send_signal(signal.SIGINT)
    assert serve.proc.wait(timeout=60) == 0, serve.log()[-4000:]
    assert not os.path.exists(shared), "serve removes the directory on exit"


def test_the_live_gauges_of_a_process_that_died_are_no_longer_summed(tmp_path: Path) -> None:
    """What ``serve`` does when a child exits: its leader gauge (1) leaves the sum."""
    env = {**os.environ, MULTIPROCESS_DIR: str(tmp_path)}
    code = "from registry.metrics import CONTROLLER_LEADER as g, HTTP_REQUESTS as c\n"
    code += "g.set(1); c.labels('/x', 'GET', '200').inc()"
    child = subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert child.returncode == 0

    def summed() -> dict[str, float]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        return {s.name: s.value for m in registry.collect() for s in m.samples}

    pid = int(next(tmp_path.glob("gauge_livemax_*.db")).stem.rsplit("_", 1)[1])
    assert summed()["modelreg_controller_leader"] == 1
    forget_metrics(tmp_path, pid)
    assert "modelreg_controller_leader" not in summed()
    assert summed()["modelreg_http_requests_total"] == 1, "a count stays in the total"
