"""Feedback summaries over 1,000,000 rows on PostgreSQL.

    python -m bench.feedback_summary [--rows 1000000] [--runs 20] [--json out.json]

Two scenarios, each in a temporary PostgreSQL database (at ``MODELREG_TEST_DATABASE_URL`` or
postgresql+psycopg://postgres@127.0.0.1:5432/postgres, created, migrated and dropped):

* **spread**: the rows are spread evenly over 20 versions of one model, interleaved in time
  (as production traffic writes them), so the measured version holds 1/20 of them (50,000);
* **one version**: every row belongs to the measured version.

Rows span 30 days; 10% carry no rating, the rest lean positive (5%/7%/18%/35%/35% for 1-5).
They are written with one ``INSERT … SELECT FROM generate_series``. Then ``ANALYZE``.

For each scenario it times ``FeedbackService.summary`` (median of ``--runs`` calls) over the
whole range and over a one-hour window, against a baseline measured in the same run: a bare
``SELECT count(*) FROM ai_model_feedback WHERE model_version_id = …``. Each is measured twice:
right after ``ANALYZE``, and after ``VACUUM ANALYZE`` (which sets the visibility map that an
index-only scan needs; autovacuum does the same on a live table). The plan's top scan node is
reported too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.controller_pass import database, machine
from registry import migrate
from registry.services import build_registry
from registry.settings import Settings
from registry.types import utcnow

VERSIONS = 20
SPAN = timedelta(days=30)


def populate(engine: Engine, *, rows: int, spread: bool) -> uuid.UUID:
    """Write ``rows`` feedback rows; return the id of the version to measure."""
    user_id, model_id = uuid.uuid4(), uuid.uuid4()
    version_ids = [uuid.uuid4() for _ in range(VERSIONS)]
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO "user" (id, email, username, password_hash, created_at, updated_at) '
                "VALUES (:id, 'bench@example.com', 'bench', 'x', now(), now())"
            ),
            {"id": user_id},
        )
        conn.execute(
            text(
                "INSERT INTO ai_model (id, name, provider, task_type, created_at, updated_at) "
                "VALUES (:id, 'bench', 'Internal', 'ImageGeneration', now(), now())"
            ),
            {"id": model_id},
        )
        for i, vid in enumerate(version_ids):
            conn.execute(
                text(
                    "INSERT INTO ai_model_version (id, model_id, version_number, format, status, "
                    "created_at, updated_at) VALUES (:id, :model, :number, 'ONNX', 'Staged', "
                    "now(), now())"
                ),
                {"id": vid, "model": model_id, "number": f"{i + 1}.0"},
            )
        versions_sql = "ARRAY[" + ",".join(f"'{v}'::uuid" for v in version_ids) + "]"
        pick = f"({versions_sql})[1 + (g % {VERSIONS})]" if spread else f"'{version_ids[0]}'::uuid"
        conn.execute(
            text(
                "INSERT INTO ai_model_feedback (id, user_id, model_version_id, rating, comment, "
                "feedback_timestamp, created_at) "
                f"SELECT gen_random_uuid(), :user, {pick}, "
                "CASE WHEN h % 10 = 0 THEN NULL "
                "     WHEN (h * 7919) % 100 < 5 THEN 1 WHEN (h * 7919) % 100 < 12 THEN 2 "
                "     WHEN (h * 7919) % 100 < 30 THEN 3 WHEN (h * 7919) % 100 < 65 THEN 4 "
                "     ELSE 5 END, "
                "NULL, now() - make_interval(secs => :span * (1 - g::float8 / :rows)), now() "
                # h numbers each version's rows 0, 1, 2, …: every version gets the same mix.
                "FROM generate_series(1, :rows) AS g, LATERAL (SELECT g::bigint / 20 AS h) AS n"
            ),
            {"user": user_id, "rows": rows, "span": SPAN.total_seconds()},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE ai_model_feedback"))
    return version_ids[0]


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm the cache and the connection pool
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def top_scan(engine: Engine, sql: str, params: dict[str, Any]) -> str:
    with engine.connect() as conn:
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar_one()
    node = plan[0]["Plan"]
    while "Scan" not in node["Node Type"] and node.get("Plans"):
        node = node["Plans"][0]
    return str(node["Node Type"])


def measure(scenario: str, rows: int, runs: int, workdir: Path) -> list[dict[str, Any]]:
    results = []
    with database("postgresql", workdir) as url:
        migrate.upgrade(url)
        engine = create_engine(url)
        started = time.perf_counter()
        vid = populate(engine, rows=rows, spread=scenario == "spread")
        load_s = time.perf_counter() - started
        registry = build_registry(Settings(data_dir=workdir, database_url=url))
        try:
            now = utcnow()
            hour = (now - timedelta(days=3), now - timedelta(days=3) + timedelta(hours=1))
            count_sql = "SELECT count(*) FROM ai_model_feedback WHERE model_version_id = :v"
            summary_sql = (
                "SELECT count(*), count(rating), avg(rating), "
                + ", ".join(f"sum(CASE WHEN rating = {k} THEN 1 ELSE 0 END)" for k in range(1, 6))
                + " FROM ai_model_feedback WHERE model_version_id = :v"
            )

            def count() -> object:
                with registry.sessions() as s:
                    return s.execute(text(count_sql), {"v": vid}).scalar_one()

            for phase in ("ANALYZE", "VACUUM ANALYZE"):
                if phase == "VACUUM ANALYZE":
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                        c.execute(text("VACUUM ANALYZE ai_model_feedback"))
                whole = registry.feedback.summary(vid)
                window = registry.feedback.summary(vid, since=hour[0], until=hour[1])
                summary_s = median_seconds(lambda: registry.feedback.summary(vid), runs)
                window_s = median_seconds(
                    lambda: registry.feedback.summary(vid, since=hour[0], until=hour[1]), runs
                )
                count_s = median_seconds(count, runs)
                results.append(
                    {
                        "scenario": scenario,
                        "phase": phase,
                        "tableRows": rows,
                        "versionRows": whole.count,
                        "loadSeconds": round(load_s, 1),
                        "summaryMs": round(1000 * summary_s, 1),
                        "windowRows": window.count,
                        "windowSummaryMs": round(1000 * window_s, 2),
                        "countMs": round(1000 * count_s, 1),
                        "summaryOverCount": round(summary_s / count_s, 2),
                        "summaryScan": top_scan(engine, summary_sql, {"v": vid}),
                        "countScan": top_scan(engine, count_sql, {"v": vid}),
                        "mean": round(whole.mean or 0, 3),
                    }
                )
        finally:
            registry.close()
            engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--scenarios", default="spread,one-version")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"{'scenario':<12} {'after':<15} {'version rows':>12} {'summary':>9} "
        f"{'1-h window':>11} {'count(*)':>9} {'ratio':>6}  plan (summary / count)"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp:
        for scenario in args.scenarios.split(","):
            for r in measure(scenario, args.rows, args.runs, Path(tmp)):
                results.append(r)
                print(
                    f"{r['scenario']:<12} {r['phase']:<15} {r['versionRows']:>12,} "
                    f"{r['summaryMs']:>7.1f}ms {r['windowSummaryMs']:>9.2f}ms "
                    f"{r['countMs']:>7.1f}ms {r['summaryOverCount']:>5.2f}x  "
                    f"{r['summaryScan']} / {r['countScan']} "
                    f"(window {r['windowRows']} rows, load {r['loadSeconds']}s)",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
