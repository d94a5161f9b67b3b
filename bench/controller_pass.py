"""Controller scale: the first passes after N deployments appear, and the steady pass.

    python -m bench.controller_pass [--sizes 100,1000,10000] [--databases sqlite,postgresql]
                                    [--passes 5] [--rounds 2] [--against /path/to/checkout]
                                    [--json out.json]

For each database and size, a fresh database is migrated and N models are written into it
straight, each with one version and one Active production deployment. Then the real
``Controller.run_pass`` runs with the test suite's in-memory ``FakeDeployer`` (so only the
controller and the database are measured, not process start-up):

* **pass 1**: every deployment is seen for the first time; its servers are started and its
  observed and desired state recorded;
* **pass 2**: the servers are ready; every deployment records its readiness and its route;
* **pass 3**: nothing changed since pass 2 (the first steady pass);
* **steady**: the median of the next ``--passes`` passes.

Each measurement runs in a fresh interpreter, from this checkout and (``--against``) from
another one, e.g. a ``git worktree`` of main: the same script drives both trees' code.
Rounds interleave the trees. The floors, measured in this checkout's process on the same
database and rows, are what a pass cannot avoid doing: **read**, a bare Core SELECT of the
worklist's joined rows; **write**, a bare batched write of what pass 2 records (an UPDATE of
each deployment row, an INSERT of its route and of its ledger event), 200 rows per
transaction. PostgreSQL is used at ``MODELREG_TEST_DATABASE_URL`` or
postgresql+psycopg://postgres@127.0.0.1:5432/postgres; a temporary database is created and
dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FLOOR_BATCH = 200


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    from sqlalchemy import create_engine, make_url, text

    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
        return
    admin = make_url(os.environ.get("MODELREG_TEST_DATABASE_URL") or DEFAULT_PG)
    name = f"modelreg_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def populate(url: str, n: int) -> None:
    from sqlalchemy import create_engine, insert

    from registry.models import AIModel, AIModelDeployment, AIModelVersion
    from registry.types import utcnow

    engine = create_engine(url)
    now = utcnow()
    models, versions, deployments = [], [], []
    for i in range(n):
        model_id, version_id = uuid.uuid4(), uuid.uuid4()
        models.append(
            {
                "id": model_id,
                "name": f"model-{i:05d}",
                "provider": "Internal",
                "task_type": "ImageGeneration",
                "created_at": now,
                "updated_at": now,
            }
        )
        versions.append(
            {
                "id": version_id,
                "model_id": model_id,
                "version_number": "1.0",
                "format": "ONNX",
                "status": "Production",
                "source_path": f"models/{model_id}/versions/{version_id}/model.onnx",
                "sha256": "0" * 64,
                "size_bytes": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
        deployments.append(
            {
                "id": uuid.uuid4(),
                "model_version_id": version_id,
                "environment": "production",
                "status": "Active",
                "deployment_strategy": "canary",
                "strategy_params": {},
                "target": "local",
                "traffic_weight": 100,
                "conditions": [],
                "deployment_timestamp": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    with engine.begin() as conn:
        for table, rows in (
            (AIModel, models),
            (AIModelVersion, versions),
            (AIModelDeployment, deployments),
        ):
            for start in range(0, len(rows), 2000):
                conn.execute(insert(table), rows[start : start + 2000])
    engine.dispose()


def floor_read(url: str, n: int) -> float:
    """The worklist's rows, as bare tuples: one Core SELECT of the three-table join."""
    from sqlalchemy import create_engine, select

    from registry.models import AIModel, AIModelDeployment, AIModelVersion

    engine = create_engine(url)
    stmt = (
        select(*AIModelDeployment.__table__.c, *AIModelVersion.__table__.c, AIModel.name)
        .join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
        .join(AIModel, AIModel.id == AIModelVersion.model_id)
        .order_by(AIModelDeployment.created_at, AIModelDeployment.id)
    )
    try:
        with engine.connect() as conn:
            conn.execute(stmt).all()  # warm the connection and the statement cache
            started = time.perf_counter()
            rows = conn.execute(stmt).all()
            seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    if len(rows) != n:
        raise SystemExit(f"the floor read {len(rows)} rows, not {n}")
    return seconds


def floor_write(url: str) -> float:
    """What pass 2 writes, bare: per deployment an UPDATE of its row, its route replaced and
    one ledger event, ``FLOOR_BATCH`` deployments per transaction."""
    from sqlalchemy import bindparam, create_engine, delete, insert, select, update

    from registry.models import (
        AIModelDeployment,
        AIModelVersion,
        DeploymentEvent,
        DeploymentRoute,
    )
    from registry.types import utcnow

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    AIModelDeployment.id,
                    AIModelVersion.id,
                    AIModelVersion.model_id,
                    AIModelDeployment.observed_state,
                    AIModelDeployment.conditions,
                ).join(AIModelVersion, AIModelVersion.id == AIModelDeployment.model_version_id)
            ).all()
        started = time.perf_counter()
        for start in range(0, len(rows), FLOOR_BATCH):
            part = rows[start : start + FLOOR_BATCH]
            now = utcnow()
            with engine.begin() as conn:
                dep = AIModelDeployment.__table__
                conn.execute(
                    update(dep)
                    .where(dep.c.id == bindparam("b_id"))
                    .values(
                        observed_state=bindparam("b_observed"),
                        conditions=bindparam("b_conditions"),
                        updated_at=bindparam("b_now"),
                    ),
                    [
                        {"b_id": d, "b_observed": o, "b_conditions": c, "b_now": now}
                        for d, _, _, o, c in part
                    ],
                )
                conn.execute(
                    delete(DeploymentRoute).where(
                        DeploymentRoute.model_id.in_([m for _, _, m, _, _ in part])
                    )
                )
                conn.execute(
                    insert(DeploymentRoute),
                    [
                        {
                            "deployment_id": d,
                            "model_id": m,
                            "environment": "production",
                            "model_version_id": v,
                            "version_number": "1.0",
                            "url": "http://127.0.0.1:9100",
                            "weight": 100,
                            "role": "stable",
                            "updated_at": now,
                        }
                        for d, v, m, _, _ in part
                    ],
                )
                conn.execute(
                    insert(DeploymentEvent),
                    [
                        {
                            "deployment_id": d,
                            "model_id": m,
                            "environment": "production",
                            "model_version_id": v,
                            "version_number": "1.0",
                            "at": now,
                            "kind": "traffic",
                            "actor": "floor",
                            "reason": "floor",
                            "details": {},
                        }
                        for d, v, m, _, _ in part
                    ],
                )
        return time.perf_counter() - started
    finally:
        engine.dispose()


def worker(kind: str, n: int, passes: int, floors: bool) -> dict[str, Any]:
    """One measurement, with whichever tree's code is on the path."""
    from controller.analysis import StepAnalysis
    from controller.reconcile import Controller
    from registry import migrate
    from registry.services import build_registry
    from registry.settings import Settings
    from tests.support.fakes import FakeDeployer

    with (
        tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp,
        database(kind, Path(tmp)) as url,
    ):
        migrate.upgrade(url)
        populate(url, n)
        out: dict[str, Any] = {}
        if floors:
            out["floorRead"] = floor_read(url, n)
        registry = build_registry(Settings(data_dir=Path(tmp), database_url=url))
        try:
            controller = Controller(
                registry.deployments,
                deployers={"local": FakeDeployer()},
                analysis=StepAnalysis(scrape=lambda _url: ""),
                holder="bench",
                # Long enough that no pass of either tree outlives it on a loaded machine (a
                # lost lease would end the pass early and make it look fast).
                lease_ttl=timedelta(minutes=10),
            )
            seconds, cpu = [], []
            for _ in range(3 + passes):
                started = time.process_time()
                result = controller.run_pass()
                cpu.append(time.process_time() - started)
                if result.deployments != n or result.errors or not result.leader:
                    raise SystemExit(f"pass {len(seconds) + 1} went wrong: {result}")
                seconds.append(result.seconds)
            with registry.sessions() as s:
                from registry.models import DeploymentRoute

                routed = s.query(DeploymentRoute).count()
            if routed != n:
                raise SystemExit(f"{routed} routes after the passes, not {n}")
        finally:
            registry.close()
        if floors:
            out["floorWrite"] = floor_write(url)
    out.update(
        {
            "pass1": seconds[0],
            "pass2": seconds[1],
            "pass3": seconds[2],
            "steady": statistics.median(seconds[3:]),
            # This process's CPU (not the database server's): what the machine's load hides.
            "cpu": {
                "pass1": cpu[0],
                "pass2": cpu[1],
                "pass3": cpu[2],
                "steady": statistics.median(cpu[3:]),
            },
        }
    )
    return out


def _python_path(tree: Path) -> str:
    return os.pathsep.join((str(tree), str(tree / "api" / "python-client")))


def run_worker(tree: Path, kind: str, n: int, passes: int, *, floors: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    if os.environ.get("MODELREG_TEST_DATABASE_URL"):
        env["MODELREG_TEST_DATABASE_URL"] = os.environ["MODELREG_TEST_DATABASE_URL"]
    env["PYTHONPATH"] = _python_path(tree)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(n), str(passes)]
    if floors:
        cmd.append("--floors")
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree} {kind} {n}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB, Python {platform.python_version()}"


FIGURES = ("pass1", "pass2", "pass3", "steady")


def report(results: list[dict[str, Any]], against: bool) -> None:
    """Medians over the rounds, per database, size and tree; ratios and per-deployment costs."""
    keys = sorted({(r["database"], r["deployments"]) for r in results}, key=lambda k: k)
    med: dict[tuple[str, int, str], dict[str, float]] = {}
    for kind, n in keys:
        for tree in ("this", "against"):
            rows = [
                r
                for r in results
                if (r["database"], r["deployments"], r["tree"]) == (kind, n, tree)
            ]
            if rows:
                med[(kind, n, tree)] = {
                    f: statistics.median(r[f] for r in rows)
                    for f in (*FIGURES, "floorRead", "floorWrite")
                    if f in rows[0]
                }
    print(f"\n{'database':<11} {'N':>6} {'tree':<8} " + " ".join(f"{f:>9}" for f in FIGURES))
    for kind, n in keys:
        for tree in ("against", "this"):
            if (kind, n, tree) in med:
                m = med[(kind, n, tree)]
                print(f"{kind:<11} {n:>6} {tree:<8} " + " ".join(f"{m[f]:>8.3f}s" for f in FIGURES))
        this = med[(kind, n, "this")]
        if against:
            other = med[(kind, n, "against")]
            ratios = " ".join(f"{other[f] / this[f]:>8.1f}x" for f in FIGURES)
            print(f"{'':<11} {'':>6} {'speed-up':<8} {ratios}")
        for tree in ("against", "this"):
            rows = [
                r
                for r in results
                if (r["database"], r["deployments"], r["tree"]) == (kind, n, tree)
            ]
            if rows:
                cpu = {f: statistics.median(r["cpu"][f] for r in rows) for f in FIGURES}
                print(
                    f"{'':<11} {'':>6} {'cpu ' + tree[:4]:<8} "
                    + " ".join(f"{cpu[f]:>8.3f}s" for f in FIGURES)
                )
        print(
            f"{'':<11} {'':>6} {'floors':<8} read {this['floorRead']:.3f}s (steady "
            f"{this['steady'] / this['floorRead']:.1f}x), write {this['floorWrite']:.3f}s "
            f"(pass 2 {this['pass2'] / this['floorWrite']:.1f}x); µs/deployment: pass 1 "
            f"{1e6 * this['pass1'] / n:.0f}, pass 2 {1e6 * this['pass2'] / n:.0f}, steady "
            f"{1e6 * this['steady'] / n:.0f}"
        )
    for kind in sorted({k for k, _ in keys}):
        sizes = sorted(n for k, n in keys if k == kind)
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            growth = " ".join(
                f"{f} {(med[(kind, hi, 'this')][f] / hi) / (med[(kind, lo, 'this')][f] / lo):.2f}x"
                for f in FIGURES
            )
            print(f"{kind}: cost per deployment at {hi} ÷ at {lo}: {growth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--passes", type=int, default=5, help="steady passes after pass 3")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--report", type=Path, nargs="+", help="print the report of saved --json files, and exit"
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--floors", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, n, passes = args.worker
        print(json.dumps(worker(kind, int(n), int(passes), args.floors)))
        return
    if args.report:
        saved = [json.loads(p.read_text()) for p in args.report]
        rows = [r for s in saved for r in s["results"]]
        report(rows, against=any(r["tree"] == "against" for r in rows))
        return
    print(f"machine: {machine()}")
    trees = [("against", args.against.resolve())] if args.against else []
    trees.append(("this", HERE))
    results = []
    for round_ in range(args.rounds):
        for n in (int(s) for s in args.sizes.split(",")):
            for kind in args.databases.split(","):
                for tree, path in trees if round_ % 2 == 0 else reversed(trees):
                    r = run_worker(path, kind, n, args.passes, floors=tree == "this")
                    r.update({"database": kind, "deployments": n, "tree": tree, "round": round_})
                    results.append(r)
                    print(
                        f"round {round_ + 1} {kind:<10} {n:>6} {tree:<7} "
                        + " ".join(f"{f} {r[f]:.3f}s (CPU {r['cpu'][f]:.3f}s)" for f in FIGURES),
                        flush=True,
                    )
                    if args.json:  # after each measurement: a long run cut short keeps them
                        args.json.write_text(
                            json.dumps({"machine": machine(), "results": results}, indent=2)
                        )
    report(results, against=bool(args.against))


if __name__ == "__main__":
    main()
