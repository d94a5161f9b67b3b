"""Validation throughput: validations per minute finished by ``modelreg worker`` processes on
PostgreSQL while 5 uploaders keep uploading small ONNX models, per worker layout, in one run.

    python -m bench.validation_throughput [--layouts 1x1,1xD,2x1,2xD] [--seconds 60]
                                          [--warmup 10] [--rounds 2] [--uploaders 5]
                                          [--upload-interval 2.0] [--json out.json]

A layout ``WxC`` is W ``modelreg worker`` processes with ``MODELREG_VALIDATION_CONCURRENCY=C``
(``D``: unset, the default, one child per core within the memory cap). ``1x1`` is the
baseline: one worker running one validator child at a time, what existed before issue 15.

One PostgreSQL database (at ``MODELREG_TEST_DATABASE_URL`` or the local default, created and
dropped) and one ``modelreg serve`` with its own worker off take the uploads for the whole
run. The uploaders start first and never stop: each, with a key of its own, creates a version
of its model and uploads ``tests.support.onnx_models.add_model`` (a different constant each
time, so every artifact is new), then waits ``--upload-interval`` seconds; every upload queues
a validation, so the queue only grows and the workers are never idle. For each layout in
turn its workers start, run ``--warmup`` s unmeasured (start-up, the first claims), then for
``--seconds`` s; the finished validations in that window (result rows created in it) per
minute are its rate. Its workers then get SIGTERM (running runs go back in the queue) before
the next layout starts. Rounds interleave the layouts (the order is reversed every other
round), and each layout's rate is given as a ratio to the baseline's in the same round.

Also per layout: how long a run took (``durationSeconds``, claim to result), the share of
benchmarks flagged ``noisy`` (children that share cores disturb each other's latency
measurement), the uploads per minute, the machine's CPU busy share and load average, and how
much of that CPU was this benchmark's processes (the rest is other work on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, select, text

from bench.mixed_load import serve_until_ready
from bench.upload import Children, _sigterm, free_port, machine_info, source_info
from registry import migrate
from registry.models import AIModelValidationResult

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Layout:
    workers: int
    concurrency: int | None  # None: the default

    @classmethod
    def parse(cls, text: str) -> Layout:
        workers, _, concurrency = text.lower().partition("x")
        return cls(int(workers), None if concurrency == "d" else int(concurrency))

    @property
    def name(self) -> str:
        return f"{self.workers}x{'D' if self.concurrency is None else self.concurrency}"


@contextmanager
def pg_database() -> Iterator[str]:
    admin = make_url(os.environ.get("MODELREG_TEST_DATABASE_URL") or DEFAULT_PG)
    name = f"modelreg_bench_valid_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def base_env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        HOME=str(home),
        MODELREG_DATA_DIR=str(home / "data"),
        MODELREG_CREDENTIALS_FILE=str(home / "credentials"),
        MODELREG_DATABASE_URL=db_url,
        MODELREG_LOG_LEVEL="WARNING",
        MODELREG_WORKER_POLL_SECONDS="0.5",
    )
    return env


def start_api(children: Children, home: Path, env: dict[str, str]) -> tuple[str, str]:
    """``modelreg serve`` without its worker or controller; its URL and admin token."""
    port = free_port()
    serve_env = {
        **env,
        "MODELREG_WORKER_ENABLED": "false",
        "MODELREG_CONTROLLER_ENABLED": "false",
        "MODELREG_UPLOADS_PER_KEY": "16",  # the uploaders' keys may share a user
    }
    _, url, token = serve_until_ready(children, "serve", port, home, serve_env)
    return url, token


class Uploaders:
    """``count`` threads that each upload a new version of their own model, forever."""

    def __init__(self, url: str, admin: str, *, count: int, interval: float) -> None:
        from tests.support.onnx_models import add_model

        self.add_model = add_model
        self.url, self.interval = url, interval
        self.stop = threading.Event()
        self.uploaded = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.tokens = []
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as http:
            for i in range(count):
                r = http.post(
                    "/api/v1/keys", json={"name": f"uploader-{i}", "scopes": ["models:write"]}
                )
                r.raise_for_status()
                self.tokens.append(r.json()["token"])
                http.post(
                    "/api/v1/models",
                    json={"name": f"up{i}", "taskType": "ImageGeneration", "provider": "Internal"},
                ).raise_for_status()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[index]}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as http:
            number = 0
            while not self.stop.is_set():
                number += 1
                version = str(number)
                try:
                    http.post(
                        f"/api/v1/models/up{index}/versions", json={"versionNumber": version}
                    ).raise_for_status()
                    http.put(
                        f"/api/v1/models/up{index}/versions/{version}/artifact",
                        content=self.add_model(constant=float(index * 1_000_000 + number)),
                        params={"filename": "model.onnx"},
                    ).raise_for_status()
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(f"{exc.__class__.__name__}: {exc}")
                else:
                    with self.lock:
                        self.uploaded += 1
                self.stop.wait(self.interval)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def tree_cpu(root: int, *, database: str) -> float:
    """CPU seconds of ``root`` and its descendants, the reaped ones included (cutime), and of
    the PostgreSQL backends connected to ``database``."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
                cpu[int(entry.name)] = sum(int(f) for f in fields[11:15]) / ticks
                if f" {database} ".encode() in (entry / "cmdline").read_bytes():
                    parent[int(entry.name)] = root  # a backend serving the benchmark
    total = 0.0
    for pid, seconds in cpu.items():
        if pid == root:
            total += seconds
            continue
        p, hops = pid, 0
        while p > 1 and hops < 50:
            if p == root:
                total += seconds
                break
            p, hops = parent.get(p, 0), hops + 1
    return total


def finished_between(db_url: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    AIModelValidationResult.results,
                    AIModelValidationResult.performance_benchmark,
                ).where(
                    AIModelValidationResult.created_at >= start,
                    AIModelValidationResult.created_at < end,
                )
            ).all()
    finally:
        engine.dispose()
    return [{"results": r[0] or {}, "benchmark": r[1] or {}} for r in rows]


PARTS = ("outside_child", "child_startup", "security", "functional", "benchmark")


def split_run(results: dict[str, Any]) -> dict[str, float] | None:
    """Where a run's time went: outside the child (the claim's end to the result: the fetch,
    the digest, the database), the child's start-up (interpreter, imports), and the three
    validators (the child's own timings)."""
    timings, process = results.get("timings") or {}, results.get("process") or {}
    total = results.get("durationSeconds")
    if not (isinstance(total, (int, float)) and "startedAt" in process and "endedAt" in process):
        return None
    wall = (
        datetime.fromisoformat(process["endedAt"]) - datetime.fromisoformat(process["startedAt"])
    ).total_seconds()
    validators = {
        "security": float(timings.get("securitySeconds") or 0.0),
        "functional": float(timings.get("functionalSeconds") or 0.0),
        "benchmark": float(timings.get("benchmarkSeconds") or 0.0),
    }
    return {
        "outside_child": max(0.0, total - wall),
        "child_startup": max(0.0, wall - sum(validators.values())),
        **validators,
    }


def measure(
    layout: Layout,
    *,
    children: Children,
    env: dict[str, str],
    db_url: str,
    uploaders: Uploaders,
    args: argparse.Namespace,
    tag: str,
) -> dict[str, Any]:
    worker_env = dict(env)
    if layout.concurrency is not None:
        worker_env["MODELREG_VALIDATION_CONCURRENCY"] = str(layout.concurrency)
    procs = [
        children.start(f"worker-{tag}-{n}", [sys.executable, "-m", "api.cli", "worker"], worker_env)
        for n in range(layout.workers)
    ]
    try:
        time.sleep(args.warmup)
        for n, proc in enumerate(procs):
            if proc.poll() is not None:
                raise RuntimeError(children.log_tail(f"worker-{tag}-{n}"))
        me, database = os.getpid(), make_url(db_url).database or ""
        cpu0, busy0, up0 = tree_cpu(me, database=database), machine_busy(), uploaders.uploaded
        start = datetime.now(UTC)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        end = datetime.now(UTC)
        seconds = time.monotonic() - t0
        cpu1 = tree_cpu(me, database=database)
        busy1, up1 = machine_busy(), uploaders.uploaded
        load = os.getloadavg()[0]
    finally:
        for proc in procs:
            children.stop(proc)
    done = finished_between(db_url, start, end)
    durations = [d["results"].get("durationSeconds") for d in done]
    durations = [d for d in durations if isinstance(d, (int, float))]
    noisy = [bool(d["benchmark"].get("noisy")) for d in done]
    parts = [split_run(d["results"]) for d in done]
    parts = [p for p in parts if p is not None]
    cores = os.cpu_count() or 1
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    ours = (cpu1 - cpu0) / seconds
    return {
        "layout": layout.name,
        "validations": len(done),
        "per_minute": len(done) * 60 / seconds,
        "seconds": seconds,
        "run_seconds_median": statistics.median(durations) if durations else None,
        "noisy_share": sum(noisy) / len(noisy) if noisy else None,
        "run_parts_median": {
            key: round(statistics.median(p[key] for p in parts), 3) for key in PARTS
        }
        if parts
        else None,
        "failed": sum(
            1
            for d in done
            if d["results"].get("error") or d["benchmark"].get("status") not in ("Passed", None)
        ),
        "uploads_per_minute": (up1 - up0) * 60 / seconds,
        "machine_busy": busy,
        "ours_cores": ours,
        "others_cores": max(0.0, busy * cores - ours),
        "loadavg_1m": load,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    layouts = [Layout.parse(text) for text in args.layouts.split(",")]
    if layouts[0] != Layout(1, 1):
        layouts = [Layout(1, 1), *(x for x in layouts if x != Layout(1, 1))]
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-valid-") as tmp, pg_database() as db_url:
        home = Path(tmp)
        children = Children(home)
        env = base_env(home, db_url)
        uploaders: Uploaders | None = None
        try:
            url, token = start_api(children, home, env)
            uploaders = Uploaders(url, token, count=args.uploaders, interval=args.upload_interval)
            uploaders.start()
            for index in range(args.rounds):
                order = layouts if index % 2 == 0 else layouts[::-1]
                measured = []
                for layout in order:
                    print(f"round {index + 1}: {layout.name} ...", flush=True)
                    result = measure(
                        layout,
                        children=children,
                        env=env,
                        db_url=db_url,
                        uploaders=uploaders,
                        args=args,
                        tag=f"{index}-{layout.name}",
                    )
                    print(
                        f"  {result['per_minute']:.1f} validations/min, "
                        f"machine busy {result['machine_busy']:.0%}, "
                        f"others {result['others_cores']:.2f} cores",
                        flush=True,
                    )
                    measured.append(result)
                base = next(r for r in measured if r["layout"] == "1x1")["per_minute"]
                for result in measured:
                    result["ratio"] = result["per_minute"] / base if base else None
                rounds.append(measured)
            errors = list(uploaders.errors)
        finally:
            if uploaders is not None:
                uploaders.close()
            children.close()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source_info(),
        "machine": machine_info(Path(tempfile.gettempdir())),
        "args": vars(args),
        "rounds": rounds,
        "summary": summarize(layouts, rounds),
        "upload_errors": errors[:20],
        "upload_error_count": len(errors),
    }


def summarize(layouts: list[Layout], rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for layout in layouts:
        mine = [r for measured in rounds for r in measured if r["layout"] == layout.name]
        ratios = [r["ratio"] for r in mine if r["ratio"] is not None]
        noisy = [r["noisy_share"] for r in mine if r["noisy_share"] is not None]
        runs = [r["run_seconds_median"] for r in mine if r["run_seconds_median"] is not None]
        out.append(
            {
                "layout": layout.name,
                "per_minute": [round(r["per_minute"], 1) for r in mine],
                "per_minute_median": statistics.median(r["per_minute"] for r in mine),
                "ratio_median": statistics.median(ratios) if ratios else None,
                "run_seconds_median": statistics.median(runs) if runs else None,
                "noisy_share": statistics.mean(noisy) if noisy else None,
                "machine_busy": statistics.mean(r["machine_busy"] for r in mine),
                "others_cores": statistics.mean(r["others_cores"] for r in mine),
                "uploads_per_minute": statistics.mean(r["uploads_per_minute"] for r in mine),
                "run_parts_median": mine[-1]["run_parts_median"],
            }
        )
    return out


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(
        f"\n{report['date']}  commit {report['source']['commit']}  {machine['cpu']}, "
        f"{machine['cores_usable']} usable cores, {machine['ram_gib']} GiB"
    )
    print(
        f"{'layout':8} {'per min (rounds)':24} {'median':>7} {'ratio':>6} {'run s':>6} "
        f"{'noisy':>6} {'busy':>5} {'others':>7} {'uploads/min':>11}"
    )
    for s in report["summary"]:
        rounds = ", ".join(f"{v:.1f}" for v in s["per_minute"])
        ratio = "" if s["ratio_median"] is None else f"{s['ratio_median']:.2f}"
        run_s = "" if s["run_seconds_median"] is None else f"{s['run_seconds_median']:.2f}"
        noisy = "" if s["noisy_share"] is None else f"{s['noisy_share']:.0%}"
        print(
            f"{s['layout']:8} {rounds:24} {s['per_minute_median']:7.1f} {ratio:>6} {run_s:>6} "
            f"{noisy:>6} {s['machine_busy']:5.0%} {s['others_cores']:7.2f} "
            f"{s['uploads_per_minute']:11.0f}"
        )
    print("where a run's time went (median seconds, last round):")
    for s in report["summary"]:
        if s["run_parts_median"]:
            print(
                f"  {s['layout']:6} "
                + ", ".join(f"{k} {v:.2f}" for k, v in s["run_parts_median"].items())
            )
    if report["upload_error_count"]:
        print(f"upload errors: {report['upload_error_count']}, e.g. {report['upload_errors'][0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.validation_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--layouts", default="1x1,1xD,2x1,2xD")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--uploaders", type=int, default=5)
    parser.add_argument("--upload-interval", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
