"""Controller scale: one pass over N deployments, with a fake deployer.

    python -m bench.controller_pass [--sizes 100,1000,10000] [--databases sqlite,postgresql]
                                    [--passes 5] [--json out.json]

For each database and size it writes N models, each with one version and one Active
production deployment, straight into a freshly migrated database. Then it runs the real
``Controller.run_pass`` with the in-memory ``FakeDeployer`` of the test suite (so only the
controller and the database are measured, not process start-up):

* **cold pass**: the first pass, in which every deployment is observed for the first time,
  so each one records its state and its route (one write transaction each);
* **steady pass**: the median of the next passes, in which nothing changed (the common case:
  every pass looks at every Active deployment to keep it healthy).

The baseline, measured in the same run on the same database, is the bare read the pass cannot
avoid: ``DeploymentService.worklist`` (one joined SELECT of the N rows). PostgreSQL is used
at ``MODELREG_TEST_DATABASE_URL`` or postgresql+psycopg://postgres@127.0.0.1:5432/postgres;
a temporary database is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, make_url, text

from controller.analysis import StepAnalysis
from controller.reconcile import Controller
from registry import migrate
from registry.models import AIModel, AIModelDeployment, AIModelVersion
from registry.services import build_registry
from registry.settings import Settings
from registry.types import utcnow
from tests.support.fakes import FakeDeployer

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
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


def measure(kind: str, n: int, passes: int, workdir: Path) -> dict[str, Any]:
    with database(kind, workdir) as url:
        migrate.upgrade(url)
        populate(url, n)
        registry = build_registry(Settings(data_dir=workdir, database_url=url))
        try:
            controller = Controller(
                registry.deployments,
                deployers={"local": FakeDeployer()},
                analysis=StepAnalysis(scrape=lambda _url: ""),
                holder="bench",
            )
            baseline = []
            for _ in range(passes):
                started = time.perf_counter()
                if len(registry.deployments.ledger.worklist(utcnow())) != n:
                    raise SystemExit("the worklist does not hold every deployment")
                baseline.append(time.perf_counter() - started)
            cold = controller.run_pass()
            if cold.deployments != n or cold.errors:
                raise SystemExit(f"the cold pass went wrong: {cold}")
            steady = []
            for _ in range(passes):
                result = controller.run_pass()
                if result.deployments != n or result.errors:
                    raise SystemExit(f"a steady pass went wrong: {result}")
                steady.append(result.seconds)
        finally:
            registry.close()
    select_s = statistics.median(baseline)
    steady_s = statistics.median(steady)
    return {
        "database": kind,
        "deployments": n,
        "coldPassSeconds": round(cold.seconds, 4),
        "steadyPassSeconds": round(steady_s, 4),
        "worklistSelectSeconds": round(select_s, 4),
        "steadyOverSelect": round(steady_s / select_s, 2),
        "steadyMicrosecondsPerDeployment": round(1e6 * steady_s / n, 1),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"{'database':<11} {'N':>6} {'cold pass':>10} {'steady pass':>12} "
        f"{'worklist SELECT':>16} {'steady/SELECT':>14} {'µs/deployment':>14}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp:
        for kind in args.databases.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                r = measure(kind, n, args.passes, Path(tmp))
                results.append(r)
                print(
                    f"{kind:<11} {n:>6} {r['coldPassSeconds']:>9.3f}s "
                    f"{r['steadyPassSeconds']:>11.3f}s {r['worklistSelectSeconds']:>15.3f}s "
                    f"{r['steadyOverSelect']:>13.2f}x "
                    f"{r['steadyMicrosecondsPerDeployment']:>14.1f}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
