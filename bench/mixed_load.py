"""Mixed load: resolvers, feedback posters, uploaders and a canary rollout at once.

    python -m bench.mixed_load [--db postgres|sqlite|both] [--seconds 60] [--baseline-seconds 15]
                               [--sweep 10,25,50] [--json out.json]

For each database it starts a real ``modelreg serve`` (API, validation worker and rollout
controller, each a process of its own under it, the local deployer running real model-server
processes, the local artifact store) on a fresh database: PostgreSQL (a database
``modelreg_bench`` dropped and created at ``--pg``) or the embedded SQLite default (a file in
a temporary directory). It creates one key per client kind, each with only the scope it
needs, and a model with a validated stable version deployed to production plus validated
candidate versions. Then:

* **baselines**: each operation ALONE for ``--baseline-seconds`` (the server otherwise idle,
  apart from its worker and controller);
* **mixed**: all of them at once for ``--seconds``:

  - ``resolve``: 200 keep-alive connections (``wrk``, one thread, a Lua script) calling
    ``GET /api/v1/models/{name}/endpoint?environment=production&key=user-N``, N random;
  - ``feedback``: 50 connections (a second ``wrk``) POSTing ``{"items": [...]}`` batches of
    100 items to ``/api/v1/feedback``;
  - ``upload``: 5 Python threads, each with a key of its own (one key may have 4 uploads in
    progress), looping: create a version, then stream a 4 MiB artifact to it
    (``PUT .../artifact``). Every upload queues a validation run, which the worker runs as in
    production (in spawned child processes);
  - ``canary``: one rollout at a time, canary 10% / 50% / 100% with 3 s pauses and
    ``requireTraffic`` off (the benchmark resolves endpoints but sends no inference traffic to
    the model servers, so a step's analysis would wait for it forever), the next one (the next
    candidate version) started as soon as the last one is Active; a rollout that does not end
    in 180 s is aborted, so the next one can start;

* **sweep** (``--sweep``): feedback posters alone at 10, 25 and 50 connections, 10 s each, to
  show where the database's single writer stops scaling.

Each wrk connection waits a random 0-1 s before its first request: 200 connections opened in
the same millisecond on a busy server sometimes wait 3-4 s for their first answer (see
docs/benchmarks.md), which is not what this benchmark measures.

For each operation it reports throughput, p50/p95/p99 latency and the error count (non-2xx,
socket errors, timeouts; wrk's timeout is ``--timeout``, 10 s), and the ratio of each against
the same operation's baseline. For the canary the "latency" is the step lag: how late each
step came after it was due (the previous step plus its pause); its throughput is steps per
minute, and the time from creation to the first step (the candidate's model server starting)
is reported apart. The RSS of ``modelreg serve`` (``VmRSS`` of the supervisor and its direct
children: the API, the worker and the controller; the model servers and validator children
are their children, not counted) is sampled every second: start, end, max and the
least-squares slope. Machine CPU use (``/proc/stat``) and serve's own CPU (the same
processes) are recorded too, so a machine shared with other work shows.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, text

from bench.resolve import check_wrk
from bench.upload import Children, _sigterm, free_port, machine_info, source_info

DEFAULT_PG = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
BENCH_DB = "modelreg_bench"
MODEL = "bench-mixed"
CANDIDATES = 12
FEEDBACK_BATCH = 100
ARTIFACT_MIB = 4
STEP_PAUSE_S = 3.0
OPS = ("resolve", "feedback", "upload", "canary")
TERMINAL = ("Active", "RolledBack", "Failed")


# -- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    pid: int
    home: Path
    admin: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    db_url: str = ""

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def model_server_pids(self) -> list[int]:
        pids = []
        for record in (self.home / "data" / "servers" / "instances").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pid = int(json.loads(record.read_text())["pid"])
                if Path(f"/proc/{pid}").exists():
                    pids.append(pid)
        return pids

    def kill_model_servers(self) -> None:
        for pid in self.model_server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def recreate_pg(admin_url: str) -> str:
    admin = make_url(admin_url)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    engine.dispose()
    return admin.set(database=BENCH_DB).render_as_string(hide_password=False)


def serve_until_ready(
    children: Children,
    name: str,
    port: int,
    home: Path,
    env: dict[str, str],
    *,
    workers: int = 1,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """``modelreg serve --workers N`` on ``port`` with ``env``, once ``/readyz`` answers: the
    process, its URL and the admin token it wrote to ``home``'s credentials."""
    argv = [sys.executable, "-m", "api.cli", "serve", "--port", str(port)]
    argv += ["--workers", str(workers)]
    proc = children.start(name, argv, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited:\n{children.log_tail(name)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"serve did not start:\n{children.log_tail(name)}")
        time.sleep(0.2)
    token = (home / "credentials").read_text().split("token = ")[1].strip()
    return proc, url, token


def start_server(
    children: Children,
    home: Path,
    db: str,
    pg: str,
    extra_env: dict[str, str] | None = None,
    *,
    workers: int = 1,
) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    port = free_port()
    env.update(
        HOME=str(home),
        MODELREG_DATA_DIR=str(home / "data"),
        MODELREG_CREDENTIALS_FILE=str(home / "credentials"),
        MODELREG_LOG_LEVEL="WARNING",  # INFO logs every request (uvicorn's access log)
    )
    db_url = ""
    if db == "postgres":
        db_url = recreate_pg(pg)
        env["MODELREG_DATABASE_URL"] = db_url
        env["MODELREG_AUTO_MIGRATE"] = "true"
    env.update(extra_env or {})
    proc, url, token = serve_until_ready(children, f"serve-{db}", port, home, env, workers=workers)
    server = Server(url, proc.pid, home, {"Authorization": f"Bearer {token}"}, db_url=db_url)
    with httpx.Client(base_url=url, headers=server.admin, timeout=30) as http:
        for who, scopes in (
            ("resolver", ["models:read"]),
            ("feedback", ["feedback:write"]),
            ("uploader", ["models:write"]),
            ("deployer", ["deployments:write", "models:read"]),
        ):
            r = http.post("/api/v1/keys", json={"name": f"bench-{who}", "scopes": scopes})
            r.raise_for_status()
            server.tokens[who] = r.json()["token"]
    return server


def setup_stable_models(
    server: Server, models: list[str], numbers: list[str], *, timeout: float
) -> None:
    """Each of ``models`` with versions ``numbers`` (tiny ONNX models, each validated), and
    the first of them Active in production: the stable side a rollout starts from."""
    from tests.support.onnx_models import add_model

    with httpx.Client(base_url=server.url, headers=server.admin, timeout=60) as http:
        for m in models:
            http.post(
                "/api/v1/models",
                json={"name": m, "taskType": "ImageGeneration", "provider": "Internal"},
            ).raise_for_status()
            for i, number in enumerate(numbers):
                http.post(
                    f"/api/v1/models/{m}/versions", json={"versionNumber": number}
                ).raise_for_status()
                http.put(
                    f"/api/v1/models/{m}/versions/{number}/artifact",
                    content=add_model(constant=float(i + 1)),
                    params={"filename": "model.onnx"},
                ).raise_for_status()
        deadline = time.monotonic() + timeout
        for m in models:
            for number in numbers:
                while True:
                    runs = http.get(f"/api/v1/models/{m}/versions/{number}/validations").json()
                    if runs and runs[0]["status"] == "Done":
                        result = runs[0]["result"]
                        if result["functionalStatus"] != "Passed":
                            raise RuntimeError(f"validation of {m} {number} did not pass: {result}")
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"validation of {m} {number} did not finish")
                    time.sleep(0.3)
        ids = []
        for m in models:
            r = http.post(
                "/api/v1/deployments",
                json={"model": m, "versionNumber": numbers[0], "environment": "production"},
            )
            r.raise_for_status()
            ids.append(r.json()["id"])
        for dep_id in ids:
            while True:
                dep = http.get(f"/api/v1/deployments/{dep_id}").json()
                if dep["status"] in TERMINAL:
                    if dep["status"] != "Active":
                        raise RuntimeError(f"a stable deployment ended {dep['status']}: {dep}")
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the stable deployments did not become Active")
                time.sleep(0.3)


def setup_model(server: Server) -> list[str]:
    """The model, its stable version 1.0 Active in production, and validated candidates."""
    numbers = ["1.0", *(f"1.{i}" for i in range(1, CANDIDATES + 1))]
    setup_stable_models(server, [MODEL], numbers, timeout=300)
    return numbers


# -- wrk --------------------------------------------------------------------------------------

LUA_COMMON = r"""
-- Connections start over the first second, not all in the same millisecond: a burst of 200
-- new connections on a loaded server sometimes leaves some of them unanswered for 3-4 s (see
-- docs/benchmarks.md), a connection storm this benchmark is not about.
local started = 0
delay = function()
  if started < wrk.connections_total then
    started = started + 1
    return math.random(0, 1000)
  end
  return 0
end
codes = {}
response = function(status, headers, body)
  if status ~= 200 and status ~= 201 then
    codes[status] = (codes[status] or 0) + 1
  end
end
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
done = function(summary, latency, requests)
  local e = summary.errors
  local seen = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do
      table.insert(seen, string.format('"%d":%d', k, v))
    end
  end
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"codes":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean, table.concat(seen, ",")))
end
"""

LUA_RESOLVE = r"""
wrk.headers["Authorization"] = "Bearer %(token)s"
local path = "/api/v1/models/%(model)s/endpoint?environment=production&key=user-"
request = function()
  return wrk.format("GET", path .. math.random(1, 1000000))
end
"""

LUA_FEEDBACK = r"""
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "application/json"
local versions = {%(versions)s}
request = function()
  local items = {}
  for i = 1, %(batch)d do
    items[i] = string.format('{"model":"%(model)s","versionNumber":"%%s","rating":%%d}',
      versions[math.random(#versions)], math.random(1, 5))
  end
  return wrk.format("POST", "/api/v1/feedback", nil,
    '{"items":[' .. table.concat(items, ",") .. ']}')
end
"""


def write_lua(work: Path, name: str, body: str, *, connections: int, **values: Any) -> Path:
    path = work / f"{name}.lua"
    common = LUA_COMMON.replace("wrk.connections_total", str(connections))
    path.write_text((body % values) + common)
    return path


class Wrk:
    """One wrk process; ``result`` once it has finished."""

    def __init__(
        self, wrk: str, url: str, script: Path, *, connections: int, seconds: float, timeout: int
    ) -> None:
        argv = [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout}s",
            "-s",
            str(script),
            url,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate()
        line = next((x for x in out.splitlines() if x.startswith("JSON ")), None)
        if line is None:
            raise RuntimeError(f"cannot read wrk's output:\n{out}")
        raw = json.loads(line[5:])
        seconds = raw["duration_us"] / 1e6
        socket_errors = raw["connect"] + raw["read"] + raw["write"]
        return {
            "count": raw["requests"],
            "seconds": seconds,
            "throughput": raw["requests"] / seconds if seconds else 0.0,
            "p50_ms": raw["p50_us"] / 1e3,
            "p95_ms": raw["p95_us"] / 1e3,
            "p99_ms": raw["p99_us"] / 1e3,
            "max_ms": raw["max_us"] / 1e3,
            "errors": raw["status"] + socket_errors + raw["timeout"],
            "error_detail": {
                "non_2xx": raw["status"],
                "socket": socket_errors,
                "timeout": raw["timeout"],
                "codes": raw["codes"],
            },
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- Python clients: uploaders and the canary driver ------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples)

    def at(q: float) -> float:
        # nearest rank, as wrk does
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))] * 1e3

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": ordered[-1] * 1e3}


class Uploaders:
    """``n`` threads, each: create a version of ``model``, upload a 4 MiB artifact to it."""

    def __init__(self, server: Server, model: str, n: int, artifact: bytes) -> None:
        self.server, self.model, self.n, self.artifact = server, model, n, artifact
        self.sha = hashlib.sha256(artifact).hexdigest()
        self.stop_at = 0.0
        self.upload_s: list[float] = []
        self.create_s: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.tokens: list[str] = []
        with httpx.Client(base_url=server.url, headers=server.admin, timeout=60) as http:
            http.post(
                "/api/v1/models",
                json={"name": model, "taskType": "ImageGeneration", "provider": "Internal"},
            ).raise_for_status()
            for i in range(n):  # a key each: one key may have 4 uploads in progress
                r = http.post(
                    "/api/v1/keys",
                    json={"name": f"{model}-uploader-{i}", "scopes": ["models:write"]},
                )
                r.raise_for_status()
                self.tokens.append(r.json()["token"])

    def start(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.stop_at = self.started + seconds
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[i]}", "X-Checksum-Sha256": self.sha}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=60) as http:
            n = 0
            while time.monotonic() < self.stop_at:
                n += 1
                number = f"u{i}.{n}"
                try:
                    t0 = time.monotonic()
                    r = http.post(
                        f"/api/v1/models/{self.model}/versions", json={"versionNumber": number}
                    )
                    t1 = time.monotonic()
                    if r.status_code != 201:
                        self._error(f"create {r.status_code} {r.text[:300]}")
                        continue
                    r = http.put(
                        f"/api/v1/models/{self.model}/versions/{number}/artifact",
                        content=self.artifact,
                        params={"filename": "model.onnx"},
                    )
                    t2 = time.monotonic()
                except httpx.HTTPError as exc:
                    self._error(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    self.create_s.append(t1 - t0)
                if r.status_code != 201:
                    self._error(f"upload {r.status_code} {r.text[:300]}")
                    continue
                with self.lock:
                    self.upload_s.append(t2 - t1)

    def _error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def result(self) -> dict[str, Any]:
        for t in self.threads:
            t.join()
        seconds = max(time.monotonic() - self.started, 1e-9)
        count = len(self.upload_s)
        return {
            "count": count,
            "seconds": seconds,
            "throughput": count / seconds,
            "mib_per_s": count * len(self.artifact) / 2**20 / seconds,
            **percentiles(self.upload_s),
            "create_version": {"count": len(self.create_s), **percentiles(self.create_s)},
            "errors": len(self.errors),
            "error_detail": self.errors[:20],
        }

    def drop(self) -> None:
        """Delete the model: its versions, artifacts and queued validations go with it."""
        with httpx.Client(base_url=self.server.url, headers=self.server.admin, timeout=120) as h:
            r = h.delete(f"/api/v1/models/{self.model}")
            if r.status_code != 204:
                print(f"   (could not delete {self.model}: {r.status_code} {r.text[:200]})")


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Canary:
    """One canary rollout at a time over the candidate versions, each started when the last
    one ends; records when each step happened."""

    def __init__(self, server: Server, numbers: list[str], start_index: int) -> None:
        self.server = server
        self.numbers = numbers
        self.next = start_index
        self.stop_at = 0.0
        self.window = (0.0, 0.0)
        self.rollouts: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.thread: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        self.window = (time.time(), time.time() + seconds)
        self.stop_at = time.monotonic() + seconds
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.server.url, headers=self.server.headers("deployer"), timeout=60
        ) as http:
            while time.monotonic() < self.stop_at:
                number = self.numbers[self.next % len(self.numbers)]
                self.next += 1
                try:
                    self.rollouts.append(self._one(http, number))
                except (httpx.HTTPError, RuntimeError) as exc:
                    self.errors.append(f"{number}: {type(exc).__name__}: {exc}")
                    time.sleep(1)

    def _one(self, http: httpx.Client, number: str) -> dict[str, Any]:
        steps = [
            {"weight": 10, "pause": f"{STEP_PAUSE_S:g}s"},
            {"weight": 50, "pause": f"{STEP_PAUSE_S:g}s"},
            {"weight": 100},
        ]
        r = http.post(
            "/api/v1/deployments",
            json={
                "model": MODEL,
                "versionNumber": number,
                "environment": "production",
                "strategyParams": {
                    "steps": steps,
                    "scaleDownDelay": "10s",
                    # No inference traffic reaches the model servers here (see the docstring).
                    "analysis": {"requireTraffic": False},
                },
            },
        )
        if r.status_code != 202:
            raise RuntimeError(f"deploy answered {r.status_code}: {r.text[:300]}")
        dep_id = r.json()["id"]
        deadline = time.monotonic() + 180
        while True:
            time.sleep(0.25)
            g = http.get(f"/api/v1/deployments/{dep_id}")
            if g.status_code != 200:
                raise RuntimeError(f"GET deployment answered {g.status_code}")
            dep = g.json()
            if dep["status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                # Out of the way of the next one (a rollout in progress refuses another).
                http.post(f"/api/v1/deployments/{dep_id}/abort", json={"reason": "bench timeout"})
                raise RuntimeError(f"rollout of {number} did not finish: {dep['status']}")
        ev = http.get(f"/api/v1/deployments/{dep_id}/events")
        if ev.status_code != 200:
            raise RuntimeError(f"GET events answered {ev.status_code}")
        events = ev.json()
        created = next(_at(e["at"]) for e in events if e["kind"] == "created")
        marks = [(_at(e["at"]), e["details"].get("weight")) for e in events if e["kind"] == "step"]
        marks += [(_at(e["at"]), 100) for e in events if e["kind"] == "promoted"]
        if dep["status"] != "Active":
            self.errors.append(f"{number}: rollout ended {dep['status']}")
        return {"version": number, "status": dep["status"], "created": created, "steps": marks}

    def result(self) -> dict[str, Any]:
        if self.thread is not None:
            self.thread.join()
        lo, hi = self.window
        lags: list[float] = []
        first: list[float] = []
        steps_in_window = 0
        for ro in self.rollouts:
            previous = None
            for at, _weight in ro["steps"]:
                if lo <= at <= hi:
                    steps_in_window += 1
                if previous is None:
                    first.append(at - ro["created"])
                else:
                    lags.append(max(0.0, at - previous - STEP_PAUSE_S))
                previous = at
        minutes = (hi - lo) / 60
        return {
            "count": steps_in_window,
            "seconds": hi - lo,
            "throughput": steps_in_window / (hi - lo),
            "steps_per_min": steps_in_window / minutes if minutes else 0.0,
            "rollouts": len(self.rollouts),
            "rollouts_active": sum(1 for r in self.rollouts if r["status"] == "Active"),
            **percentiles(lags),
            "lag_samples": len(lags),
            "first_step_s": percentiles(first),
            "errors": len(self.errors),
            "error_detail": self.errors[:20],
            "timeline": self.rollouts,
        }


# -- /proc ------------------------------------------------------------------------------------


def serve_pids(pid: int) -> list[int]:
    """``modelreg serve``'s supervisor and its direct children (API, worker, controller)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *map(int, children)]


def tree_rss_mb(pid: int) -> float | None:
    values = [v for p in serve_pids(pid) if (v := rss_mb(p)) is not None]
    return sum(values) if values else None


def tree_cpu_s(pid: int) -> dict[int, float]:
    return {p: cpu_s(p) for p in serve_pids(pid)}


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return None


def cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def ours_cpu() -> dict[tuple[int, int], float]:
    """CPU seconds so far of each process of this benchmark, keyed by (pid, start time): this
    process, wrk, modelreg serve, its model servers and validator children (those that exited
    are in their parent's cutime), and the PostgreSQL backends connected to the bench
    database."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    stat: dict[int, tuple[int, float]] = {}
    pg: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent[pid] = int(fields[1])
            stat[pid] = (int(fields[19]), sum(int(f) for f in fields[11:15]) / ticks)
            if BENCH_DB.encode() in (entry / "cmdline").read_bytes():
                pg.add(pid)
    me = os.getpid()
    ours = {me} | pg
    for pid in parent:
        p, hops = pid, 0
        while p > 1 and hops < 50:
            if p == me:
                ours.add(pid)
                break
            p, hops = parent.get(p, 0), hops + 1
    return {(pid, stat[pid][0]): stat[pid][1] for pid in ours if pid in stat}


def cpu_since(before: dict[tuple[int, int], float]) -> float:
    """CPU seconds the benchmark's processes used since ``before`` (a process that ended in
    between, and was not reaped by one of them, is missed: a lower bound)."""
    return sum(cpu - before.get(key, 0.0) for key, cpu in ours_cpu().items())


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Sampler:
    """serve's RSS (supervisor, API, worker, controller) every ``interval`` s, their CPU, and
    the machine's CPU."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.t0 = time.monotonic()
        self.cpu0 = tree_cpu_s(self.pid)
        self.busy0 = machine_busy()
        self.ours0 = ours_cpu()
        self.load0 = os.getloadavg()[0]
        self._sample()
        self.thread.start()
        return self

    def _sample(self) -> None:
        value = tree_rss_mb(self.pid)
        if value is not None:
            self.samples.append((time.monotonic() - self.t0, value))

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.seconds = time.monotonic() - self.t0
        cpu1 = tree_cpu_s(self.pid)
        self.cpu = sum(c - self.cpu0.get(p, 0.0) for p, c in cpu1.items())
        busy1 = machine_busy()
        self.busy = (busy1[0] - self.busy0[0]) / max(1, busy1[1] - self.busy0[1])
        self.ours = cpu_since(self.ours0) / self.seconds

    def result(self) -> dict[str, Any]:
        ts = [t for t, _ in self.samples]
        vs = [v for _, v in self.samples]
        slope = 0.0
        if len(ts) > 2 and statistics.pvariance(ts) > 0:
            slope = statistics.linear_regression(ts, vs).slope * 60
        second_half = [(t, v) for t, v in self.samples if t >= self.seconds / 2]
        slope2 = 0.0
        if len(second_half) > 2:
            t2, v2 = zip(*second_half, strict=True)
            if statistics.pvariance(t2) > 0:
                slope2 = statistics.linear_regression(t2, v2).slope * 60
        return {
            "rss_start_mb": vs[0] if vs else None,
            "rss_end_mb": vs[-1] if vs else None,
            "rss_max_mb": max(vs) if vs else None,
            "rss_slope_mb_per_min": slope,
            "rss_slope_second_half_mb_per_min": slope2,
            "serve_cpu_s": self.cpu,
            "serve_cpu_cores": self.cpu / self.seconds,
            "machine_busy": self.busy,
            "ours_cores": self.ours,
            "others_cores": max(0.0, self.busy * (os.cpu_count() or 1) - self.ours),
            "loadavg_1m_at_start": self.load0,
            "samples": self.samples,
        }


# -- phases -----------------------------------------------------------------------------------


@dataclass
class Bench:
    wrk: str
    work: Path
    server: Server
    numbers: list[str]
    timeout: int
    canary_next: int = 0
    phase_no: int = 0

    def phase(
        self, name: str, seconds: float, ops: dict[str, int], *, quiet: bool = False
    ) -> dict[str, Any]:
        """Run the operations in ``ops`` (operation → concurrency) together for ``seconds``."""
        self.phase_no += 1
        srv = self.server
        if not quiet:
            print(f"-- {name}: {ops}, {seconds:g} s", flush=True)
        wrks: dict[str, Wrk] = {}
        uploaders = canary = None
        if "upload" in ops:
            uploaders = Uploaders(
                srv,
                f"bench-up-{self.phase_no}",
                ops["upload"],
                os.urandom(ARTIFACT_MIB * 2**20),
            )
        if "canary" in ops:
            canary = Canary(srv, self.numbers[1:] + self.numbers[:1], self.canary_next)
        scripts = {}
        if "resolve" in ops:
            scripts["resolve"] = write_lua(
                self.work,
                "resolve",
                LUA_RESOLVE,
                connections=ops["resolve"],
                token=srv.tokens["resolver"],
                model=MODEL,
            )
        if "feedback" in ops:
            scripts["feedback"] = write_lua(
                self.work,
                "feedback",
                LUA_FEEDBACK,
                connections=ops["feedback"],
                token=srv.tokens["feedback"],
                model=MODEL,
                batch=FEEDBACK_BATCH,
                versions=",".join(f'"{n}"' for n in self.numbers[:4]),
            )
        try:
            with Sampler(srv.pid) as sampler:
                for op, script in scripts.items():
                    wrks[op] = Wrk(
                        self.wrk,
                        srv.url,
                        script,
                        connections=ops[op],
                        seconds=seconds,
                        timeout=self.timeout,
                    )
                if uploaders is not None:
                    uploaders.start(seconds)
                if canary is not None:
                    canary.start(seconds)
                results: dict[str, Any] = {op: w.result() for op, w in wrks.items()}
                if uploaders is not None:
                    results["upload"] = uploaders.result()
                time.sleep(max(0.0, sampler.t0 + seconds - time.monotonic()))
            if canary is not None:
                results["canary"] = canary.result()  # waits for the rollout in flight
                self.canary_next = canary.next
        finally:
            for w in wrks.values():
                w.stop()
        validations = self.validations()
        if uploaders is not None:
            uploaders.drop()
        out = {
            "name": name,
            "seconds": seconds,
            "ops": ops,
            "results": results,
            "process": sampler.result(),
            "validations": validations,
        }
        if not quiet:
            for op, r in results.items():
                print(f"   {op:9} {_line(r)}", flush=True)
            p = out["process"]
            print(
                f"   serve RSS {p['rss_start_mb']:.0f} -> {p['rss_end_mb']:.0f} MB "
                f"(max {p['rss_max_mb']:.0f}, {p['rss_slope_mb_per_min']:+.1f} MB/min), "
                f"serve CPU {p['serve_cpu_cores']:.2f} cores, machine busy "
                f"{p['machine_busy']:.0%} (this benchmark {p['ours_cores']:.2f} cores, other "
                f"work {p['others_cores']:.2f}), validations {validations}",
                flush=True,
            )
        return out

    def validations(self) -> dict[str, int]:
        """Validation runs by status, from /metrics-free SQL: the bench reads the database."""
        url = self.server.db_url or f"sqlite:///{self.server.home / 'data' / 'modelreg.db'}"
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT status, count(*) FROM validation_request GROUP BY status")
                ).all()
        finally:
            engine.dispose()
        return {str(s): int(n) for s, n in rows}


def _line(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    extra = ""
    if "steps_per_min" in r:
        extra = (
            f" rollouts={r['rollouts']} first-step p50={ms(r['first_step_s']['p50_ms'])} ms"
            f" (lag samples {r['lag_samples']})"
        )
    elif "mib_per_s" in r:
        extra = f" ({r['mib_per_s']:.1f} MiB/s; create p50={ms(r['create_version']['p50_ms'])})"
    return (
        f"{r['count']:>7} in {r['seconds']:.1f} s = {r['throughput']:8.1f}/s  "
        f"p50={ms(r['p50_ms'])} p95={ms(r['p95_ms'])} p99={ms(r['p99_ms'])} ms  "
        f"errors={r['errors']}{extra}" + (f" {r['error_detail']}" if r["errors"] else "")
    )


MIXED = {"resolve": 200, "feedback": 50, "upload": 5, "canary": 1}


def run_db(db: str, args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"modelreg-mixed-{db}-", dir=args.workdir))
    children = Children(work)
    server: Server | None = None
    try:
        print(f"== {db}: starting modelreg serve in {work}", flush=True)
        t0 = time.monotonic()
        extra = dict(kv.split("=", 1) for kv in args.server_env)
        server = start_server(children, work / "home", db, args.pg, extra, workers=args.workers)
        rss_boot = tree_rss_mb(server.pid)
        numbers = setup_model(server)
        print(f"   setup done in {time.monotonic() - t0:.0f} s", flush=True)
        bench = Bench(wrk, work, server, numbers, args.timeout)
        # Warm-up, untimed: every code path once (imports, first connections, caches).
        bench.phase("warm-up", 5, {"resolve": 20, "feedback": 5, "upload": 1}, quiet=True)
        baselines = {}
        for op in OPS:
            if op in args.ops and args.baseline_seconds > 0:
                baselines[op] = bench.phase(
                    f"baseline {op} alone", args.baseline_seconds, {op: MIXED[op]}
                )
        rss_before_mixed = tree_rss_mb(server.pid)
        mixed = bench.phase(
            "mixed", args.seconds, {op: n for op, n in MIXED.items() if op in args.ops}
        )
        time.sleep(5)
        rss_after_idle = tree_rss_mb(server.pid)
        sweep = []
        for n in args.sweep:
            sweep.append(bench.phase(f"sweep: feedback x{n}", args.sweep_seconds, {"feedback": n}))
        return {
            "db": db,
            "rss_after_boot_mb": rss_boot,
            "rss_before_mixed_mb": rss_before_mixed,
            "rss_5s_after_mixed_mb": rss_after_idle,
            "baselines": baselines,
            "mixed": mixed,
            "sweep": sweep,
        }
    finally:
        if server is not None:
            children.close()  # SIGTERM to serve first, then the servers it left running
            server.kill_model_servers()
        children.close()
        if db == "postgres" and not args.keep:
            with contextlib.suppress(Exception):
                engine = create_engine(make_url(args.pg), isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
                engine.dispose()
        if args.keep:
            print(f"   kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# -- report -----------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def print_report(report: dict[str, Any]) -> None:
    for res in report["runs"]:
        print()
        print(f"### {res['db']}: mixed load against each operation alone")
        print()
        print(
            "| operation | throughput mixed (alone) | ratio | p50 ms | ratio | p95 ms | ratio |"
            " p99 ms | ratio | errors |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for op, m in res["mixed"]["results"].items():
            b = res["baselines"].get(op, {}).get("results", {}).get(op)
            unit = "steps/min" if op == "canary" else "/s"
            mt = m["steps_per_min"] if op == "canary" else m["throughput"]
            bt = (b["steps_per_min"] if op == "canary" else b["throughput"]) if b else None
            cells = [f"{mt:,.1f}{unit} ({'-' if bt is None else f'{bt:,.1f}'})", ratio(mt, bt)]
            for q in ("p50_ms", "p95_ms", "p99_ms"):
                mv, bv = m[q], b[q] if b else None
                cells += [
                    f"{'-' if mv is None else f'{mv:.1f}'} ({'-' if bv is None else f'{bv:.1f}'})",
                    ratio(mv, bv),
                ]
            errs = f"{m['errors']} ({b['errors'] if b else '-'})"
            print(f"| {op} | " + " | ".join(cells) + f" | {errs} |")
        goals(res)
        p = res["mixed"]["process"]
        print()
        print(
            f"serve RSS: after boot {res['rss_after_boot_mb']:.0f} MB; mixed start "
            f"{p['rss_start_mb']:.0f}, end {p['rss_end_mb']:.0f}, max {p['rss_max_mb']:.0f} MB, "
            f"slope {p['rss_slope_mb_per_min']:+.1f} MB/min (second half "
            f"{p['rss_slope_second_half_mb_per_min']:+.1f}); 5 s later "
            f"{res['rss_5s_after_mixed_mb']:.0f} MB"
        )
        if res["sweep"]:
            print()
            print(
                "| feedback posters | batches/s | ratings/s | p50 ms | p95 ms | p99 ms | max ms |"
                " errors |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for ph in res["sweep"]:
                r = ph["results"]["feedback"]
                print(
                    f"| {ph['ops']['feedback']} | {r['throughput']:,.1f} | "
                    f"{r['throughput'] * FEEDBACK_BATCH:,.0f} | {r['p50_ms']:.1f} | "
                    f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['errors']} |"
                )


def goals(res: dict[str, Any]) -> None:
    """Issue 15's goals for the mixed load: resolution p99 mixed at most 2x alone; feedback at
    least 5,000 ratings/s sustained on PostgreSQL (batches of 100); no errors."""
    mixed = res["mixed"]["results"]
    lines = []
    resolve, alone = mixed.get("resolve"), res["baselines"].get("resolve")
    if resolve and alone and resolve["p99_ms"] and alone["results"]["resolve"]["p99_ms"]:
        r = resolve["p99_ms"] / alone["results"]["resolve"]["p99_ms"]
        lines.append(f"resolve p99 mixed / alone {r:.2f} (<= 2): {'met' if r <= 2 else 'FAIL'}")
    if "feedback" in mixed:
        rate = mixed["feedback"]["throughput"] * FEEDBACK_BATCH
        verdict = ("met" if rate >= 5000 else "FAIL") if res["db"] == "postgres" else "(PG only)"
        lines.append(f"feedback {rate:,.0f} ratings/s under mixed load (>= 5,000): {verdict}")
    errors = sum(r["errors"] for r in mixed.values())
    lines.append(f"errors under mixed load: {errors} (0): {'met' if errors == 0 else 'FAIL'}")
    print()
    for line in lines:
        print(f"goal: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mixed_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=60, help="mixed load (60)")
    parser.add_argument(
        "--baseline-seconds", type=float, default=15, help="each operation alone (15; 0: none)"
    )
    parser.add_argument("--sweep", default="10,25,50", help="feedback posters alone ('' = none)")
    parser.add_argument("--sweep-seconds", type=float, default=10)
    parser.add_argument("--ops", default=",".join(OPS), help="operations to run (all)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk's request timeout, s (10)")
    parser.add_argument(
        "--pg",
        default=os.environ.get("MODELREG_TEST_DATABASE_URL", DEFAULT_PG),
        help=f"admin URL of a PostgreSQL server; the database {BENCH_DB} is dropped and created",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for modelreg serve (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="API processes: modelreg serve --workers (1)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="for the temp directories")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory and db")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.sweep = [int(n) for n in args.sweep.split(",") if n]
    args.ops = [o for o in args.ops.split(",") if o]
    wrk = check_wrk()
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.mixed_load", *(argv or sys.argv[1:])]),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.workdir or Path(tempfile.gettempdir())),
        "source": source_info(),
        "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()[:1],
        "runs": [],
    }
    for db in dbs:
        report["runs"].append(run_db(db, args, wrk))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    errors = sum(r["errors"] for run in report["runs"] for r in run["mixed"]["results"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
