"""Benchmark validator overhead: ``validators.benchmark.benchmark_model``'s p50 against a bare
onnxruntime loop over the same model, inputs and session options, measured in the same run.

    python -m bench.validator_overhead [--width 512] [--layers 4] [--batch 1]
                                       [--iterations 3000] [--repeat 5] [--threads N]
                                       [--json out.json]

The model is built in code: ``layers`` blocks of MatMul (width x width) + Add (bias) + Relu on
a ``[batch, width]`` float input with a dynamic batch dimension. Each repeat runs both
measurements, alternating which goes first (the validator first in odd repeats), after one
untimed round of both. Both warm up for the same number of iterations and then time exactly
``iterations`` runs:

* validator: ``benchmark_model`` with ``min_iterations = max_iterations = iterations``,
  ``min_seconds = 0`` and no throughput phase; it opens its own session.
* bare: ``onnxruntime.InferenceSession`` (CPU provider, the same thread settings) and
  ``for _ in range(n): t0 = perf_counter_ns(); sess.run(None, feeds); append(...)``, on the
  inputs ``make_inputs`` generates (the same arrays the validator feeds).

It prints both p50s per repeat, their medians, the median of the per-repeat ratios
validator/bare, and PASS when that ratio is within 5 % of 1 (exit status 1 otherwise). It also
times both loops around a no-op ``run``: the median recorded sample (the timer's own cost, in
every sample) and the wall time per iteration (the loop's bookkeeping, outside the samples).

On a small VM, onnxruntime's default intra-op thread pool makes a session's latency
bimodal (on a 2-vCPU EPYC VM: about 39 or 62 us per run for the default model, fixed per
session), so single-repeat ratios can be far from 1 either way; ``--threads 1`` is steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.05


def build_model(path: Path, *, width: int, layers: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    current = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(width) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"]),
            helper.make_node("Relu", [f"add{i}"], [f"h{i}"]),
        ]
        current = f"h{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def run_validator(path: Path, args: argparse.Namespace) -> float:
    from validators.benchmark import BenchmarkPolicy, benchmark_model
    from validators.functional import FunctionalPolicy

    policy = BenchmarkPolicy(
        warmup_iterations=args.warmup,
        min_iterations=args.iterations,
        max_iterations=args.iterations,
        min_seconds=0.0,
        max_seconds=3600.0,
        batch_sizes=(),
        intra_op_threads=args.threads,
        inputs=FunctionalPolicy(batch_size=args.batch),
    )
    result = benchmark_model(path, policy=policy)
    if result["status"] != "Passed":
        raise SystemExit(f"benchmark_model failed: {result['error']}")
    assert result["latencyMs"]["iterations"] == args.iterations
    return float(result["latencyMs"]["p50"])


def run_bare(path: Path, args: argparse.Namespace) -> float:
    import numpy as np
    import onnxruntime as ort  # type: ignore[import-untyped]

    from validators.functional import FunctionalPolicy, make_inputs

    options = ort.SessionOptions()
    if args.threads is not None:
        options.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = make_inputs(sess, {}, policy=FunctionalPolicy(batch_size=args.batch))
    for _ in range(args.warmup):
        sess.run(None, feeds)
    perf_counter_ns = time.perf_counter_ns
    latencies = []
    for _ in range(args.iterations):
        t0 = perf_counter_ns()
        sess.run(None, feeds)
        latencies.append(perf_counter_ns() - t0)
    return float(np.percentile(np.asarray(latencies, dtype=np.float64) / 1e6, 50))


def harness_cost(iterations: int = 200_000) -> dict[str, float]:
    """The loops alone, around a no-op ``run``: the median recorded latency (what the timer
    adds to every sample) and the wall time per iteration (what the bookkeeping costs), in ns,
    for ``time_runs`` and for the bare loop."""
    import numpy as np

    from validators.benchmark import BenchmarkPolicy, time_runs

    def noop(names: Any, feeds: Any) -> None:
        return None

    policy = BenchmarkPolicy(
        warmup_iterations=0,
        min_iterations=iterations,
        max_iterations=iterations,
        min_seconds=0.0,
        max_seconds=3600.0,
    )
    start = time.perf_counter_ns()
    ours = time_runs(noop, {}, policy=policy)
    ours_wall = (time.perf_counter_ns() - start) / iterations
    perf_counter_ns = time.perf_counter_ns
    bare = []
    start = perf_counter_ns()
    for _ in range(iterations):
        t0 = perf_counter_ns()
        noop(None, {})
        bare.append(perf_counter_ns() - t0)
    bare_wall = (perf_counter_ns() - start) / iterations
    return {
        "validatorSampleNs": float(np.median(ours)),
        "bareSampleNs": float(np.median(bare)),
        "validatorWallNsPerIteration": ours_wall,
        "bareWallNsPerIteration": bare_wall,
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        build_model(path, width=args.width, layers=args.layers)
        print(
            f"model: {args.layers} x (MatMul {args.width}x{args.width} + Add + Relu), "
            f"batch {args.batch}, {path.stat().st_size / 1e6:.1f} MB; {args.iterations} timed "
            f"iterations after {args.warmup} warm-up, {args.repeat} repeats; "
            f"intra-op threads {args.threads or 'default'}"
        )
        print(
            f"cpu: {_cpu_model()} ({os.cpu_count()} logical), python {platform.python_version()}"
            f", onnxruntime {ort.__version__}"
        )
        print(
            f"{'repeat':>6} {'first':>9} {'validator p50 ms':>17} {'bare p50 ms':>12} {'ratio':>7}"
        )
        # An untimed round first: the first session in the process pays for thread-pool
        # start-up, allocator growth and CPU frequency ramp-up, whichever side runs it.
        run_validator(path, args)
        run_bare(path, args)
        for repeat in range(1, args.repeat + 1):
            validator_first = repeat % 2 == 1
            if validator_first:
                ours = run_validator(path, args)
                bare = run_bare(path, args)
            else:
                bare = run_bare(path, args)
                ours = run_validator(path, args)
            row = {
                "repeat": repeat,
                "validatorFirst": validator_first,
                "validatorP50Ms": ours,
                "bareP50Ms": bare,
                "ratio": ours / bare,
            }
            rows.append(row)
            print(
                f"{repeat:>6} {'validator' if validator_first else 'bare':>9} "
                f"{ours:>17.4f} {bare:>12.4f} {ours / bare:>7.3f}"
            )
    cost = harness_cost()
    print(
        "harness alone (no-op run, 200k iterations): median sample "
        f"validator {cost['validatorSampleNs']:.0f} ns, bare {cost['bareSampleNs']:.0f} ns; "
        f"wall per iteration validator {cost['validatorWallNsPerIteration']:.0f} ns, "
        f"bare {cost['bareWallNsPerIteration']:.0f} ns"
    )
    ratio = statistics.median(r["ratio"] for r in rows)
    ours_med = statistics.median(r["validatorP50Ms"] for r in rows)
    bare_med = statistics.median(r["bareP50Ms"] for r in rows)
    ok = abs(ratio - 1) <= TARGET
    print(
        f"median p50: validator {ours_med:.4f} ms, bare {bare_med:.4f} ms; "
        f"median ratio {ratio:.3f} -> {'PASS' if ok else 'FAIL'} (target within {TARGET:.0%})"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "cpu": _cpu_model(),
                    "logicalCores": os.cpu_count(),
                    "onnxruntime": ort.__version__,
                    "repeats": rows,
                    "medianValidatorP50Ms": ours_med,
                    "medianBareP50Ms": bare_med,
                    "medianRatio": ratio,
                    "pass": ok,
                },
                indent=2,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
