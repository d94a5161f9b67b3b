"""Rollout step latency: from a canary step's pause ending, or an abort, to endpoint resolution.

    python -m bench.rollout_latency [--concurrency 1,20] [--intervals 0.5,2] [--rounds 3]
                                    [--db sqlite|postgres] [--json out.json]

For each controller pass interval (``MODELREG_CONTROLLER_INTERVAL_SECONDS``; 2 s is the
default, what a user gets) it starts a real ``modelreg serve`` (API, validation worker and
controller, each its own process; the local deployer, whose every replica is a real
model-server process) on a fresh database, with N models, each with two validated versions
(tiny ONNX ``add`` models), one Active in production (1 replica); the two take turns as the
candidate. For each N in ``--concurrency`` (all rollouts at once, one per model) it then runs
``--rounds`` rounds; in each, every model does:

* **a promotion**: a canary 10 % / 30 % / 60 % / 100 %, each pause either a whole multiple of
  the pass interval (``aligned``, like a user's ``5m``) or a random 1-(1 + interval) s
  (``random``: the pause ends at any phase of the controller's pass), alternately. A step's
  pause ends at ``step event time + pause``, both as the server records them (the ``step``
  event's ``at`` is the controller's ``step_started_at``). The latency of the next step is
  from there to the first tight poll of ``GET /api/v1/models/{name}/endpoint
  ?environment=production`` (one keep-alive poller thread per 10 models, a round every 10 ms
  at most) that answers the new weight (for the last step: the candidate alone at 100 %);
* **an abort**: a canary held at 50 %; once 50 % is visible, after a random 0-interval wait,
  ``POST /api/v1/deployments/{id}/abort``; the latency is from just before that request to the
  first poll answering the stable version alone at 100 %.

Each latency is split into the **controller's wait** (pause end, or abort request, to the
``step`` / ``promoted`` / ``aborted`` event's time: the pass interval's phase, the design's
floor) and the **propagation** (that event to the poll that saw it: the pass's commit, the
API's routing-generation poll, every 0.25 s, and the cache reload), with p50/p95/p99/max, the
poll's round time (the resolution of every figure), the controller's mean pass duration
(``modelreg_controller_pass_duration_seconds`` from its metrics port) and the goals
(p99 <= 1 s for a step, <= 2 s for an abort). RSS of every model-server process and machine
CPU use are recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, text

from bench.mixed_load import (
    BENCH_DB,
    DEFAULT_PG,
    TERMINAL,
    Server,
    _at,
    machine_busy,
    percentiles,
    rss_mb,
    setup_stable_models,
    start_server,
)
from bench.upload import Children, _sigterm, free_port, machine_info, source_info

MODELS_PER_POLLER = 10
VERSIONS = ("1.0", "1.1")  # each rollout ends before the next: the two take turns
STEP_WEIGHTS = (10, 30, 60)
STEP_GOAL_S = 1.0
ABORT_GOAL_S = 2.0
ROLLOUT_TIMEOUT_S = 240.0
POLL_PERIOD_S = 0.01
"""A poller's round starts at most this often: the time figures' resolution, and a poll rate
(100/s per poller) that leaves the API's core to the API, not to a busy loop of this bench."""


# -- the resolution poller --------------------------------------------------------------------


@dataclass
class Timeline:
    """What resolution answered for one model, each time it changed: (seen at, weights)."""

    changes: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def latest(self) -> dict[str, int]:
        return self.changes[-1][1] if self.changes else {}

    def first(self, after: float, ok: Any) -> float | None:
        """When a poll first answered a state ``ok`` accepts, if it still held at ``after`` or
        came later (a poll sees a state at its answer's time)."""
        for i, (t, weights) in enumerate(self.changes):
            nxt = self.changes[i + 1][0] if i + 1 < len(self.changes) else math.inf
            if nxt > after and ok(weights):
                return t  # before ``after`` only if the state came early (then negative)
        return None


class Poller:
    """Polls the endpoint of its models in turn, as fast as answers come."""

    def __init__(self, server: Server, models: list[str], period: float) -> None:
        self.server, self.models, self.period = server, models, period
        self.timelines = {m: Timeline() for m in models}
        self.rounds: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.server.url, headers=self.server.headers("resolver"), timeout=10
        ) as http:
            while not self.stop.is_set():
                t0 = time.time()
                for m in self.models:
                    try:
                        r = http.get(
                            f"/api/v1/models/{m}/endpoint", params={"environment": "production"}
                        )
                        seen = time.time()
                        if r.status_code != 200:
                            self.errors += 1
                            continue
                        weights = {e["versionNumber"]: e["weight"] for e in r.json()["endpoints"]}
                    except httpx.HTTPError:
                        self.errors += 1
                        continue
                    tl = self.timelines[m]
                    if weights != tl.latest():
                        tl.changes.append((seen, weights))
                self.rounds.append(time.time() - t0)
                time.sleep(max(0.0, t0 + self.period - time.time()))


def alone(version: str) -> Any:
    return lambda w: w.get(version) == 100 and all(v == 0 for k, v in w.items() if k != version)


def weight_is(version: str, weight: int) -> Any:
    return lambda w: w.get(version) == weight


# -- one model's rollouts ---------------------------------------------------------------------


@dataclass
class Driver:
    """One model: ``rounds`` times a promotion, then an abort; records what happened."""

    server: Server
    model: str
    timeline: Timeline
    interval: float
    rounds: int
    rng: random.Random
    stable: int = 0  # index into VERSIONS
    samples: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(
            base_url=self.server.url, headers=self.server.headers("deployer"), timeout=60
        ) as http:
            for r in range(self.rounds):
                try:
                    self._promotion(http, r)
                    self._abort(http)
                except (httpx.HTTPError, RuntimeError) as exc:
                    self.errors.append(f"{self.model}: {type(exc).__name__}: {exc}")

    def _pause(self, i: int) -> tuple[str, float]:
        if i % 2 == 0:
            return "aligned", self.interval * math.ceil(1.0 / self.interval)
        return "random", round(1.0 + self.rng.uniform(0, self.interval), 3)

    def _deploy(self, http: httpx.Client, version: str, steps: list[dict[str, Any]]) -> str:
        r = http.post(
            "/api/v1/deployments",
            json={
                "model": self.model,
                "versionNumber": version,
                "environment": "production",
                "strategyParams": {
                    "steps": steps,
                    "scaleDownDelay": "0s",
                    # No inference traffic here: the error-rate gate must not wait for it.
                    "analysis": {"requireTraffic": False},
                },
            },
        )
        if r.status_code != 202:
            raise RuntimeError(f"deploy answered {r.status_code}: {r.text[:300]}")
        return str(r.json()["id"])

    def _wait(self, http: httpx.Client, dep_id: str) -> tuple[str, list[dict[str, Any]]]:
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        while True:
            time.sleep(0.5)
            dep = http.get(f"/api/v1/deployments/{dep_id}").raise_for_status().json()
            if dep["status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"rollout {dep_id} did not finish: {dep['status']}")
        events = http.get(f"/api/v1/deployments/{dep_id}/events").raise_for_status().json()
        return str(dep["status"]), list(events)

    def _promotion(self, http: httpx.Client, r: int) -> None:
        candidate = (self.stable + 1) % len(VERSIONS)
        version = VERSIONS[candidate]
        pauses = [self._pause(r + i) for i in range(len(STEP_WEIGHTS))]
        steps: list[dict[str, Any]] = [
            {"weight": w, "pause": f"{p:g}s"}
            for w, (_, p) in zip(STEP_WEIGHTS, pauses, strict=True)
        ]
        steps.append({"weight": 100})
        status, events = self._wait(http, self._deploy(http, version, steps))
        if status != "Active":
            raise RuntimeError(f"promotion of {version} ended {status}")
        self.stable = candidate
        marks = [e for e in events if e["kind"] == "step"]
        promoted = next(e for e in events if e["kind"] == "promoted")
        for i, (kind, pause) in enumerate(pauses):
            due = _at(marks[i]["at"]) + pause
            if i + 1 < len(STEP_WEIGHTS):
                decided, ok = _at(marks[i + 1]["at"]), weight_is(version, STEP_WEIGHTS[i + 1])
            else:
                decided, ok = _at(promoted["at"]), alone(version)
            self._sample("step", kind, due, decided, ok)

    def _abort(self, http: httpx.Client) -> None:
        stable = VERSIONS[self.stable]
        version = VERSIONS[(self.stable + 1) % len(VERSIONS)]
        dep_id = self._deploy(http, version, [{"weight": 50, "pause": "1h"}, {"weight": 100}])
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        while self.timeline.latest().get(version) != 50:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{version} never reached 50 % in resolution")
            time.sleep(0.05)
        time.sleep(self.rng.uniform(0, self.interval))
        asked = time.time()
        http.post(f"/api/v1/deployments/{dep_id}/abort").raise_for_status()
        status, events = self._wait(http, dep_id)
        if status != "RolledBack":
            raise RuntimeError(f"abort of {version} ended {status}")
        aborted = next(e for e in events if e["kind"] == "aborted")
        self._sample("abort", "abort", asked, _at(aborted["at"]), alone(stable))

    def _sample(self, what: str, kind: str, start: float, decided: float, ok: Any) -> None:
        # Wait until the poller has had time to see it (it normally has by now).
        deadline = time.monotonic() + 10
        while (seen := self.timeline.first(start, ok)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if seen is None:
            self.errors.append(f"{self.model}: {what} never visible in resolution")
            return
        self.samples.append(
            {"what": what, "kind": kind, "start": start, "decided": decided, "seen": seen}
        )


# -- setup ------------------------------------------------------------------------------------


def setup_models(server: Server, n: int) -> list[str]:
    """N models, each with its stable version Active in production and two candidates."""
    models = [f"bench-ro-{i}" for i in range(n)]
    setup_stable_models(server, models, list(VERSIONS), timeout=600)
    return models


def pass_stats(port: int) -> tuple[float, float]:
    """(sum, count) of the controller's pass-duration histogram."""
    total = count = 0.0
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
            if line.startswith("modelreg_controller_pass_duration_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("modelreg_controller_pass_duration_seconds_count"):
                count = float(line.split()[-1])
    return total, count


# -- a run ------------------------------------------------------------------------------------


def one_round(
    server: Server, models: list[str], interval: float, cycles: int, rng: random.Random
) -> dict[str, Any]:
    """Every model in ``models`` at once: ``cycles`` promotions and aborts each."""
    pollers = [
        Poller(server, models[i : i + MODELS_PER_POLLER], POLL_PERIOD_S)
        for i in range(0, len(models), MODELS_PER_POLLER)
    ]
    timelines = {m: tl for p in pollers for m, tl in p.timelines.items()}
    drivers = [
        Driver(server, m, timelines[m], interval, cycles, random.Random(rng.random()))
        for m in models
    ]
    for d in drivers:
        d.stable = STABLE.get(d.model, 0)
    for p in pollers:
        p.thread.start()
    time.sleep(0.5)
    threads = [threading.Thread(target=d.run, daemon=True) for d in drivers]
    busy0, t0 = machine_busy(), time.monotonic()
    for t in threads:
        t.start()
    rss_peak = 0.0
    while any(t.is_alive() for t in threads):
        rss_peak = max(rss_peak, sum(rss_mb(pid) or 0.0 for pid in server.model_server_pids()))
        time.sleep(1)
    busy1 = machine_busy()
    for p in pollers:
        p.stop.set()
        p.thread.join()
    for d in drivers:
        STABLE[d.model] = d.stable
    return {
        "seconds": time.monotonic() - t0,
        "samples": [s for d in drivers for s in d.samples],
        "errors": [e for d in drivers for e in d.errors],
        "poll_rounds": [x for p in pollers for x in p.rounds],
        "poll_errors": sum(p.errors for p in pollers),
        "model_servers_rss_peak_mb": rss_peak,
        "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "loadavg_1m": os.getloadavg()[0],
    }


STABLE: dict[str, int] = {}  # model -> index of its stable version, across rounds


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for r in rounds for s in r["samples"]]
    out: dict[str, Any] = {}
    for what, kinds in (("step", ("aligned", "random", None)), ("abort", (None,))):
        for kind in kinds:
            chosen = [s for s in samples if s["what"] == what and kind in (None, s["kind"])]
            key = what if kind is None else f"{what} ({kind} pause)"
            out[key] = {
                "n": len(chosen),
                "total": percentiles([s["seen"] - s["start"] for s in chosen]),
                "controller_wait": percentiles([s["decided"] - s["start"] for s in chosen]),
                "propagation": percentiles([s["seen"] - s["decided"] for s in chosen]),
            }
    polls = [x for r in rounds for x in r["poll_rounds"]]
    out["poll_round"] = percentiles(polls)
    out["errors"] = [e for r in rounds for e in r["errors"]]
    out["poll_errors"] = sum(r["poll_errors"] for r in rounds)
    out["model_servers_rss_peak_mb"] = max(r["model_servers_rss_peak_mb"] for r in rounds)
    out["machine_busy"] = [r["machine_busy"] for r in rounds]
    out["loadavg_1m"] = [r["loadavg_1m"] for r in rounds]
    return out


def run_interval(interval: float, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="modelreg-latency-", dir=args.workdir))
    children = Children(work)
    server: Server | None = None
    STABLE.clear()
    rng = random.Random(args.seed)
    metrics_port = free_port()
    try:
        print(f"== controller interval {interval:g} s: modelreg serve in {work}", flush=True)
        t0 = time.monotonic()
        env = {
            "MODELREG_CONTROLLER_INTERVAL_SECONDS": f"{interval:g}",
            "MODELREG_CONTROLLER_METRICS_PORT": str(metrics_port),
        }
        server = start_server(children, work / "home", args.db, args.pg, env)
        models = setup_models(server, max(args.concurrency))
        print(f"   {len(models)} models set up in {time.monotonic() - t0:.0f} s", flush=True)
        per_n: dict[int, list[dict[str, Any]]] = {n: [] for n in args.concurrency}
        passes: dict[int, list[tuple[float, float]]] = {n: [] for n in args.concurrency}
        for r in range(args.rounds):
            for n in args.concurrency:  # interleaved, round by round
                cycles = args.single_cycles if n == 1 else 1
                before = pass_stats(metrics_port)
                res = one_round(server, models[:n], interval, cycles, rng)
                after = pass_stats(metrics_port)
                passes[n].append((after[0] - before[0], after[1] - before[1]))
                per_n[n].append(res)
                print(
                    f"   round {r + 1} N={n}: {len(res['samples'])} samples in "
                    f"{res['seconds']:.0f} s, errors {len(res['errors'])}, machine busy "
                    f"{res['machine_busy']:.0%}",
                    flush=True,
                )
                for e in res["errors"][:5]:
                    print(f"     {e}", flush=True)
        out: dict[str, Any] = {"interval_s": interval, "db": args.db, "by_concurrency": {}}
        for n, rounds in per_n.items():
            summary = summarize(rounds)
            total, count = map(sum, zip(*passes[n], strict=True))
            summary["controller_pass_mean_ms"] = total / count * 1e3 if count else None
            summary["controller_passes"] = count
            summary["rounds"] = rounds
            out["by_concurrency"][str(n)] = summary
        return out
    finally:
        if server is not None:
            children.close()  # SIGTERM to serve first, then the servers it left running
            server.kill_model_servers()
        children.close()
        if args.db == "postgres":
            with contextlib.suppress(Exception):
                engine = create_engine(make_url(args.pg), isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
                engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        "| interval | N | measure | n | p50 ms | p95 ms | p99 ms | max ms | goal |"
        " p99 / interval | controller wait p50 / p99 | propagation p50 / p99 |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for run in report["runs"]:
        iv = run["interval_s"]
        for n, s in run["by_concurrency"].items():
            for key, m in s.items():
                if not isinstance(m, dict) or "total" not in m or not m["n"]:
                    continue
                goal = ABORT_GOAL_S if key == "abort" else STEP_GOAL_S
                p99 = m["total"]["p99_ms"]
                verdict = "PASS" if p99 is not None and p99 <= goal * 1e3 else "FAIL"
                cw, pr = m["controller_wait"], m["propagation"]
                print(
                    f"| {iv:g} s | {n} | {key} | {m['n']} | {_ms(m['total']['p50_ms'])} | "
                    f"{_ms(m['total']['p95_ms'])} | {_ms(p99)} | {_ms(m['total']['max_ms'])} | "
                    f"<= {goal:g} s {verdict} | {p99 / 1e3 / iv:.2f} | "
                    f"{_ms(cw['p50_ms'])} / {_ms(cw['p99_ms'])} | "
                    f"{_ms(pr['p50_ms'])} / {_ms(pr['p99_ms'])} |"
                )
    print()
    for run in report["runs"]:
        for n, s in run["by_concurrency"].items():
            pr = s["poll_round"]
            print(
                f"interval {run['interval_s']:g} s, N={n}: controller pass mean "
                f"{_ms(s['controller_pass_mean_ms'])} ms over {s['controller_passes']:.0f} passes;"
                f" poll round p50 {pr['p50_ms']:.1f} ms, p99 {pr['p99_ms']:.1f} ms; model-server "
                f"RSS peak {s['model_servers_rss_peak_mb']:.0f} MB; machine busy "
                f"{', '.join(f'{b:.0%}' for b in s['machine_busy'])}; errors "
                f"{len(s['errors'])} (+{s['poll_errors']} poll)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rollout_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", default="1,20", help="concurrent rollouts (1,20)")
    parser.add_argument(
        "--intervals", default="0.5,2", help="controller pass intervals, s (0.5,2; 2 = default)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per N, interleaved (3)")
    parser.add_argument(
        "--single-cycles", type=int, default=5, help="promotion+abort cycles per round at N=1 (5)"
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--pg",
        default=os.environ.get("MODELREG_TEST_DATABASE_URL", DEFAULT_PG),
        help=f"admin URL of a PostgreSQL server; the database {BENCH_DB} is dropped and created",
    )
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=None, help="for the temp directories")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.concurrency = [int(n) for n in args.concurrency.split(",") if n]
    intervals = [float(x) for x in args.intervals.split(",") if x]
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.rollout_latency", *(argv or sys.argv[1:])]),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.workdir or Path(tempfile.gettempdir())),
        "source": source_info(),
        "runs": [],
    }
    for interval in intervals:
        report["runs"].append(run_interval(interval, args))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    errors = sum(len(s["errors"]) for run in report["runs"] for s in run["by_concurrency"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
