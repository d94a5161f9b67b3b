"""`modelreg scan` wall time as a user runs it: a fresh interpreter per scan, imports included.

    python -m bench.scan_wall [--rounds 15] [--against /path/to/other/checkout]

The file is a tiny benign pickle (``pickle.dump([1, 2])``), so the figure is the command's
start-up, not the scan. Each round runs, interleaved: ``python -c pass`` (the interpreter's
floor), then ``python -m api.cli scan`` from ``--against`` (another checkout, e.g. a
``git worktree`` of the commit before a change) when given, then from this checkout. Medians
and the ratio of this checkout to the other are printed; MODELREG_* settings are not passed.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _python_path(tree: Path) -> str:
    return os.pathsep.join((str(tree), str(tree / "api" / "python-client")))


def _wall(cmd: list[str], tree: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["PYTHONPATH"] = _python_path(tree)
    start = time.perf_counter()
    subprocess.run(
        cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, check=False, timeout=120
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "tiny.pkl"
        target.write_bytes(pickle.dumps([1, 2]))
        scan = [sys.executable, "-m", "api.cli", "scan", str(target)]
        sides: dict[str, tuple[list[str], Path]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], HERE)
        }
        if args.against:
            sides[f"scan, {args.against}"] = (scan, args.against.resolve())
        sides["scan, this checkout"] = (scan, HERE)
        walls: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, (cmd, tree) in sides.items():
                walls[name].append(_wall(cmd, tree))
    width = max(len(name) for name in walls)
    print(f"{'':{width}} {'median':>8} {'min':>7} {'max':>7}")
    for name, values in walls.items():
        print(
            f"{name:{width}} {statistics.median(values):7.3f}s"
            f" {min(values):6.3f}s {max(values):6.3f}s"
        )
    if args.against:
        this, other = (statistics.median(v) for v in list(walls.values())[-1:-3:-1])
        print(f"this checkout / other: {this / other:.3f}")


if __name__ == "__main__":
    main()
