"""The light client: CLI start-up, the client's import, and the Resolver's picks and registry load.

    python -m bench.cli_client [--runs 15] [--picks 1000000] [--load-seconds 10] [--json out.json]

Each figure comes with a baseline measured in the same run:

* wall time (median of ``--runs`` fresh interpreters) of ``modelreg --help``,
  ``modelreg models list`` against a live server, ``import modelreg_client`` and
  ``from modelreg_client import Client, Resolver``, each against ``python -c pass`` (the
  interpreter's floor). ``import api.schemas`` (what the CLI's client imported before it moved
  to ``modelreg_client``: FastAPI, pydantic, the SQLAlchemy models) is measured as the old cost.
* ``Resolver.pick(key)`` per second over distinct keys, in this process, against the bare hash
  (``sha256(key.encode()).digest()``) over the same keys: the floor any pick identical to the
  server's must pay.
* the registry load of one Resolver at ``ttl`` 1 s: requests per second, 304s and 200s, over
  ``--load-seconds``.

The server is ``bench.resolve``'s: one uvicorn process on a temporary PostgreSQL database (at
``MODELREG_TEST_DATABASE_URL`` or 127.0.0.1:5432), auth on, a 90/10 canary.
"""

from __future__ import annotations

import argparse
import hashlib
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

from bench.resolve import MODEL, drop_database, start_modelreg
from bench.upload import Children, machine_info, source_info

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def once(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``argv`` in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stderr.decode()[-2000:]}")
    return elapsed


def measure_startup(runs: int, env: dict[str, str]) -> dict[str, dict[str, float]]:
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "modelreg --help": [py, "-m", "api.cli", "--help"],
        "modelreg models list": [py, "-m", "api.cli", "models", "list"],
        "import modelreg_client": [py, "-c", "import modelreg_client"],
        "from modelreg_client import Client, Resolver": [
            py,
            "-c",
            "from modelreg_client import Client, Resolver",
        ],
        "import api.schemas (the old client's imports)": [py, "-c", "import api.schemas"],
    }
    # Interleaved rounds, so that a slow moment of a shared machine hits every case alike; the
    # first round (cold caches) is not counted.
    results: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(runs + 1):
        for name, argv in cases.items():
            elapsed = once(argv, env)
            if round_:
                results[name].append(elapsed)
    return {
        name: {"median": statistics.median(t), "min": min(t), "max": max(t)}
        for name, t in results.items()
    }


def measure_picks(url: str, token: str, picks: int) -> dict[str, float]:
    from modelreg_client import Resolver

    keys = [f"user-{i}" for i in range(picks)]
    sha256 = hashlib.sha256
    with Resolver(url, token, MODEL, "production") as resolver:
        resolver.wait_ready()
        pick = resolver.pick
        best_pick = best_hash = float("inf")
        for _ in range(3):  # alternate, keep the best of three of each
            start = time.perf_counter()
            for key in keys:
                pick(key)
            best_pick = min(best_pick, time.perf_counter() - start)
            start = time.perf_counter()
            for key in keys:
                sha256(key.encode()).digest()
            best_hash = min(best_hash, time.perf_counter() - start)
    return {"picks_per_s": picks / best_pick, "bare_hash_per_s": picks / best_hash}


def measure_load(url: str, token: str, seconds: float) -> dict[str, float]:
    from modelreg_client import Resolver

    with Resolver(url, token, MODEL, "production", ttl=1.0) as resolver:
        resolver.wait_ready()
        start_requests, start = resolver.requests, time.monotonic()
        start_304, start_200 = resolver.not_modified, resolver.refreshed
        time.sleep(seconds)
        elapsed = time.monotonic() - start
        return {
            "seconds": elapsed,
            "requests_per_s": (resolver.requests - start_requests) / elapsed,
            "not_modified": resolver.not_modified - start_304,
            "full_answers": resolver.refreshed - start_200,
            "failures": resolver.failures,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--picks", type=int, default=1_000_000)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    admin_url = os.environ.get("MODELREG_TEST_DATABASE_URL", DEFAULT_PG)
    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    children = Children(work)
    dbname = None
    try:
        endpoint_url, headers, dbname = start_modelreg(children, work, admin_url)
        base = endpoint_url.split("/api/")[0]
        token = headers["Authorization"].removeprefix("Bearer ")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
        env.update(
            MODELREG_URL=base,
            MODELREG_TOKEN=token,
            MODELREG_CREDENTIALS_FILE=str(work / "credentials"),
        )
        startup = measure_startup(args.runs, env)
        picks = measure_picks(base, token, args.picks)
        load = measure_load(base, token, args.load_seconds)
    finally:
        children.close()
        if dbname:
            drop_database(admin_url, dbname)
        shutil.rmtree(work, ignore_errors=True)
    floor = startup["python -c pass"]["median"]
    report: dict[str, Any] = {
        "machine": machine_info(Path(tempfile.gettempdir())),
        "source": source_info(),
        "startup": startup,
        "picks": picks,
        "load": load,
    }
    print(
        f"{'wall time (median of ' + str(args.runs) + ')':48} {'s':>7} {'- floor':>8} {'/floor':>7}"
    )
    for name, t in startup.items():
        m = t["median"]
        print(f"{name:48} {m:7.3f} {m - floor:8.3f} {m / floor:7.2f}")
    print(
        f"Resolver.pick: {picks['picks_per_s']:,.0f}/s; the bare SHA-256 of the same keys: "
        f"{picks['bare_hash_per_s']:,.0f}/s "
        f"(pick/hash {picks['picks_per_s'] / picks['bare_hash_per_s']:.2f})"
    )
    print(
        f"registry load of one Resolver at ttl 1 s: {load['requests_per_s']:.2f} requests/s "
        f"({load['not_modified']} x 304, {load['full_answers']} x 200, {load['failures']} failed)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
