"""Endpoint resolution benchmark: modelreg's hot path against MLflow's alias resolution.

    python -m bench.resolve [--duration 10] [--connections 1,8,32] [--mlflow-workers 1,4]
                            [--json out.json]

Both servers run on this machine, in this run, one at a time (the others stopped), measured by
``wrk`` (Debian's package: ``apt-get install -y wrk``) over keep-alive HTTP/1.1 connections,
with one wrk thread by default (on 2 cores: one for wrk, one for the server), after a 5 s
warm-up at 8 connections:

* modelreg: ``GET /api/v1/models/{name}/endpoint?environment=production&key=...``, with auth
  on (an admin key in ``Authorization``), served by one uvicorn process (the app factory) on a
  temporary PostgreSQL database (``--pg``) that holds one model with a 90/10 canary route set.
* MLflow: ``GET /api/2.0/mlflow/registered-models/alias?name=M&alias=production`` from
  ``mlflow server`` on a SQLite backend in a temporary directory, with 1 worker, and with its
  default of 4 workers (``--mlflow-workers``).

For each server and each number of connections it reports requests/s and wrk's p50 and p99
latency, and the ratio modelreg / MLflow. MLflow's extra workers are uvicorn ``--workers``
processes, which is where the Nagle / delayed-ACK stall of uvicorn issue #3149 applies (see
"Known pitfalls" in ARCHITECTURE.md); modelreg runs one process. Targets: at 32 connections,
>= 10x MLflow's throughput and p99 < 10 ms. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
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


# -- modelreg ---------------------------------------------------------------------------------


def start_modelreg(
    children: Children, work: Path, admin_url: str
) -> tuple[str, dict[str, str], str]:
    """A temp PostgreSQL database, migrated, with one model on a 90/10 canary; the API served
    by one uvicorn process. Returns (url to measure, headers, database name)."""
    admin = make_url(admin_url)
    dbname = f"modelreg_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    engine.dispose()
    db_url = admin.set(database=dbname).render_as_string(hide_password=False)
    migrate.upgrade(db_url)
    settings = Settings(data_dir=work / "modelreg", database_url=db_url, storage="local")
    registry = build_registry(settings)
    try:
        issued = registry.keys.bootstrap_admin()
        assert issued is not None
        token = issued.token
    finally:
        registry.close()

    port = free_port()
    env = {
        **os.environ,
        "MODELREG_DATA_DIR": str(work / "modelreg"),
        "MODELREG_DATABASE_URL": db_url,
        "MODELREG_STORAGE": "local",
        "MODELREG_LOG_LEVEL": "WARNING",
    }
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]  # one process: no --workers (see the Nagle pitfall in ARCHITECTURE.md)
    proc = children.start("modelreg", argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/healthz", proc, children, "modelreg", ok=lambda r: r.is_success)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
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
    return url, headers, dbname


def drop_database(admin_url: str, dbname: str) -> None:
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    engine.dispose()


# -- MLflow -----------------------------------------------------------------------------------


def start_mlflow(children: Children, work: Path, workers: int) -> str:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    if not Path(mlflow).exists():
        sys.exit("mlflow is not installed: pip install mlflow (a dev-only dependency)")
    home = work / f"mlflow-{workers}"
    home.mkdir()
    port = free_port()
    argv = [
        mlflow,
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--default-artifact-root",
        str(home / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "MLFLOW_HOME": str(home)}
    proc = children.start(f"mlflow-{workers}", argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(
        f"{base}/health",
        proc,
        children,
        f"mlflow-{workers}",
        ok=lambda r: r.is_success,
        timeout=120,
    )
    api = f"{base}/api/2.0/mlflow"
    with httpx.Client(timeout=30) as http:
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
        url = f"{api}/registered-models/alias?name={MODEL}&alias=production"
        r = http.get(url)
        r.raise_for_status()
        assert r.json()["model_version"]["version"] == "1", r.text
    return url


# -- main -------------------------------------------------------------------------------------


def measure(
    wrk: str, url: str, headers: dict[str, str], connections: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    print(f"-- {url}", flush=True)
    run_wrk(wrk, url, connections=8, threads=args.threads, duration=5, headers=headers)  # warm-up
    points = []
    for c in connections:
        point = run_wrk(
            wrk, url, connections=c, threads=args.threads, duration=args.duration, headers=headers
        )
        print(f"   {point}", flush=True)
        points.append(point)
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.resolve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per point (10)")
    parser.add_argument("--connections", default="1,8,32", help="comma-separated (1,8,32)")
    parser.add_argument(
        "--mlflow-workers", default="1,4", help="MLflow worker counts to measure (1,4)"
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("MODELREG_TEST_DATABASE_URL", DEFAULT_PG),
        help="admin URL of a PostgreSQL server where a temp database may be created",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (1): on 2 cores, one for wrk and one for the server measured",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    wrk = check_wrk()
    connections = [int(c) for c in args.connections.split(",")]
    mlflow_workers = [int(w) for w in args.mlflow_workers.split(",") if w]

    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-resolve-"))
    children = Children(work)
    dbname: str | None = None
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        # One server at a time, so that an idle one does not take CPU from the one measured.
        url, headers, dbname = start_modelreg(children, work, args.pg)
        results["modelreg"] = measure(wrk, url, headers, connections, args)
        children.close()
        for w in mlflow_workers:
            mlflow_url = start_mlflow(children, work, w)
            results[f"mlflow-{w}w"] = measure(wrk, mlflow_url, {}, connections, args)
            children.close()
    finally:
        children.close()
        if dbname is not None:
            drop_database(args.pg, dbname)
        shutil.rmtree(work, ignore_errors=True)

    print_report(results, mlflow_workers)
    report = {
        "machine": machine_info(Path(tempfile.gettempdir())),
        "source": source_info(),
        "mlflow": _mlflow_version(),
        "duration_s": args.duration,
        "wrk_threads": args.threads,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    m32 = next((p for p in results["modelreg"] if p["connections"] == 32), None)
    base = f"mlflow-{mlflow_workers[0]}w" if mlflow_workers else None
    if m32 is not None and base is not None:
        b32 = next(p for p in results[base] if p["connections"] == 32)
        ok = m32["rps"] >= 10 * b32["rps"] and m32["p99_ms"] < 10
        print(f"target at 32 connections (>= 10x {base}, p99 < 10 ms): {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    return 0


def _mlflow_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("mlflow")
    except metadata.PackageNotFoundError:
        return None


def print_report(results: dict[str, list[dict[str, Any]]], mlflow_workers: list[int]) -> None:
    print()
    print("| connections | server | requests/s | p50 ms | p99 ms | modelreg / this |")
    print("|---:|---|---:|---:|---:|---:|")
    for i, point in enumerate(results["modelreg"]):
        c = point["connections"]
        rows = [("modelreg", point)] + [
            (f"MLflow, {w} worker(s)", results[f"mlflow-{w}w"][i]) for w in mlflow_workers
        ]
        for name, p in rows:
            ratio = point["rps"] / p["rps"] if p["rps"] else float("inf")
            errors = f" ({p['non_2xx']} non-2xx)" if p["non_2xx"] else ""
            print(
                f"| {c} | {name} | {p['rps']:,.0f}{errors} | {p['p50_ms']:.2f} | "
                f"{p['p99_ms']:.2f} | {'' if name == 'modelreg' else f'{ratio:.1f}x'} |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
