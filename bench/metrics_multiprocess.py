"""What summing the metrics across processes costs: the API's per-request metric updates (one
counter increment, one histogram observation, as ``MetricsMiddleware`` does) and one scrape of
the process metrics, with ``PROMETHEUS_MULTIPROC_DIR`` (as under ``modelreg serve``) against
without (one uvicorn process, the baseline), each in a fresh process, rounds interleaved.

    python -m bench.metrics_multiprocess [--rounds 5] [--ops 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROUTE = "/api/v1/models/{name}/endpoint"


def child(ops: int) -> None:
    from prometheus_client import generate_latest

    from api.metrics import process_metrics
    from registry.metrics import HTTP_DURATION, HTTP_REQUESTS

    counter, histogram = (
        HTTP_REQUESTS.labels(ROUTE, "GET", "200"),
        HTTP_DURATION.labels(ROUTE, "GET"),
    )
    for _ in range(1000):  # warm-up
        counter.inc()
        histogram.observe(0.001)
    started = time.perf_counter()
    for _ in range(ops):
        counter.inc()
        histogram.observe(0.001)
    per_op = (time.perf_counter() - started) / ops
    registry = process_metrics()
    scrapes = []
    for _ in range(20):
        began = time.perf_counter()
        generate_latest(registry)
        scrapes.append(time.perf_counter() - began)
    print(json.dumps({"update_us": per_op * 1e6, "scrape_ms": statistics.median(scrapes) * 1e3}))


def run(ops: int, directory: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if directory is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = directory
    argv = [sys.executable, "-m", "bench.metrics_multiprocess", "--child", "--ops", str(ops)]
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_multiprocess")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.ops)
        return
    single: list[dict[str, float]] = []
    summed: list[dict[str, float]] = []
    for n in range(args.rounds):
        directory = tempfile.mkdtemp(prefix="bench-metrics-")
        try:
            pair = [(single, None), (summed, directory)]
            for into, where in pair if n % 2 == 0 else pair[::-1]:  # interleaved
                into.append(run(args.ops, where))
        finally:
            shutil.rmtree(directory)
    for key, unit in (("update_us", "µs per request"), ("scrape_ms", "ms per scrape")):
        base = statistics.median(r[key] for r in single)
        multi = statistics.median(r[key] for r in summed)
        print(
            f"{key}: one process {base:.3f} {unit}, summed {multi:.3f} {unit}, "
            f"ratio {multi / base:.2f}x (medians of {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
