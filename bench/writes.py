"""Creating versions: ``POST /api/v1/models/{name}/versions`` per second, against a floor.

    python -m bench.writes [--against /path/to/other/checkout] [--duration 8] [--rounds 3]
                           [--databases postgresql,sqlite] [--workers 1,2] [--pg URL]
                           [--json out.json]

Each side is a real server: ``python -m uvicorn api.app:create_app --factory``, one process
(as bench.resolve starts it), and for each ``--workers`` N above 1, ``modelreg serve
--workers N`` (N API processes on one port; its validation worker and controller off, as
nothing here needs them), run from this checkout and, with ``--against``, from another one
(e.g. ``git worktree add /tmp/main-base main``), each with its own code's migrations, on its
own fresh database: a temporary PostgreSQL database on ``--pg``, and a SQLite file. ``wrk``
(Debian's package) drives it over keep-alive connections from one thread, with a Lua script
that gives every request a new version number: 1 connection (sequential) and 8 (concurrent).
Every create is a real one: auth on (an admin key), the version row and its audit row
committed.

The floor is the same database without the API: a loop of bare ``INSERT`` + ``COMMIT`` of a
similar row into ``ai_model_version`` (psycopg, one connection per client; sqlite3 with the
registry's PRAGMAs), sequentially and from 8 threads.

Rounds are interleaved (each round measures every side and the floor, the sides' order
alternating), after a warm-up; the figures are the medians over rounds. Reported per
database and concurrency: creates/s, wrk's p50 and p99, the server's CPU ms per create (from
/proc, summed over the server's processes, so less sensitive to what else loads the machine),
and the ratios to the other checkout (with as many workers) and to the floor. Goals (issue
15): >= 300/s sequential and >= 1,000/s with 8 clients on PostgreSQL. The load average is
printed at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.resolve import DEFAULT_PG, _ms, check_wrk, drop_database
from bench.upload import (
    Children,
    _sigterm,
    cpu_seconds,
    free_port,
    machine_info,
    source_info,
    wait_until_up,
)

HERE = Path(__file__).resolve().parents[1]
MODEL = "bench-writes"
CONCURRENCY = (1, 8)
#: Run with the side's own code: migrate a fresh database and issue an admin key.
SETUP = """
import sys
from registry import migrate
from registry.services import build_registry
from registry.settings import Settings
migrate.upgrade(sys.argv[1])
registry = build_registry(Settings(data_dir=sys.argv[2], database_url=sys.argv[1], storage="local"))
print(registry.keys.bootstrap_admin().token)
registry.close()
"""
LUA = """
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format(
    '{"versionNumber":"%(prefix)s-%%d","releaseNotes":"bench","parameters":{"steps":30}}', n))
end
"""
FLOOR_INSERT = (
    "INSERT INTO ai_model_version (id, model_id, version_number, format, release_notes,"
    " parameters, status, created_by_user_id, created_at, updated_at)"
    " VALUES (%s, %s, %s, 'ONNX', 'bench', '{\"steps\": 30}', 'Staged', NULL, %s, %s)"
)


@dataclass
class Server:
    side: str
    database: str
    url: str
    token: str
    pid: int
    workers: int = 1

    @property
    def label(self) -> str:
        """``this`` or ``other``, with ``-Nw`` for ``modelreg serve --workers N``."""
        return self.side if self.workers == 1 else f"{self.side}-{self.workers}w"


def _env(tree: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["PYTHONPATH"] = os.pathsep.join((str(tree), str(tree / "api" / "python-client")))
    return {**env, **extra}


def start_server(
    children: Children,
    *,
    side: str,
    tree: Path,
    database: str,
    db_url: str,
    work: Path,
    workers: int = 1,
) -> Server:
    data = work / f"{side}-{database}-{workers}w"
    data.mkdir(parents=True)
    setup = subprocess.run(
        [sys.executable, "-c", SETUP, db_url, str(data)],
        env=_env(tree),
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    token = setup.stdout.strip().splitlines()[-1]
    port = free_port()
    env = _env(
        tree,
        MODELREG_DATA_DIR=str(data),
        MODELREG_DATABASE_URL=db_url,
        MODELREG_STORAGE="local",
        MODELREG_LOG_LEVEL="WARNING",
    )
    name = f"{side}-{database}-{workers}w"
    if workers == 1:
        # --app-dir: ``python -m`` puts the working directory first on sys.path, ahead of
        # PYTHONPATH; without it every side would import this checkout.
        argv = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--app-dir"]
        argv += [str(tree), "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        argv += ["--log-level", "warning"]
        proc = children.start(name, argv, env)
    else:
        # serve's children are ``python -m`` too, in its working directory: the side's tree.
        env.update(
            MODELREG_WORKER_ENABLED="false",
            MODELREG_CONTROLLER_ENABLED="false",
            MODELREG_CREDENTIALS_FILE=str(data / "credentials"),
            MODELREG_SERVER_STATE_DIR=str(data / "servers"),
        )
        argv = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", str(workers)]
        proc = children.start(name, argv, env, cwd=tree)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/healthz", proc, children, name, ok=lambda r: r.is_success)
    model = {"name": MODEL, "taskType": "ImageGeneration", "provider": "Internal"}
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{base}/api/v1/models", json=model, headers=headers).raise_for_status()
    url = f"{base}/api/v1/models/{MODEL}/versions"
    return Server(side, database, url, token, proc.pid, workers)


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` of ``pid`` and every process below it (serve's API processes)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(current)
        todo += parents.get(current, [])
    return total


def run_wrk(wrk: str, server: Server, *, connections: int, duration: int, prefix: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"token": server.token, "prefix": prefix})
    try:
        cpu = tree_cpu_seconds(server.pid)
        argv = [wrk, "-t1", "-c", str(connections), "-d", f"{duration}s", "--latency"]
        out = subprocess.run(
            [*argv, "-s", script.name, server.url], capture_output=True, text=True, check=True
        ).stdout
        cpu = tree_cpu_seconds(server.pid) - cpu
    finally:
        os.unlink(script.name)
    numbers = {
        key: _grep(out, pattern)
        for key, pattern in (
            ("rps", r"Requests/sec:\s+([\d.]+)"),
            ("requests", r"(\d+) requests in"),
            ("p50", r"^\s+50%\s+(\S+)"),
            ("p99", r"^\s+99%\s+(\S+)"),
        )
    }
    if None in numbers.values():
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = _grep(out, r"Non-2xx or 3xx responses:\s+(\d+)")
    requests = int(str(numbers["requests"]))
    return {
        "rps": float(str(numbers["rps"])),
        "p50_ms": _ms(str(numbers["p50"])),
        "p99_ms": _ms(str(numbers["p99"])),
        "errors": int(errors) if errors else 0,
        "server_cpu_ms": 1000 * cpu / max(requests, 1),
    }


def _grep(text: str, pattern: str) -> str | None:
    match = re.search(pattern, text, re.M)
    return match.group(1) if match else None


# -- the floor: the same rows without the API -------------------------------------------------


@dataclass
class Floor:
    """How to connect to a side's database without the API, and its dialect's details."""

    connect: Any
    model_id: Any
    insert: str
    new_id: Any


def floor_for(database: str, db_url: str) -> Floor:
    if database == "sqlite":
        path = db_url.removeprefix("sqlite:///")

        def connect() -> Any:
            conn = sqlite3.connect(path, check_same_thread=False)
            for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
                conn.execute(f"PRAGMA {pragma}")
            conn.execute("PRAGMA busy_timeout=10000")
            return conn

        insert, param, new_id = FLOOR_INSERT.replace("%s", "?"), "?", lambda: uuid.uuid4().hex
    else:
        dsn = db_url.replace("postgresql+psycopg://", "postgresql://")

        def connect() -> Any:
            return psycopg.connect(dsn)

        insert, param, new_id = FLOOR_INSERT, "%s", uuid.uuid4
    conn = connect()
    try:
        (model_id,) = conn.execute(
            f"SELECT id FROM ai_model WHERE name = {param}", (MODEL,)
        ).fetchone()
    finally:
        conn.close()
    return Floor(connect, model_id, insert, new_id)


def floor_loop(floor: Floor, *, clients: int, duration: float, prefix: str) -> dict[str, Any]:
    """``clients`` threads, each on its own connection, INSERT + COMMIT until time is up."""
    counts = [0] * clients
    failures: list[BaseException] = []
    ready = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        conn = floor.connect()
        try:
            ready.wait()
            end = time.monotonic() + duration
            while time.monotonic() < end:
                now = time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime())
                number = f"{prefix}-{i}-{counts[i]}"
                conn.execute(floor.insert, (floor.new_id(), floor.model_id, number, now, now))
                conn.commit()
                counts[i] += 1
        except BaseException as exc:
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return {"rps": sum(counts) / (time.monotonic() - began), "errors": 0}


# -- main -------------------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.writes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--duration", type=int, default=8, help="seconds per point (8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--databases", default="postgresql,sqlite", help="postgresql,sqlite")
    parser.add_argument(
        "--workers",
        default="1",
        help="API processes per server, e.g. 1,2 (1: uvicorn; N > 1: modelreg serve --workers N)",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("MODELREG_TEST_DATABASE_URL", DEFAULT_PG),
        help="admin URL of a PostgreSQL server where temp databases may be created",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    wrk = check_wrk()
    signal.signal(signal.SIGTERM, _sigterm)
    sides = {"this": HERE}
    if args.against:
        sides["other"] = args.against.resolve()
    databases = args.databases.split(",")
    worker_counts = [int(w) for w in args.workers.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    pg_names: list[str] = []
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-writes-") as tmp:
        work = Path(tmp)
        children = Children(work)
        try:
            servers: list[Server] = []
            floors: dict[str, Floor] = {}
            for database in databases:
                for workers in worker_counts:
                    for side, tree in sides.items():
                        db_url = _database(database, args.pg, work, f"{side}-{workers}", pg_names)
                        server = start_server(
                            children,
                            side=side,
                            tree=tree,
                            database=database,
                            db_url=db_url,
                            work=work,
                            workers=workers,
                        )
                        servers.append(server)
                        if side == "this" and database not in floors:
                            floors[database] = floor_for(database, db_url)
            for server in servers:  # warm-up: imports, connections, the key cache
                run_wrk(wrk, server, connections=8, duration=2, prefix="warm")
            for r in range(args.rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for c in CONCURRENCY:
                    for server in order:
                        point = run_wrk(
                            wrk, server, connections=c, duration=args.duration, prefix=f"r{r}c{c}"
                        )
                        key = f"{server.label}/{server.database}/{c}"
                        results.setdefault(key, []).append(point)
                    for database, floor in floors.items():
                        point = floor_loop(
                            floor, clients=c, duration=args.duration, prefix=f"floor-r{r}c{c}"
                        )
                        results.setdefault(f"floor/{database}/{c}", []).append(point)
        finally:
            children.close()
            for name in pg_names:
                drop_database(args.pg, name)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "source": source_info(),
        "against": str(args.against) if args.against else None,
        "against_commit": _commit(args.against) if args.against else None,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "workers": worker_counts,
        "loadavg": {"start": load_start, "end": loadavg()},
        "machine": machine_info(Path(tempfile.gettempdir())),
        "results": results,
    }
    print_report(report, databases, list(sides), worker_counts)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if any(p["errors"] for points in results.values() for p in points) else 0


def _database(database: str, admin_url: str, work: Path, side: str, pg_names: list[str]) -> str:
    if database == "sqlite":
        return f"sqlite:///{work / side}-modelreg.db"
    from sqlalchemy import create_engine, make_url, text

    admin = make_url(admin_url)
    name = f"modelreg_bench_writes_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    pg_names.append(name)
    return admin.set(database=name).render_as_string(hide_password=False)


def _commit(tree: Path) -> str | None:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return out.stdout.strip() or None


def print_report(
    report: dict[str, Any], databases: list[str], sides: list[str], workers: list[int]
) -> None:
    results = report["results"]
    print(f"\n{report['when']}  this: {report['source']['commit']}", end="")
    print(f"  other: {report['against_commit']}" if report["against"] else "")
    print(
        f"load average: {report['loadavg']['start']} at the start,"
        f" {report['loadavg']['end']} at the end"
    )
    print(f"medians of {report['rounds']} interleaved rounds of {report['duration_s']} s\n")
    head = f"{'database':10} {'clients':>7} {'side':9} {'creates/s':>9} {'p50 ms':>7} {'p99 ms':>7}"
    print(f"{head} {'cpu ms/op':>9} {'/ other':>8} {'/ floor':>8}  rounds (creates/s)")
    print("(cpu ms/op: of all the server's processes; -Nw: modelreg serve --workers N)")
    for database in databases:
        for c in CONCURRENCY:
            floor = _median(results, f"floor/{database}/{c}", "rps")
            for side in [*_labels(sides, workers), "floor"]:
                key = f"{side}/{database}/{c}"
                rps = _median(results, key, "rps")
                mate = side.replace("this", "other", 1)
                other = (
                    _median(results, f"{mate}/{database}/{c}", "rps")
                    if side.startswith("this") and f"{mate}/{database}/{c}" in results
                    else None
                )
                cells = [f"{database:10} {c:7} {side:9} {rps:9.0f}"]
                if side == "floor":
                    cells.append(f"{'':7} {'':7} {'':9}")
                else:
                    p50, p99, cpu = (
                        _median(results, key, f) for f in ("p50_ms", "p99_ms", "server_cpu_ms")
                    )
                    cells.append(f"{p50:7.2f} {p99:7.2f} {cpu:9.2f}")
                cells.append(f"{rps / other:8.2f}" if other else f"{'':8}")
                cells.append(f"{rps / floor:8.2f}" if side != "floor" else f"{'':8}")
                cells.append(" ".join(f"{p['rps']:.0f}" for p in results[key]))
                print(" ".join(cells))
        print()


def _labels(sides: list[str], workers: list[int]) -> list[str]:
    return [side if w == 1 else f"{side}-{w}w" for w in workers for side in sides]


def _median(results: dict[str, list[dict[str, Any]]], key: str, field: str) -> float:
    return statistics.median(p[field] for p in results[key])


if __name__ == "__main__":
    sys.exit(main())
