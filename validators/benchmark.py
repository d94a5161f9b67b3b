"""The performance benchmark of an ONNX artifact on CPU.

``benchmark_model(path, ...)`` returns the JSON stored as
``AIModelValidationResult.performanceBenchmark``::

    {
      "status": "Passed" | "Failed" | "Skipped",
      "error": str | None,                       # why, when not Passed
      "modelFile": "model.onnx",
      "modelLoadSeconds": 0.12,                  # InferenceSession creation
      "batchSize": 1,                            # batch of the latency measurement
      "inputs": {"x": {"dtype": "float32", "shape": [1, 512]}},
      "latencyMs": {"p50", "p90", "p95", "p99", "mean", "min", "max", "iterations"},
      "throughput": {"1": 812.3, "8": 2950.1}, # inferences/s per batch size (sequential)
      "throughputSkipped": str | None,           # why there is no throughput
      "peakRssBytes": 123456789,                 # ru_maxrss of this process
      "sessionOptions": {"intraOpNumThreads", "interOpNumThreads",
                         "graphOptimizationLevel", "executionMode", "providers"},
      "cpu": {"model": str | None, "logicalCores": int | None},
      "toolVersions": {"onnx", "onnxruntime", "numpy"},
      "policy": {...},                           # the BenchmarkPolicy used
      "repeats": [{"p50", "p95", "p99", "iterations"}, ...],  # one per repeat, in ms
      "p99Spread": 1.12 | None,                  # max/min p99 across the repeats
      "noisy": false,                            # see "Noise" below
      "noisyReasons": [str, ...],
      "regression": {"baselineP95Ms", "p95Ratio", "noisy", "note"} | None
    }

Measurement: after ``warmup_iterations`` untimed runs, the session runs until both
``min_iterations`` and ``min_seconds`` are reached, stopping early at ``max_iterations`` or
``max_seconds`` (each measured phase has its own ``max_seconds``). Only
``session.run(None, feeds)`` is inside the timed region (``time.perf_counter_ns``); the inputs
are generated once (``validators.functional.make_inputs``) and the raw latencies go into a
preallocated list, so the loop adds nothing but a few integer operations per iteration.

Noise: the latency measurement is split into ``repeats`` (3) runs of ``time_runs``, each with
a third of the iteration and time budget (so the whole takes no longer than one run did), and
the latencies of all repeats make ``latencyMs``. A benchmark is ``noisy`` when the p99 of its
slowest repeat is more than ``noisy_spread`` (1.5) times the p99 of its fastest (with at least
3 repeats), or when it ran fewer than ``min_p99_iterations`` (100) timed iterations in all: a
p99 of fewer samples is one of the last two latencies. ``noisyReasons`` says which.

Throughput is measured per batch size only when the first dimension of every input is dynamic
(inputs of batch ``b`` for ``b`` in ``batch_sizes``); it is ``b / mean latency``, one request at
a time. ``regression`` compares the p95 with ``baseline_p95_ms`` (the caller passes the p95 of
the version currently in Production): a ratio above 1 means slower. Its ``noisy`` is true when
this benchmark or the baseline's (``baseline_noisy``) was noisy, and ``note`` then says the
ratio is not to be trusted.

Like the functional check it never raises for a bad artifact: the dict then has
``status: "Failed"`` (or ``"Skipped"`` when the artifact is not ONNX) and ``error``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.vocabulary import CheckStatus
from validators.functional import (
    CheckProblem,
    FunctionalPolicy,
    Session,
    make_inputs,
    open_session,
    resolve_model_file,
    tool_versions,
)

__all__ = ["BenchmarkPolicy", "benchmark_model", "noise_of", "time_repeats", "time_runs"]


@dataclass(frozen=True)
class BenchmarkPolicy:
    warmup_iterations: int = 10
    min_iterations: int = 50
    #: Upper bound on timed iterations per phase (also the size of the latency buffer).
    max_iterations: int = 100_000
    min_seconds: float = 1.0
    #: Cap on the timed part of each phase; stops even before ``min_iterations``.
    max_seconds: float = 30.0
    batch_sizes: tuple[int, ...] = (1, 8)
    #: The latency measurement is split into this many runs, sharing its budget.
    repeats: int = 3
    #: Max/min p99 across the repeats above which the benchmark is noisy.
    noisy_spread: float = 1.5
    #: Fewer timed iterations than this make a p99 that is noisy.
    min_p99_iterations: int = 100
    #: None: onnxruntime's default.
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    #: How inputs are generated (dynamic dimensions, value ranges, size limit).
    inputs: FunctionalPolicy = field(default_factory=FunctionalPolicy)


def time_runs(
    run: Callable[[list[str] | None, Mapping[str, Any]], Any],
    feeds: Mapping[str, Any],
    *,
    policy: BenchmarkPolicy,
) -> list[int]:
    """Warm up, then time ``run(None, feeds)`` per the policy; the latencies in nanoseconds."""
    for _ in range(policy.warmup_iterations):
        run(None, feeds)
    capacity = max(policy.max_iterations, 1)
    latencies = [0] * capacity
    min_iterations = min(policy.min_iterations, capacity)
    min_ns = int(policy.min_seconds * 1e9)
    max_ns = int(policy.max_seconds * 1e9)
    clock = time.perf_counter_ns
    count = 0
    start = clock()
    while count < capacity:
        t0 = clock()
        run(None, feeds)
        t1 = clock()
        latencies[count] = t1 - t0
        count += 1
        elapsed = t1 - start
        if (count >= min_iterations and elapsed >= min_ns) or elapsed >= max_ns:
            break
    del latencies[count:]
    return latencies


def _latency_summary(latencies_ns: list[int]) -> dict[str, Any]:
    import numpy as np

    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    return {
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "iterations": len(latencies_ns),
    }


def time_repeats(
    run: Callable[[list[str] | None, Mapping[str, Any]], Any],
    feeds: Mapping[str, Any],
    *,
    policy: BenchmarkPolicy,
) -> list[list[int]]:
    """``policy.repeats`` runs of :func:`time_runs` that share its budget: the iterations are
    split between them (the totals stay the policy's) and so are the seconds; only the first
    warms up."""
    repeats = max(1, policy.repeats)

    def part(total: int, index: int) -> int:
        return total // repeats + (1 if index < total % repeats else 0)

    runs = []
    for index in range(repeats):
        share = dataclasses.replace(
            policy,
            warmup_iterations=policy.warmup_iterations if index == 0 else 0,
            min_iterations=part(policy.min_iterations, index),
            max_iterations=max(1, part(policy.max_iterations, index)),
            min_seconds=policy.min_seconds / repeats,
            max_seconds=policy.max_seconds / repeats,
        )
        runs.append(time_runs(run, feeds, policy=share))
    return runs


def noise_of(repeats: list[list[int]], *, policy: BenchmarkPolicy) -> dict[str, Any]:
    """The repeats' percentiles, their p99 spread, and whether (and why) they are noisy."""
    import numpy as np

    summaries = []
    for latencies in repeats:
        ms = np.asarray(latencies, dtype=np.float64) / 1e6
        p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
        summaries.append({"p50": p50, "p95": p95, "p99": p99, "iterations": len(latencies)})
    reasons = []
    spread = None
    p99s = [r["p99"] for r in summaries]
    if len(p99s) >= 3 and min(p99s) > 0:
        spread = max(p99s) / min(p99s)
        if spread > policy.noisy_spread:
            reasons.append(
                f"p99 varied {spread:.2f}x across {len(p99s)} repeats "
                f"(more than {policy.noisy_spread}x)"
            )
    iterations = sum(len(r) for r in repeats)
    if iterations < policy.min_p99_iterations:
        reasons.append(
            f"only {iterations} timed iterations, fewer than the {policy.min_p99_iterations} "
            "a p99 needs"
        )
    return {
        "repeats": summaries,
        "p99Spread": spread,
        "noisy": bool(reasons),
        "noisyReasons": reasons,
    }


def _cpu() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    model = value.strip()
                    break
    except OSError:
        pass
    return {"model": model, "logicalCores": os.cpu_count()}


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB else


def _session_options(session: Session) -> dict[str, Any]:
    options = session.get_session_options()
    return {
        "intraOpNumThreads": int(options.intra_op_num_threads),  # 0: onnxruntime's default
        "interOpNumThreads": int(options.inter_op_num_threads),
        "graphOptimizationLevel": str(options.graph_optimization_level).rsplit(".", 1)[-1],
        "executionMode": str(options.execution_mode).rsplit(".", 1)[-1],
        "providers": list(session.get_providers()),
    }


def _policy_dict(policy: BenchmarkPolicy) -> dict[str, Any]:
    data = dataclasses.asdict(policy)
    data.pop("inputs")
    data["batch_sizes"] = list(policy.batch_sizes)
    return {
        "".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v
        for k, v in data.items()
    }


def _dynamic_batch(session: Session) -> str | None:
    """None when every input has a dynamic first dimension, else why throughput is skipped."""
    for arg in session.get_inputs():
        shape = arg.shape or []
        if not shape:
            return f"input {arg.name!r} is a scalar or of unknown rank"
        if isinstance(shape[0], int) and shape[0] >= 0:
            return f"the first dimension of input {arg.name!r} is fixed at {shape[0]}"
    return None


def _regression(
    baseline_p95_ms: float, ratio: float | None, *, noisy: bool, baseline_noisy: bool
) -> dict[str, Any]:
    """The p95 ratio against the baseline, and whether noise makes it unreliable."""
    sides = [
        name for name, is_noisy in (("this", noisy), ("the baseline", baseline_noisy)) if is_noisy
    ]
    note = None
    if sides:
        note = (
            f"{' and '.join(sides)} benchmark {'were' if len(sides) > 1 else 'was'} noisy: "
            "the ratio is not reliable"
        )
    return {
        "baselineP95Ms": baseline_p95_ms,
        "p95Ratio": ratio,
        "noisy": bool(sides),
        "baselineNoisy": baseline_noisy,
        "note": note,
    }


def benchmark_model(
    path: Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    policy: BenchmarkPolicy | None = None,
    baseline_p95_ms: float | None = None,
    baseline_noisy: bool = False,
) -> dict[str, Any]:
    """Benchmark the ONNX model at ``path`` (a file or a bundle directory) on CPU; see the
    module docstring for the result. Never raises for a bad artifact."""
    policy = policy or BenchmarkPolicy()
    params: Mapping[str, Any] = parameters or {}
    result: dict[str, Any] = {
        "status": CheckStatus.PASSED,
        "error": None,
        "modelFile": None,
        "modelLoadSeconds": None,
        "batchSize": None,
        "inputs": {},
        "latencyMs": None,
        "throughput": {},
        "throughputSkipped": None,
        "peakRssBytes": None,
        "sessionOptions": None,
        "cpu": _cpu(),
        "toolVersions": {},
        "policy": _policy_dict(policy),
        "repeats": [],
        "p99Spread": None,
        "noisy": False,
        "noisyReasons": [],
        "regression": None,
    }
    try:
        result["toolVersions"] = tool_versions()
        model_file = resolve_model_file(path, params)
        result["modelFile"] = model_file.name
        started = time.perf_counter()
        try:
            session = open_session(
                model_file,
                intra_op_threads=policy.intra_op_threads,
                inter_op_threads=policy.inter_op_threads,
            )
        except Exception as exc:
            raise CheckProblem(
                "benchmark.session",
                f"onnxruntime cannot load the model: {type(exc).__name__}: {exc}",
            ) from exc
        result["modelLoadSeconds"] = time.perf_counter() - started
        result["sessionOptions"] = _session_options(session)

        feeds = make_inputs(session, params, policy=policy.inputs)
        result["inputs"] = {
            k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in feeds.items()
        }
        first = next(iter(feeds.values()), None)
        batch = int(first.shape[0]) if first is not None and first.ndim else None
        result["batchSize"] = batch
        repeats = time_repeats(session.run, feeds, policy=policy)
        latencies = [ns for run in repeats for ns in run]
        latency = _latency_summary(latencies)
        result["latencyMs"] = latency
        result.update(noise_of(repeats, policy=policy))
        del feeds

        why_not = _dynamic_batch(session)
        if why_not is not None:
            result["throughputSkipped"] = why_not
        for size in policy.batch_sizes if why_not is None else ():
            if size == batch:
                runs = latencies
            else:
                try:
                    sized = make_inputs(session, params, policy=policy.inputs, batch_size=size)
                except CheckProblem as problem:
                    result["throughput"][str(size)] = None
                    result["throughputSkipped"] = f"batch {size}: {problem.message}"
                    continue
                runs = time_runs(session.run, sized, policy=policy)
                del sized
            result["throughput"][str(size)] = size * len(runs) / (sum(runs) / 1e9)

        if baseline_p95_ms is not None:
            ratio = latency["p95"] / baseline_p95_ms if baseline_p95_ms > 0 else None
            result["regression"] = _regression(
                baseline_p95_ms, ratio, noisy=result["noisy"], baseline_noisy=baseline_noisy
            )
    except CheckProblem as problem:
        result["status"] = CheckStatus.SKIPPED if problem.not_onnx else CheckStatus.FAILED
        result["error"] = f"{problem.rule_id}: {problem.message}"
    except Exception as exc:  # never raise for an artifact: the error is the result
        result["status"] = CheckStatus.FAILED
        result["error"] = f"benchmark.error: {type(exc).__name__}: {exc}"
    result["peakRssBytes"] = _peak_rss_bytes()
    return result
