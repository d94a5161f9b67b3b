"""Endpoint resolution benchmark: modelreg's hot path against MLflow's alias resolution, and
against a bare ASGI app on modelreg's stack (the ceiling).

    python -m bench.resolve [--rounds 3] [--duration 5] [--connections 1,32]
                            [--mlflow /tmp/mlflow-venv/bin/mlflow] [--json out.json]

Every server runs at once, on one PostgreSQL server (``--pg``; each side in a temporary
database of its own), and is measured by ``wrk`` (Debian's package) over keep-alive HTTP/1.1,
one wrk thread, in rounds: each round measures every server at every connection count, in an
order that rotates from round to round, so that load from elsewhere on the machine (it is
shared) falls on all of them alike. Each server first gets a warm-up (15 s for MLflow, whose
workers import lazily on first use; 5 s for the others).

* ``modelreg-1w`` and ``modelreg-2w``: ``modelreg serve`` (``--workers 1`` and ``2``), as a
  user runs it, its validation worker in a process of its own (the controller is off: it
  would undo the route set the benchmark writes by hand);
  ``GET /api/v1/models/{name}/endpoint?environment=production&key=...`` with an admin key, on
  a 90/10 canary route set. Both on the same database.
* ``mlflow`` and ``mlflow-nodelay``: ``mlflow server`` from its own virtual environment
  (``python3 -m venv`` + ``pip install mlflow psycopg2-binary``, as a user installs it: no
  uvloop, no httptools) with its default 4 workers, as shipped, and with a ``sitecustomize``
  that sets ``TCP_NODELAY`` on accepted sockets (uvicorn issue #3149: its ``--workers`` socket
  leaves Nagle on); ``GET /api/2.0/mlflow/registered-models/alias?name=M&alias=production``.
* ``bare``: ``bench.bare_asgi`` under uvicorn in modelreg's environment, one process,
  answering modelreg's exact bytes (the same headers and body) to every request.

It reports, per server and connection count, the median over rounds of requests/s and of wrk's
p50 and p99, and the ratios taken round by round (median shown). Goals: ``modelreg-1w`` >= 70 %
of ``bare``'s throughput, and its p99 at 32 connections < 10 ms. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, select, text

from bench.upload import Children, _sigterm, free_port, machine_info, source_info, wait_until_up
from registry import migrate
from registry.models import AIModel, AIModelDeployment
from registry.services import build_registry
from registry.services.routing import RouteEntry, set_routes
from registry.settings import Settings

MODEL = "bench-resolve"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def check_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit(
            "wrk is not installed. It is a Debian/Ubuntu package: sudo apt-get install -y wrk "
            "(or build it from https://github.com/wg/wrk)."
        )
    return wrk


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"cannot read wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    wrk: str, url: str, *, connections: int, threads: int, duration: int, headers: dict[str, str]
) -> dict[str, Any]:
    threads = min(threads, connections)
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return {
        "connections": connections,
        "threads": threads,
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


# -- databases --------------------------------------------------------------------------------


def create_database(admin_url: str, prefix: str) -> str:
    dbname = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    engine.dispose()
    return dbname


def drop_database(admin_url: str, dbname: str) -> None:
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    engine.dispose()


# -- modelreg ---------------------------------------------------------------------------------


def prepare_modelreg(work: Path, db_url: str) -> tuple[Settings, str]:
    migrate.upgrade(db_url)
    settings = Settings(data_dir=work / "modelreg", database_url=db_url, storage="local")
    registry = build_registry(settings)
    try:
        issued = registry.keys.bootstrap_admin()
        assert issued is not None
    finally:
        registry.close()
    return settings, issued.token


def start_modelreg(
    children: Children, work: Path, admin_url: str
) -> tuple[str, dict[str, str], str]:
    """One ``modelreg serve`` on a new temporary database (for the other benchmarks that
    measure against this one's server). Returns (url to measure, headers, database name)."""
    dbname = create_database(admin_url, "modelreg_bench")
    db_url = make_url(admin_url).set(database=dbname).render_as_string(hide_password=False)
    settings, token = prepare_modelreg(work, db_url)
    url, headers = serve_modelreg(children, settings, token, workers=1)
    return url, headers, dbname


def serve_modelreg(
    children: Children, settings: Settings, token: str, *, workers: int
) -> tuple[str, dict[str, str]]:
    """``modelreg serve --workers N`` on the prepared database (the first start also creates
    the model and its 90/10 canary). Returns (url to measure, headers)."""
    port = free_port()
    name = f"modelreg-{workers}w"
    env = {
        **os.environ,
        "MODELREG_DATA_DIR": str(settings.data_dir),
        "MODELREG_DATABASE_URL": settings.database_url,
        "MODELREG_STORAGE": "local",
        "MODELREG_LOG_LEVEL": "WARNING",
        # The route set is written by hand: a controller would undo it (nothing deploys it).
        "MODELREG_CONTROLLER_ENABLED": "false",
        "MODELREG_CREDENTIALS_FILE": str(settings.data_dir / f"credentials-{workers}"),
        "MODELREG_SERVER_STATE_DIR": str(settings.data_dir / f"servers-{workers}"),
    }
    argv = [sys.executable, "-m", "api.cli", "serve", "--port", str(port)]
    proc = children.start(name, [*argv, "--workers", str(workers)], env)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/readyz", proc, children, name, ok=lambda r: r.is_success)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        if http.get(f"/api/v1/models/{MODEL}").status_code == 404:
            create_canary(http, settings)
    url = f"{base}/api/v1/models/{MODEL}/endpoint?environment=production&key=user-42"
    # The server polls the routing generation: wait until it serves the set written above.
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(url, headers=headers)
        if r.status_code == 200 and len(r.json()["endpoints"]) == 2:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"modelreg does not serve the routes: {r.status_code} {r.text}")
        time.sleep(0.1)
    return url, headers


def create_canary(http: httpx.Client, settings: Settings) -> None:
    http.post(
        "/api/v1/models",
        json={"name": MODEL, "taskType": "ImageGeneration", "provider": "Internal"},
    ).raise_for_status()
    versions = {}
    for v in ("1.0", "1.1"):
        r = http.post(f"/api/v1/models/{MODEL}/versions", json={"versionNumber": v})
        r.raise_for_status()
        versions[v] = uuid.UUID(r.json()["id"])
    registry = build_registry(settings)
    try:
        with registry.sessions.begin() as s:
            model_id = s.scalar(select(AIModel.id).where(AIModel.name == MODEL))
            assert model_id is not None
            deps = {
                v: AIModelDeployment(model_version_id=vid, environment="production")
                for v, vid in versions.items()
            }
            s.add_all(deps.values())
            s.flush()
            set_routes(
                s,
                model_id=model_id,
                environment="production",
                routes=[
                    RouteEntry(
                        deps["1.0"].id, versions["1.0"], "1.0", "http://10.0.0.1:9101", 90, "stable"
                    ),
                    RouteEntry(
                        deps["1.1"].id, versions["1.1"], "1.1", "http://10.0.0.2:9102", 10, "canary"
                    ),
                ],
                deployment_id=deps["1.1"].id,
                actor="bench",
                reason="90/10 canary",
            )
    finally:
        registry.close()


def start_bare(children: Children, work: Path, url: str, headers: dict[str, str]) -> str:
    """``bench.bare_asgi`` answering the bytes modelreg answers to ``url``."""
    r = httpx.get(url, headers=headers)
    r.raise_for_status()
    answer = work / "bare-answer.json"
    bare_headers = [
        (k, v) for k, v in r.headers.multi_items() if k.lower() not in ("date", "server")
    ]
    answer.write_text(json.dumps({"headers": bare_headers, "body": r.text}))
    port = free_port()
    env = {**os.environ, "BENCH_BARE_ANSWER": str(answer)}
    argv = [sys.executable, "-m", "uvicorn", "bench.bare_asgi:app", "--port", str(port)]
    proc = children.start("bare", [*argv, "--no-access-log", "--log-level", "warning"], env)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/", proc, children, "bare", ok=lambda r: r.is_success)
    return f"{base}/"


# -- MLflow -----------------------------------------------------------------------------------

NODELAY_SITECUSTOMIZE = '''\\
"""TCP_NODELAY on every accepted TCP socket: asyncio sets it only when the listening socket
was made with proto=IPPROTO_TCP, and uvicorn's --workers socket is made with proto=0."""
import asyncio.base_events
import socket


def _set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


asyncio.base_events._set_nodelay = _set_nodelay
'''


def mlflow_env(work: Path, *, nodelay: bool) -> dict[str, str]:
    """The environment a user's shell would give MLflow: none of modelreg's venv or paths."""
    here = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != here)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = path
    if nodelay:
        site = work / "nodelay-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(NODELAY_SITECUSTOMIZE)
        env["PYTHONPATH"] = str(site)
    return env


def start_mlflow(children: Children, work: Path, mlflow: str, db_url: str, *, nodelay: bool) -> str:
    name = "mlflow-nodelay" if nodelay else "mlflow"
    home = work / name
    home.mkdir()
    port = free_port()
    argv = [
        mlflow,
        "server",
        "--backend-store-uri",
        db_url,
        "--default-artifact-root",
        str(home / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]  # its default: 4 uvicorn workers
    proc = children.start(name, argv, mlflow_env(work, nodelay=nodelay))
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/health", proc, children, name, ok=lambda r: r.is_success, timeout=180)
    api = f"{base}/api/2.0/mlflow"
    url = f"{api}/registered-models/alias?name={MODEL}&alias=production"
    with httpx.Client(timeout=30) as http:
        if http.get(url).status_code != 200:
            http.post(f"{api}/registered-models/create", json={"name": MODEL}).raise_for_status()
            r = http.post(
                f"{api}/model-versions/create",
                json={"name": MODEL, "source": "s3://bench-bucket/model"},  # never read
            )
            if r.is_error:
                raise RuntimeError(f"MLflow refused the model version: {r.status_code} {r.text}")
            http.post(
                f"{api}/registered-models/alias",
                json={"name": MODEL, "alias": "production", "version": "1"},
            ).raise_for_status()
        r = http.get(url)
        r.raise_for_status()
        assert r.json()["model_version"]["version"] == "1", r.text
    return url


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.resolve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per point (5)")
    parser.add_argument("--connections", default="1,32", help="comma-separated (1,32)")
    parser.add_argument(
        "--mlflow",
        default="/tmp/mlflow-venv/bin/mlflow",
        help="the mlflow command of its own virtual environment",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("MODELREG_TEST_DATABASE_URL", DEFAULT_PG),
        help="admin URL of a PostgreSQL server where temp databases may be created",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    wrk = check_wrk()
    if not Path(args.mlflow).exists():
        sys.exit(
            f"no mlflow at {args.mlflow}: python3 -m venv /tmp/mlflow-venv && "
            "/tmp/mlflow-venv/bin/pip install mlflow psycopg2-binary"
        )
    connections = [int(c) for c in args.connections.split(",")]

    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-resolve-"))
    children = Children(work)
    databases: list[str] = []
    urls: dict[str, tuple[str, dict[str, str]]] = {}
    admin = make_url(args.pg)
    try:
        databases.append(create_database(args.pg, "modelreg_bench"))
        db_url = admin.set(database=databases[-1]).render_as_string(hide_password=False)
        settings, token = prepare_modelreg(work, db_url)
        for w in (1, 2):
            urls[f"modelreg-{w}w"] = serve_modelreg(children, settings, token, workers=w)
        urls["bare"] = (start_bare(children, work, *urls["modelreg-1w"]), {})
        databases.append(create_database(args.pg, "mlflow_bench"))
        mlflow_db = admin.set(drivername="postgresql+psycopg2", database=databases[-1])
        mlflow_url = mlflow_db.render_as_string(hide_password=False)
        urls["mlflow"] = (start_mlflow(children, work, args.mlflow, mlflow_url, nodelay=False), {})
        urls["mlflow-nodelay"] = (
            start_mlflow(children, work, args.mlflow, mlflow_url, nodelay=True),
            {},
        )
        for name, (url, headers) in urls.items():
            warm = 15 if name.startswith("mlflow") else 5
            print(f"-- warm-up {name} ({warm} s): {url}", flush=True)
            run_wrk(wrk, url, connections=8, threads=1, duration=warm, headers=headers)
        results: dict[str, dict[int, list[dict[str, Any]]]] = {
            n: {c: [] for c in connections} for n in urls
        }
        names = list(urls)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                url, headers = urls[name]
                for c in connections:
                    point = run_wrk(
                        wrk,
                        url,
                        connections=c,
                        threads=args.threads,
                        duration=args.duration,
                        headers=headers,
                    )
                    print(f"   round {r + 1} {name}: {point}", flush=True)
                    results[name][c].append(point)
    finally:
        children.close()
        for dbname in databases:
            drop_database(args.pg, dbname)
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "machine": machine_info(Path(tempfile.gettempdir())),
        "source": source_info(),
        "mlflow": subprocess.run(
            [args.mlflow, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "wrk_threads": args.threads,
        "results": {n: {str(c): p for c, p in by_c.items()} for n, by_c in results.items()},
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if print_report(results, connections) else 1


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_report(
    results: dict[str, dict[int, list[dict[str, Any]]]], connections: list[int]
) -> bool:
    """The table, and whether the goals hold (at the largest connection count)."""
    print()
    print(
        "| connections | server | requests/s (median, min-max) | p50 ms | p99 ms "
        "| modelreg-1w / this |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    ok = True
    for c in connections:
        mine = results["modelreg-1w"][c]
        for name, by_connections in results.items():
            points = by_connections[c]
            rps = [p["rps"] for p in points]
            ratios = [m["rps"] / p["rps"] for m, p in zip(mine, points, strict=True) if p["rps"]]
            errors = sum(p["non_2xx"] for p in points)
            note = f" ({errors} non-2xx)" if errors else ""
            ratio = "" if name == "modelreg-1w" else f"{_median(ratios):.2f}x"
            print(
                f"| {c} | {name} | {_median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}){note} | "
                f"{_median([p['p50_ms'] for p in points]):.2f} | "
                f"{_median([p['p99_ms'] for p in points]):.2f} | {ratio} |"
            )
    top = max(connections)
    share = _median(
        [
            m["rps"] / b["rps"]
            for m, b in zip(results["modelreg-1w"][top], results["bare"][top], strict=True)
        ]
    )
    p99 = _median([p["p99_ms"] for p in results["modelreg-1w"][top]])
    ok = share >= 0.7 and (top != 32 or p99 < 10)
    print(
        f"\ngoals at {top} connections: modelreg-1w at {share:.0%} of bare (>= 70 %), "
        f"p99 {p99:.2f} ms (< 10 ms): {'PASS' if ok else 'FAIL'}"
    )
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
