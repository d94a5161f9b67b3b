"""Every benchmark in docs/benchmarks.md, one after another, in one run.

    python -m bench.all --out /tmp/bench-run [--base af92e6c] [--only resolve,writes]

Each benchmark runs as its own process with the arguments docs/benchmarks.md quotes, its
output (stdout and stderr) written to ``OUT/<name>.txt`` and its results to ``OUT/<name>.json``.
Benchmarks that compare against other code (``--against``) get one git worktree of ``--base``
(default: ``af92e6c``, main before issue 15), made once and removed at the end. ``OUT/run.json``
records the commit, the date, the machine's load before each benchmark, and each one's wall
time and exit status. One failing benchmark does not stop the others; the exit status is 1 if
any failed.

Run it on a quiet machine: the benchmarks share its two cores with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> the arguments after ``python -m bench.<name>`` (``{base}``: the base worktree,
# ``{json}``: this benchmark's JSON file).
RUNS: dict[str, list[str]] = {
    "scan_wall": ["--rounds", "15", "--against", "{base}"],
    "scan_speed": [
        "--repeat",
        "3",
        "--wall-rounds",
        "5",
        "--against",
        "{base}",
        "--json",
        "{json}",
    ],
    "scan_compare": ["--json", "{json}"],
    "upload": ["--size-mib", "1024", "--repeat", "3", "--json", "{json}"],
    "validator_overhead": ["--threads", "1", "--repeat", "5", "--json", "{json}"],
    "writes": ["--against", "{base}", "--duration", "8", "--rounds", "3", "--json", "{json}"],
    "resolve": ["--rounds", "3", "--duration", "5", "--connections", "1,32", "--json", "{json}"],
    "cli_client": ["--runs", "15", "--json", "{json}"],
    "metrics_multiprocess": ["--rounds", "5"],
    "feedback_summary": ["--json", "{json}"],
    "controller_pass": [
        *("--sizes", "100,1000,10000", "--databases", "sqlite,postgresql"),
        *("--passes", "5", "--rounds", "1", "--against", "{base}", "--json", "{json}"),
    ],
    "validation_throughput": ["--seconds", "60", "--rounds", "2", "--json", "{json}"],
    "rollout_latency": [
        *("--concurrency", "1,20", "--intervals", "2", "--rounds", "1"),
        *("--single-cycles", "3", "--json", "{json}"),
    ],
    "integrity": ["--rounds", "3", "--json", "{json}"],
    "mixed_load": ["--db", "both", "--seconds", "60", "--json", "{json}"],
}


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_one(name: str, args: list[str], out: Path, base: Path, log: Callable[[str], None]) -> dict:
    argv = [a.format(base=base, json=out / f"{name}.json") for a in args]
    cmd = [sys.executable, "-m", f"bench.{name}", *argv]
    log(f"{name}: {' '.join(cmd[1:])} (load {load()})")
    started, before = time.monotonic(), load()
    with (out / f"{name}.txt").open("w") as f:
        f.write("$ python " + " ".join(cmd[1:]) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = round(time.monotonic() - started, 1)
    log(f"{name}: exit {rc} after {seconds} s")
    return {"command": " ".join(cmd[1:]), "exit": rc, "seconds": seconds, "load_before": before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the outputs go")
    parser.add_argument("--base", default="af92e6c", help="the code to compare with (af92e6c)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (all)")
    opts = parser.parse_args()
    names = [n for n in opts.only.split(",") if n] or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(RUNS)}")
    opts.out.mkdir(parents=True, exist_ok=True)
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    record: dict = {
        "commit": git("rev-parse", "HEAD") + ("+uncommitted" if dirty else ""),
        "base": git("rev-parse", opts.base),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "runs": {},
    }

    def log(line: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", flush=True)

    base = Path(tempfile.mkdtemp(prefix="modelreg-base-"))
    git("worktree", "add", "--detach", str(base), opts.base)
    try:
        for name in names:
            record["runs"][name] = run_one(name, RUNS[name], opts.out, base, log)
            (opts.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    finally:
        git("worktree", "remove", "--force", str(base))
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    (opts.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    failed = [n for n, r in record["runs"].items() if r["exit"] != 0]
    log(f"done; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
