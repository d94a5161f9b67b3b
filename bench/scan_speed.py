"""Scanner throughput and memory against picklescan, on the same files in the same run.

    python -m bench.scan_speed [--only numpy500,floats45,onnx1g] [--repeat 3] [--json out.json]
        [--against /path/to/other/checkout]

Files, generated once in a temporary folder on the local disk:

- ``numpy500``: a ~500 MB benign pickle of one numpy array (float32, random values);
- ``floats45``: a ~45 MB opcode-heavy pickle, a list of 5 million floats;
- ``onnx1g``: a ~1 GB ONNX model whose weights are external data (``weights.bin``).

Each scanner runs in a fresh process per file and repeat, so that its peak RSS (``VmHWM``
of that process) is its own; the time is the scan call alone, without interpreter start and
imports. Scanners: modelreg's ``scan_artifact`` and picklescan's ``scan_file_path`` (or
``scan_directory_path`` for the ONNX folder). modelreg's target: at least picklescan's MB/s on
each file, with a peak RSS under 150 MB whatever the file size. ``--against`` also runs
another checkout's scanner on the same files in the same rounds (issue 16: no more than 10 %
slower or larger than before it).

Then each file's whole command, as a user runs it (``--wall-rounds``, default 5): the wall
time of ``modelreg scan FILE`` against ``picklescan --path FILE``, each a fresh interpreter
with its imports, interleaved round by round (which goes first alternates), with
``python -c pass`` as the floor. The goal (issue 15, item 3): ``modelreg scan`` at least as fast
as picklescan's command on the 500 MB pickle. ``--wall-only`` skips the in-process part.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 1_000_000

CHILD = r"""
import json, sys, time
from pathlib import Path
scanner, target = sys.argv[1], Path(sys.argv[2])
if scanner == "modelreg":
    from validators.security import scan_artifact
    t0 = time.perf_counter()
    report = scan_artifact(target)
    seconds = time.perf_counter() - t0
    summary = {"status": report.status, "verdict": report.verdict,
               "findings": [f.rule_id for f in report.findings][:10],
               "bytesScanned": report.bytes_scanned}
else:
    from picklescan.scanner import scan_directory_path, scan_file_path
    t0 = time.perf_counter()
    result = scan_directory_path(str(target)) if target.is_dir() else scan_file_path(str(target))
    seconds = time.perf_counter() - t0
    summary = {"scannedFiles": result.scanned_files, "issues": result.issues_count,
               "scanError": result.scan_err}
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
status = Path("/proc/self/status").read_text()
rss = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) * 1024
print(json.dumps({"seconds": seconds, "peakRssBytes": rss, "summary": summary}))
"""


def make_numpy(path: Path, size: int) -> None:
    import numpy as np

    array = np.random.default_rng(0).random(size // 4, dtype=np.float32)
    with path.open("wb") as fh:
        pickle.dump(array, fh, protocol=4)


def make_floats(path: Path, count: int) -> None:
    import random

    rng = random.Random(0)
    with path.open("wb") as fh:
        pickle.dump([rng.random() for _ in range(count)], fh, protocol=4)


def make_onnx(folder: Path, size: int) -> None:
    from onnx import TensorProto, helper

    folder.mkdir()
    elements = size // 4
    with (folder / "weights.bin").open("wb") as fh:
        block = os.urandom(1 << 24)
        written = 0
        while written < elements * 4:
            n = min(len(block), elements * 4 - written)
            fh.write(block[:n])
            written += n
    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[elements])
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(size))):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "big", [x], [y], [weights]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def total_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


HERE = Path(__file__).resolve().parents[1]


def run_scanner(scanner: str, target: Path, tree: Path = HERE) -> dict[str, Any]:
    """One scan in a fresh interpreter; modelreg's code comes from the checkout ``tree``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["PYTHONPATH"] = os.pathsep.join((str(tree), str(tree / "api" / "python-client")))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, scanner, str(target)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def command(scanner: str, target: Path) -> list[str]:
    """The command a user types, with this interpreter (so this checkout's modelreg)."""
    if scanner == "modelreg":
        return [sys.executable, "-m", "api.cli", "scan", str(target)]
    if scanner == "picklescan":
        return [sys.executable, "-m", "picklescan", "--path", str(target)]
    return [sys.executable, "-c", "pass"]


def wall_rounds(target: Path, rounds: int) -> dict[str, list[float]]:
    """Wall seconds per command over ``rounds`` interleaved rounds. A scan's exit status is
    its verdict (picklescan: 0 clean; modelreg: 0 passed), so anything else is an error."""
    order = ["floor", "modelreg", "picklescan"]
    walls: dict[str, list[float]] = {name: [] for name in order}
    for i in range(rounds):
        for name in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            done = subprocess.run(command(name, target), capture_output=True, text=True)
            walls[name].append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise SystemExit(f"{name} on {target} exited {done.returncode}: {done.stdout}")
    return walls


def report_walls(files: dict[str, Path], rounds: int) -> list[dict[str, Any]]:
    print(f"\nwall time of the whole command, median of {rounds} interleaved rounds")
    header = ("file", "python -c pass", "modelreg scan", "picklescan", "ratio")
    print("{:9} {:>15} {:>14} {:>11} {:>7}".format(*header))
    rows = []
    for name, target in files.items():
        walls = wall_rounds(target, rounds)
        med = {k: statistics.median(v) for k, v in walls.items()}
        ratio = med["modelreg"] / med["picklescan"]
        print(
            f"{name:9} {med['floor']:14.3f}s {med['modelreg']:13.3f}s {med['picklescan']:10.3f}s "
            f"{ratio:6.2f}x",
            flush=True,
        )
        rows.append({"file": name, "wallSeconds": walls, "medianWall": med, "ratio": ratio})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="numpy500,floats45,onnx1g")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the files (tests)")
    parser.add_argument("--wall-rounds", type=int, default=5)
    parser.add_argument("--wall-only", action="store_true")
    parser.add_argument(
        "--against", type=Path, help="another checkout whose scanner runs in the same rounds"
    )
    args = parser.parse_args()
    sides = {
        "modelreg": HERE,
        **({"modelreg-base": args.against.resolve()} if args.against else {}),
    }
    wanted = args.only.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="modelreg-scan-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        files: dict[str, Path] = {}
        if "numpy500" in wanted:
            files["numpy500"] = tmp / "array.pkl"
            make_numpy(files["numpy500"], int(500 * MB * args.scale))
        if "floats45" in wanted:
            files["floats45"] = tmp / "floats.pkl"
            make_floats(files["floats45"], int(5_000_000 * args.scale))
        if "onnx1g" in wanted:
            files["onnx1g"] = tmp / "onnx-model"
            make_onnx(files["onnx1g"], int(1000 * MB * args.scale))
        walls = report_walls(files, args.wall_rounds) if args.wall_rounds else []
        for name, target in files.items() if not args.wall_only else ():
            size = total_size(target)
            for scanner in (*sides, "picklescan"):
                kind = "picklescan" if scanner == "picklescan" else "modelreg"
                runs = [
                    run_scanner(kind, target, sides.get(scanner, HERE)) for _ in range(args.repeat)
                ]
                seconds = statistics.median(r["seconds"] for r in runs)
                rows.append(
                    {
                        "file": name,
                        "sizeBytes": size,
                        "scanner": scanner,
                        "medianSeconds": seconds,
                        "mbPerSecond": size / MB / seconds,
                        "peakRssBytes": max(r["peakRssBytes"] for r in runs),
                        "summary": runs[-1]["summary"],
                    }
                )
                print(
                    f"{name:9} {scanner:10} {seconds:8.3f} s {size / MB / seconds:9.1f} MB/s "
                    f"peak RSS {max(r['peakRssBytes'] for r in runs) / MB:6.0f} MB  "
                    f"{json.dumps(runs[-1]['summary'])}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"{'file':9} {'size MB':>8} {'modelreg MB/s':>14} {'picklescan MB/s':>16} "
        f"{'speed ratio':>12} {'modelreg RSS MB':>16} {'picklescan RSS MB':>18}"
    )
    for name in files if not args.wall_only else ():
        ours = next(r for r in rows if r["file"] == name and r["scanner"] == "modelreg")
        theirs = next(r for r in rows if r["file"] == name and r["scanner"] == "picklescan")
        print(
            f"{name:9} {ours['sizeBytes'] / MB:8.0f} {ours['mbPerSecond']:14.1f} "
            f"{theirs['mbPerSecond']:16.1f} {ours['mbPerSecond'] / theirs['mbPerSecond']:11.2f}x "
            f"{ours['peakRssBytes'] / MB:16.0f} {theirs['peakRssBytes'] / MB:18.0f}"
        )
    for name in files if args.against and not args.wall_only else ():
        ours = next(r for r in rows if r["file"] == name and r["scanner"] == "modelreg")
        base = next(r for r in rows if r["file"] == name and r["scanner"] == "modelreg-base")
        print(
            f"{name:9} against {args.against}: time "
            f"{ours['medianSeconds'] / base['medianSeconds']:.2f}x, peak RSS "
            f"{ours['peakRssBytes'] / base['peakRssBytes']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"inProcess": rows, "wall": walls}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
