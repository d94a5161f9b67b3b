"""What the integrity guards cost: the same workload on the code before them and on this tree.

    python -m bench.integrity [--baseline a7cd22a] [--rounds 3] [--duration 10]
                              [--deploys 30] [--uploads 5] [--pass-size 1000]
                              [--json out.json]

Issue 12 puts checks on paths users hit every day: every request's key check (the failed-auth
throttle), every deployment request (the one deployability check, under a row lock), every
upload (the idle timeout and the per-key upload count), every validation request (one pending
run per version). This measures those paths on two trees in the same run:

* **baseline**: the commit named by ``--baseline`` (default ``a7cd22a``, main before issue 12),
  checked out into a temporary git worktree;
* **current**: this checkout.

Each tree runs as a real ``modelreg serve`` process (``python -m api.cli serve``, with the
tree on ``PYTHONPATH``) on the embedded defaults (an SQLite file and a local artifact folder in
a temporary directory), with its controller on and its validation worker off (so that no
validation competes for the two cores). The rounds alternate which tree goes first. Per tree:

* **resolve**: ``GET /api/v1/models/m0/endpoint?environment=staging&key=user-42`` under
  ``wrk`` (Debian's package) with 8 keep-alive connections for ``--duration`` seconds, after a
  3 s warm-up; the route set is one the controller made (an ``API`` version rolled out to
  staging);
* **deploy**: ``--deploys`` sequential ``POST /api/v1/deployments`` (a canary of an ``API``
  version to ``testing``, each to a model of its own), the median and p95 latency;
* **upload**: ``--uploads`` sequential 16 MiB artifact uploads (each queues a validation), the
  median time;
* **validate**: ``POST .../validations`` twice for each uploaded version (a repeat of the run
  the upload queued: a new run on the baseline, the pending one on this tree), the median
  latency;
* **controller pass**: each tree's own ``python -m bench.controller_pass`` over
  ``--pass-size`` Active deployments on SQLite and PostgreSQL (its cold and steady pass; the
  rows now lock what they record, and the pass sweeps for orphans).

It prints one table: each figure on both trees, and the ratio current / baseline (for
latencies and times, above 1 means slower; for throughput, below 1 means slower). Results:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.resolve import check_wrk, run_wrk
from bench.upload import Children, free_port, machine_info, source_info, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_BYTES = 16 * 1024 * 1024


class Tree:
    """One checkout of modelreg, served by a real ``modelreg serve``."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def serve(self, children: Children, work: Path) -> tuple[str, dict[str, str]]:
        data = work / f"{self.name}-data"
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(self.root),
            "MODELREG_DATA_DIR": str(data),
            "MODELREG_CREDENTIALS_FILE": str(data / "credentials"),
            "MODELREG_WORKER_ENABLED": "false",
            "MODELREG_CONTROLLER_INTERVAL_SECONDS": "0.5",
            "MODELREG_LOG_LEVEL": "WARNING",
        }
        argv = [sys.executable, "-m", "api.cli", "serve", "--port", str(port)]
        proc = children.start(self.name, argv, env)
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/healthz", proc, children, self.name, ok=lambda r: r.is_success)
        creds = configparser.ConfigParser()
        deadline = time.monotonic() + 10
        while not creds.read(data / "credentials"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} wrote no credentials file")
            time.sleep(0.1)
        return base, {"Authorization": f"Bearer {creds['default']['token']}"}


def _model(http: httpx.Client, name: str, version: str, *, fmt: str = "API") -> None:
    http.post(
        "/api/v1/models",
        json={"name": name, "taskType": "ImageGeneration", "provider": "Internal"},
    ).raise_for_status()
    body: dict[str, Any] = {"versionNumber": version, "format": fmt}
    if fmt == "API":
        body["parameters"] = {"endpoint": f"http://127.0.0.1:9/{name}"}
    http.post(f"/api/v1/models/{name}/versions", json=body).raise_for_status()


def _wait_active(http: httpx.Client, deployment_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = http.get(f"/api/v1/deployments/{deployment_id}").json()["status"]
        if status == "Active":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"deployment {deployment_id} is {status}, not Active")
        time.sleep(0.2)


def _latencies(calls: list[float]) -> dict[str, float]:
    ordered = sorted(calls)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1e3,
    }


def measure(tree: Tree, children: Children, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    wrk = check_wrk()
    base, headers = tree.serve(children, work)
    result: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        _model(http, "m0", "1.0")
        r = http.post(
            "/api/v1/deployments",
            json={"model": "m0", "versionNumber": "1.0", "environment": "staging"},
        )
        r.raise_for_status()
        _wait_active(http, r.json()["id"])
        url = f"{base}/api/v1/models/m0/endpoint?environment=staging&key=user-42"
        run_wrk(wrk, url, connections=8, threads=1, duration=3, headers=headers)
        point = run_wrk(wrk, url, connections=8, threads=1, duration=args.duration, headers=headers)
        result["resolve"] = {"rps": point["rps"], "p99_ms": point["p99_ms"]}

        for i in range(args.deploys):
            _model(http, f"d{i}", "1.0")
        calls = []
        for i in range(args.deploys):
            t0 = time.perf_counter()
            r = http.post(
                "/api/v1/deployments",
                json={"model": f"d{i}", "versionNumber": "1.0", "environment": "testing"},
            )
            calls.append(time.perf_counter() - t0)
            r.raise_for_status()
        result["deploy"] = _latencies(calls)

        blob = os.urandom(UPLOAD_BYTES)
        for i in range(max(args.deploys, args.uploads)):
            _model(http, f"u{i}", "1.0", fmt="ONNX")
        times = []
        for i in range(args.uploads):
            t0 = time.perf_counter()
            r = http.put(
                f"/api/v1/models/u{i}/versions/1.0/artifact",
                content=blob,
                headers={"Content-Type": "application/octet-stream"},
            )
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
        result["upload"] = {"median_s": statistics.median(times)}

        calls = []
        for i in range(args.uploads):
            for _ in range(2):
                t0 = time.perf_counter()
                r = http.post(f"/api/v1/models/u{i}/versions/1.0/validations")
                calls.append(time.perf_counter() - t0)
                r.raise_for_status()
        result["validate"] = _latencies(calls)
    return result


def measure_pass(tree: Tree, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The tree's own controller-pass benchmark, run from that tree."""
    out = work / f"{tree.name}-pass.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.controller_pass",
            "--sizes",
            str(args.pass_size),
            "--databases",
            "sqlite,postgresql",
            "--passes",
            "5",
            "--json",
            str(out),
        ],
        cwd=tree.root,
        env={**os.environ, "PYTHONPATH": str(tree.root)},
        check=True,
        capture_output=True,
    )
    found = {r["database"]: r for r in json.loads(out.read_text())["results"]}
    return {f"pass_{db}": _pass_figures(r) for db, r in found.items()}


def _pass_figures(row: dict[str, Any]) -> dict[str, float]:
    """The cold (first) and steady pass of a tree's own ``bench.controller_pass`` row: its
    output changed in issue 15 (``pass1`` is the old ``coldPassSeconds``: the first pass, every
    deployment seen for the first time)."""
    if "coldPassSeconds" in row:
        return {"cold_s": row["coldPassSeconds"], "steady_s": row["steadyPassSeconds"]}
    return {"cold_s": row["pass1"], "steady_s": row["steady"]}


ROWS = (
    ("resolve", "rps", "resolve, requests/s (8 connections)"),
    ("resolve", "p99_ms", "resolve, p99 ms"),
    ("deploy", "median_ms", "POST /deployments, median ms"),
    ("deploy", "p95_ms", "POST /deployments, p95 ms"),
    ("validate", "median_ms", "POST .../validations, median ms"),
    ("upload", "median_s", "upload 16 MiB, median s"),
    ("pass_sqlite", "cold_s", "controller cold pass, SQLite, s"),
    ("pass_sqlite", "steady_s", "controller steady pass, SQLite, s"),
    ("pass_postgresql", "cold_s", "controller cold pass, PostgreSQL, s"),
    ("pass_postgresql", "steady_s", "controller steady pass, PostgreSQL, s"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.integrity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", default="a7cd22a", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds (10)")
    parser.add_argument("--deploys", type=int, default=30)
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--pass-size", type=int, default=1000, help="controller pass: N (1000)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    check_wrk()

    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-integrity-"))
    base_tree = work / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.baseline],
        check=True,
        capture_output=True,
    )
    trees = [Tree("baseline", base_tree), Tree("current", ROOT)]
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in trees}
    try:
        for round_ in range(args.rounds):
            order = trees if round_ % 2 == 0 else trees[::-1]
            for tree in order:
                children = Children(work)
                round_dir = work / f"round{round_}"
                round_dir.mkdir(exist_ok=True)
                try:
                    result = measure(tree, children, round_dir, args)
                finally:
                    children.close()
                result.update(measure_pass(tree, round_dir, args))
                runs[tree.name].append(result)
                print(f"round {round_ + 1} {tree.name}: {runs[tree.name][-1]}", flush=True)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)

    table = []
    for group, key, label in ROWS:
        old = statistics.median(r[group][key] for r in runs["baseline"])
        new = statistics.median(r[group][key] for r in runs["current"])
        table.append({"what": label, "baseline": old, "current": new, "ratio": new / old})
    print(f"\n{'what':40} {'baseline':>10} {'current':>10} {'ratio':>7}")
    for row in table:
        print(
            f"{row['what']:40} {row['baseline']:10.3f} {row['current']:10.3f} {row['ratio']:6.2f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_info(Path(tempfile.gettempdir())),
                    "source": source_info(),
                    "baseline": args.baseline,
                    "rounds": runs,
                    "table": table,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
