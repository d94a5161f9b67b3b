"""The benchmark's result: its keys and their consistency. It never asserts how fast anything
is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from validators.benchmark import (  # noqa: E402
    BenchmarkPolicy,
    benchmark_model,
    noise_of,
    time_repeats,
    time_runs,
)

TINY = BenchmarkPolicy(
    warmup_iterations=2,
    min_iterations=20,
    max_iterations=1000,
    min_seconds=0.0,
    max_seconds=5.0,
    batch_sizes=(1, 4),
)


def relu_model(path: Path, *, batch: int | str = "batch") -> Path:
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def dynamic_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = relu_model(tmp_path_factory.mktemp("bench") / "m.onnx")
    return benchmark_model(path, policy=TINY, baseline_p95_ms=0.5)


def test_result_has_the_documented_keys(dynamic_result: dict[str, Any]) -> None:
    assert dynamic_result["status"] == "Passed", dynamic_result["error"]
    assert dynamic_result["error"] is None
    assert {
        "modelLoadSeconds",
        "latencyMs",
        "throughput",
        "throughputSkipped",
        "peakRssBytes",
        "sessionOptions",
        "cpu",
        "toolVersions",
        "regression",
        "inputs",
        "batchSize",
    } <= set(dynamic_result)
    assert dynamic_result["modelFile"] == "m.onnx"
    assert dynamic_result["modelLoadSeconds"] > 0
    assert dynamic_result["peakRssBytes"] > 1_000_000
    assert dynamic_result["sessionOptions"]["providers"] == ["CPUExecutionProvider"]
    assert dynamic_result["sessionOptions"]["graphOptimizationLevel"] == "ORT_ENABLE_ALL"
    assert dynamic_result["cpu"]["logicalCores"] >= 1
    assert dynamic_result["toolVersions"]["onnxruntime"]
    assert dynamic_result["inputs"] == {"x": {"dtype": "float32", "shape": [1, 8]}}


def test_latency_percentiles_are_ordered(dynamic_result: dict[str, Any]) -> None:
    latency = dynamic_result["latencyMs"]

    assert set(latency) == {"p50", "p90", "p95", "p99", "mean", "min", "max", "iterations"}
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p95"]
    assert latency["p95"] <= latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert TINY.min_iterations <= latency["iterations"] <= TINY.max_iterations


def test_throughput_per_batch_size_for_a_dynamic_batch(dynamic_result: dict[str, Any]) -> None:
    assert set(dynamic_result["throughput"]) == {"1", "4"}
    assert all(v > 0 for v in dynamic_result["throughput"].values())
    assert dynamic_result["throughputSkipped"] is None


def test_regression_ratio_against_the_baseline(dynamic_result: dict[str, Any]) -> None:
    regression = dynamic_result["regression"]

    assert regression["baselineP95Ms"] == 0.5
    assert regression["p95Ratio"] == pytest.approx(dynamic_result["latencyMs"]["p95"] / 0.5)


def test_fixed_batch_has_no_throughput_and_says_why(tmp_path: Path) -> None:
    result = benchmark_model(relu_model(tmp_path / "m.onnx", batch=2), policy=TINY)

    assert result["status"] == "Passed", result["error"]
    assert result["throughput"] == {}
    assert "fixed at 2" in result["throughputSkipped"]
    assert result["regression"] is None
    assert result["inputs"]["x"]["shape"] == [2, 8]


def test_parameters_set_the_benchmark_shapes(tmp_path: Path) -> None:
    result = benchmark_model(
        relu_model(tmp_path / "m.onnx"),
        parameters={"dimensions": {"batch": 3}},
        policy=BenchmarkPolicy(
            warmup_iterations=1, min_iterations=5, min_seconds=0.0, batch_sizes=()
        ),
    )

    assert result["status"] == "Passed", result["error"]
    assert result["batchSize"] == 3
    assert result["throughput"] == {}


def test_bad_artifact_fails_without_raising(tmp_path: Path) -> None:
    junk = tmp_path / "m.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 100)

    result = benchmark_model(junk, policy=TINY)

    assert result["status"] == "Failed"
    assert "benchmark.session" in result["error"]
    assert result["latencyMs"] is None


def test_bundle_without_a_model_is_skipped(tmp_path: Path) -> None:
    result = benchmark_model(tmp_path, policy=TINY)

    assert result["status"] == "Skipped"
    assert "no .onnx" in result["error"]


@pytest.mark.parametrize(
    ("policy", "iterations"),
    [
        pytest.param(
            BenchmarkPolicy(
                warmup_iterations=0, min_iterations=10**6, max_iterations=7, min_seconds=60.0
            ),
            7,
            id="capped-by-max-iterations",
        ),
        pytest.param(
            BenchmarkPolicy(
                warmup_iterations=0, min_iterations=10**6, min_seconds=60.0, max_seconds=0.0
            ),
            1,
            id="capped-by-max-seconds",
        ),
        pytest.param(
            BenchmarkPolicy(warmup_iterations=0, min_iterations=12, min_seconds=0.0),
            12,
            id="min-iterations-reached",
        ),
    ],
)
def test_time_runs_stops_as_the_policy_says(policy: BenchmarkPolicy, iterations: int) -> None:
    calls: list[object] = []

    def run(names: list[str] | None, feeds: Any) -> None:
        calls.append(feeds)

    latencies = time_runs(run, {"x": 1}, policy=policy)

    assert len(latencies) == iterations
    assert len(calls) == iterations + policy.warmup_iterations
    assert all(ns >= 0 for ns in latencies)


def test_the_benchmark_runs_repeats_and_says_whether_it_is_noisy(
    dynamic_result: dict[str, Any],
) -> None:
    repeats = dynamic_result["repeats"]

    assert len(repeats) == TINY.repeats == 3
    assert sum(r["iterations"] for r in repeats) == dynamic_result["latencyMs"]["iterations"]
    assert dynamic_result["p99Spread"] >= 1.0
    assert isinstance(dynamic_result["noisy"], bool)
    assert dynamic_result["noisy"] == bool(dynamic_result["noisyReasons"])
    assert dynamic_result["regression"]["noisy"] == dynamic_result["noisy"]


def test_a_large_p99_spread_across_repeats_is_noisy() -> None:
    steady = [1_000_000] * 200
    slow = [1_000_000] * 190 + [5_000_000] * 10  # its p99 is 5 ms, the others' 1 ms

    noise = noise_of([steady, steady, slow], policy=BenchmarkPolicy())

    assert noise["p99Spread"] == pytest.approx(5.0)
    assert noise["noisy"] is True
    assert "varied 5.00x across 3 repeats" in noise["noisyReasons"][0]
    assert noise_of([steady, steady, steady], policy=BenchmarkPolicy())["noisy"] is False


def test_too_few_iterations_for_a_p99_is_noisy() -> None:
    few = [1_000_000] * 20

    noise = noise_of([few, few, few], policy=BenchmarkPolicy())

    assert noise["noisy"] is True
    assert noise["noisyReasons"] == ["only 60 timed iterations, fewer than the 100 a p99 needs"]


def test_a_ratio_against_a_noisy_baseline_says_so(tmp_path: Path) -> None:
    result = benchmark_model(
        relu_model(tmp_path / "m.onnx"), policy=TINY, baseline_p95_ms=0.5, baseline_noisy=True
    )

    regression = result["regression"]
    assert regression["noisy"] is True
    assert regression["baselineNoisy"] is True
    assert "the baseline" in regression["note"]
    assert "not reliable" in regression["note"]


def test_repeats_share_the_budget_of_one_measurement() -> None:
    calls: list[int] = []

    def run(_names: Any, _feeds: Any) -> None:
        calls.append(1)

    policy = BenchmarkPolicy(
        warmup_iterations=4, min_iterations=30, max_iterations=30, min_seconds=0
    )
    runs = time_repeats(run, {}, policy=policy)

    assert [len(r) for r in runs] == [10, 10, 10]
    assert len(calls) == 4 + 30  # one warm-up, then the shared iterations


def test_repeats_keep_the_total_iterations_of_the_policy() -> None:
    policy = BenchmarkPolicy(
        warmup_iterations=0, min_iterations=100, max_iterations=100, min_seconds=0
    )

    runs = time_repeats(lambda _n, _f: None, {}, policy=policy)

    assert [len(r) for r in runs] == [34, 33, 33]
