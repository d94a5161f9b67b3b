"""The functional check on ONNX models built in code: valid, broken, NaN-producing, bundled
with external data, with test vectors, and things that are not ONNX at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from validators.functional import (  # noqa: E402
    FunctionalPolicy,
    check_model,
    make_inputs,
    open_session,
)

OPSET = [helper.make_opsetid("", 17)]


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any] = ()) -> Any:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=OPSET)


def linear_model(width: int = 4, out: int = 3) -> Any:
    """y = x @ w + b with a dynamic batch dimension."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((width, out)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), "b")
    return _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out])],
        [w, b],
    )


def save(model: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def rules(report: Any) -> list[str]:
    return [f.rule_id for f in report.findings]


def test_dynamic_batch_model_passes(tmp_path: Path) -> None:
    report = check_model(save(linear_model(), tmp_path / "m.onnx"))

    assert report.status == "Passed", report.findings
    assert report.findings == ()
    assert report.inputs == {"x": {"dtype": "float32", "shape": [1, 4]}}
    assert report.outputs == {"y": {"dtype": "float32", "shape": [1, 3], "finite": True}}
    assert report.tool_versions["onnx"] == onnx.__version__
    assert report.test_vector_results is None


@pytest.mark.parametrize(
    ("parameters", "policy", "shape"),
    [
        pytest.param({"dimensions": {"batch": 3}}, None, [3, 4], id="named-dimension"),
        pytest.param({"inputShapes": {"x": [5, 4]}}, None, [5, 4], id="input-shape"),
        pytest.param({}, FunctionalPolicy(batch_size=2), [2, 4], id="policy-batch"),
    ],
)
def test_dynamic_dimensions_come_from_parameters_or_policy(
    tmp_path: Path, parameters: dict[str, Any], policy: FunctionalPolicy | None, shape: list[int]
) -> None:
    report = check_model(
        save(linear_model(), tmp_path / "m.onnx"), parameters=parameters, policy=policy
    )

    assert report.status == "Passed", report.findings
    assert report.inputs["x"]["shape"] == shape
    assert report.outputs["y"]["shape"] == [shape[0], 3]


@pytest.mark.parametrize(
    ("parameters", "rule", "words"),
    [
        pytest.param(
            {"inputShapes": {"x": [2, 5]}},
            "functional.parameters",
            "does not fit",
            id="shape-contradicts-declared",
        ),
        pytest.param(
            {"inputShapes": {"nope": [1, 4]}}, "functional.parameters", "nope", id="unknown-input"
        ),
        pytest.param(
            {"inputShapes": {"x": "big"}}, "functional.parameters", "list", id="not-a-list"
        ),
        pytest.param(
            {"dimensions": {"batch": 10**9}},
            "functional.inputs-too-large",
            "limit",
            id="too-many-elements",
        ),
    ],
)
def test_bad_parameters_fail_with_a_clear_finding(
    tmp_path: Path, parameters: dict[str, Any], rule: str, words: str
) -> None:
    report = check_model(save(linear_model(), tmp_path / "m.onnx"), parameters=parameters)

    assert report.status == "Failed"
    assert rules(report) == [rule]
    assert words in report.findings[0].message


@pytest.mark.parametrize(
    "op",
    [pytest.param("Log", id="log-of-negative"), pytest.param("Div", id="division-by-zero")],
)
def test_non_finite_output_fails(tmp_path: Path, op: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    if op == "Log":  # log(-(x + 1)): NaN for every input in [0, 1)
        one = numpy_helper.from_array(np.ones(4, np.float32), "one")
        nodes = [
            helper.make_node("Add", ["x", "one"], ["x1"]),
            helper.make_node("Neg", ["x1"], ["n"]),
            helper.make_node("Log", ["n"], ["y"]),
        ]
        inits = [one]
    else:  # (x + 1) / 0: +Inf
        one = numpy_helper.from_array(np.ones(4, np.float32), "one")
        zero = numpy_helper.from_array(np.zeros(4, np.float32), "zero")
        nodes = [
            helper.make_node("Add", ["x", "one"], ["x1"]),
            helper.make_node("Div", ["x1", "zero"], ["y"]),
        ]
        inits = [one, zero]
    report = check_model(save(_model(nodes, [x], [y], inits), tmp_path / "m.onnx"))

    assert report.status == "Failed"
    assert rules(report) == ["functional.non-finite"]
    assert report.outputs["y"]["finite"] is False
    assert "'y'" in report.findings[0].message
    assert report.findings[0].location == "m.onnx#output:y"


def test_int64_input_gets_valid_indices(tmp_path: Path) -> None:
    table = numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(5, 4), "table")
    model = _model(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        [table],
    )
    report = check_model(save(model, tmp_path / "m.onnx"), parameters={"dimensions": {"seq": 7}})

    assert report.status == "Passed", report.findings
    assert report.inputs == {"ids": {"dtype": "int64", "shape": [1, 7]}}
    assert report.outputs["y"]["shape"] == [1, 7, 4]


@pytest.mark.parametrize(
    ("elem", "dtype"),
    [
        pytest.param(TensorProto.FLOAT16, "float16", id="float16"),
        pytest.param(TensorProto.DOUBLE, "float64", id="double"),
        pytest.param(TensorProto.INT8, "int8", id="int8"),
        pytest.param(TensorProto.UINT8, "uint8", id="uint8"),
        pytest.param(TensorProto.INT32, "int32", id="int32"),
        pytest.param(TensorProto.BOOL, "bool", id="bool"),
        pytest.param(TensorProto.STRING, "object", id="string"),
    ],
)
def test_inputs_are_generated_for_each_element_type(tmp_path: Path, elem: int, dtype: str) -> None:
    model = _model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", elem, ["batch", 3])],
        [helper.make_tensor_value_info("y", elem, ["batch", 3])],
    )
    report = check_model(save(model, tmp_path / "m.onnx"))

    assert report.status == "Passed", report.findings
    assert report.inputs["x"] == {"dtype": dtype, "shape": [1, 3]}
    assert report.outputs["y"]["dtype"] == dtype


def test_generated_inputs_are_deterministic(tmp_path: Path) -> None:
    session = open_session(save(linear_model(), tmp_path / "m.onnx"))
    policy = FunctionalPolicy(batch_size=4)

    first = make_inputs(session, {}, policy=policy)
    second = make_inputs(session, {}, policy=policy)
    other = make_inputs(session, {}, policy=FunctionalPolicy(batch_size=4, seed=7))

    np.testing.assert_array_equal(first["x"], second["x"])
    assert not np.array_equal(first["x"], other["x"])
    assert first["x"].shape == (4, 4)


def test_bundle_with_external_data_passes(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "model").mkdir(parents=True)
    onnx.save_model(
        linear_model(width=64, out=32),
        str(bundle / "model" / "net.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (bundle / "model" / "weights.bin").stat().st_size > 64 * 32 * 4 - 1

    report = check_model(bundle)

    assert report.status == "Passed", report.findings
    assert report.model_file == "model/net.onnx"
    assert report.outputs["y"]["shape"] == [1, 32]


def test_missing_external_data_fails(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    onnx.save_model(
        linear_model(),
        str(bundle / "net.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    (bundle / "weights.bin").unlink()

    report = check_model(bundle)

    assert report.status == "Failed"
    assert report.findings[0].rule_id in {"functional.checker", "functional.session"}
    assert "weights.bin" in report.findings[0].message


def test_bundle_with_two_models_needs_model_file(tmp_path: Path) -> None:
    save(linear_model(), tmp_path / "a.onnx")
    save(linear_model(width=2), tmp_path / "sub" / "b.onnx")

    ambiguous = check_model(tmp_path)
    chosen = check_model(tmp_path, parameters={"modelFile": "sub/b.onnx"})

    assert ambiguous.status == "Failed"
    assert rules(ambiguous) == ["functional.ambiguous-model"]
    assert "a.onnx" in ambiguous.findings[0].message
    assert "sub/b.onnx" in ambiguous.findings[0].message
    assert chosen.status == "Passed", chosen.findings
    assert chosen.inputs["x"]["shape"] == [1, 2]


def _vectors(bundle: Path, *, shift: float = 0.0, name: str = "vectors.npz") -> dict[str, Any]:
    model = linear_model()
    save(model, bundle / "m.onnx")
    x = np.random.default_rng(3).random((2, 4), dtype=np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0])
    b = numpy_helper.to_array(model.graph.initializer[1])
    np.savez(bundle / name, **{"input:x": x, "output:y": x @ w + b + shift})
    return {"testVectors": name}


def test_matching_test_vectors_pass(tmp_path: Path) -> None:
    report = check_model(tmp_path, parameters=_vectors(tmp_path))

    assert report.status == "Passed", report.findings
    assert report.test_vector_results is not None
    (result,) = report.test_vector_results
    assert result.output == "y"
    assert result.passed
    assert result.max_abs_error is not None
    assert result.max_abs_error < 1e-5
    assert result.shape == (2, 3)


def test_mismatching_test_vectors_fail(tmp_path: Path) -> None:
    report = check_model(tmp_path, parameters=_vectors(tmp_path, shift=0.5))

    assert report.status == "Failed"
    assert rules(report) == ["functional.test-vector-mismatch"]
    assert report.test_vector_results is not None
    (result,) = report.test_vector_results
    assert not result.passed
    assert result.max_abs_error == pytest.approx(0.5, abs=1e-4)
    assert "max abs error" in report.findings[0].message


def test_test_vectors_missing_an_input_fail(tmp_path: Path) -> None:
    save(linear_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "v.npz", **{"output:y": np.zeros((1, 3), np.float32)})

    report = check_model(tmp_path, parameters={"testVectors": "v.npz"})

    assert report.status == "Failed"
    assert rules(report) == ["functional.test-vectors"]
    assert "input(s) ['x']" in report.findings[0].message


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("../outside.npz", id="dot-dot"),
        pytest.param("/tmp/outside.npz", id="absolute"),
        pytest.param("link.npz", id="symlink-out"),
    ],
)
def test_test_vectors_may_not_leave_the_bundle(tmp_path: Path, where: str) -> None:
    bundle = tmp_path / "bundle"
    _vectors(tmp_path, name="outside.npz")
    save(linear_model(), bundle / "m.onnx")
    (bundle / "link.npz").symlink_to(tmp_path / "outside.npz")

    report = check_model(bundle, parameters={"testVectors": where})

    assert report.status == "Failed"
    assert rules(report) == ["functional.parameters"]
    assert report.test_vector_results is None


def test_pickled_test_vectors_are_refused(tmp_path: Path) -> None:
    save(linear_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "v.npz", **{"input:x": np.array([{"a": 1}], dtype=object)})

    report = check_model(tmp_path, parameters={"testVectors": "v.npz"})

    assert report.status == "Failed"
    assert rules(report) == ["functional.test-vectors"]
    assert "pickle" in report.findings[0].message.lower()


def test_checker_failure_names_the_problem(tmp_path: Path) -> None:
    model = _model(
        [helper.make_node("Add", ["x", "undefined_tensor"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    report = check_model(save(model, tmp_path / "m.onnx"))

    assert report.status == "Failed"
    assert rules(report) == ["functional.checker"]
    assert "undefined_tensor" in report.findings[0].message


def test_shape_inference_failure_is_reported(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((5, 3), np.float32), "w")
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w],
    )
    report = check_model(save(model, tmp_path / "m.onnx"))

    assert report.status == "Failed"
    assert rules(report) == ["functional.shape-inference"]
    assert "MatMul" in report.findings[0].message


@pytest.mark.parametrize(
    ("fmt", "status"),
    [
        pytest.param("ONNX", "Failed", id="declared-onnx"),
        pytest.param(None, "Skipped", id="unknown"),
    ],
)
def test_random_bytes_never_raise(tmp_path: Path, fmt: str | None, status: str) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))

    report = check_model(junk, fmt=fmt)

    assert report.status == status
    assert len(report.findings) == 1
    assert report.findings[0].rule_id == "functional.invalid-onnx"
    assert "ONNX model" in report.findings[0].message
    assert report.findings[0].location == "model.onnx"
    if status == "Skipped":
        assert report.reason is not None
        assert report.reason.startswith("not an ONNX artifact")


def test_truncated_model_fails(tmp_path: Path) -> None:
    data = linear_model(width=64).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])

    report = check_model(path)

    assert report.status == "Failed"
    assert report.findings
    assert report.findings[0].rule_id.startswith("functional.")


def test_empty_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")

    assert check_model(path).status == "Failed"
    assert check_model(path, fmt=None).status == "Skipped"


@pytest.mark.parametrize(
    ("fmt", "reason"),
    [
        pytest.param("API", "format API has no artifact", id="api"),
        pytest.param("PyTorch", "format PyTorch is not ONNX", id="pytorch"),
    ],
)
def test_other_formats_are_skipped(tmp_path: Path, fmt: str, reason: str) -> None:
    report = check_model(tmp_path / "whatever", fmt=fmt)

    assert report.status == "Skipped"
    assert report.reason is not None
    assert reason in report.reason
    assert report.findings == ()
    assert report.to_dict()["reason"] == report.reason


def test_empty_bundle(tmp_path: Path) -> None:
    assert rules(check_model(tmp_path)) == ["functional.no-model"]
    assert check_model(tmp_path, fmt=None).status == "Skipped"


def test_missing_path_fails(tmp_path: Path) -> None:
    report = check_model(tmp_path / "gone.onnx")

    assert report.status == "Failed"
    assert rules(report) == ["functional.missing"]


def test_report_serialises_with_camel_case_keys(tmp_path: Path) -> None:
    data = check_model(tmp_path, parameters=_vectors(tmp_path)).to_dict()

    assert set(data) == {
        "status",
        "reason",
        "findings",
        "modelFile",
        "inputs",
        "outputs",
        "testVectorResults",
        "durationSeconds",
        "toolVersions",
        "signature",
    }
    assert data["testVectorResults"][0]["maxAbsError"] < 1e-5
    assert data["outputs"]["y"]["finite"] is True


def test_single_file_has_no_test_vectors(tmp_path: Path) -> None:
    _vectors(tmp_path)

    report = check_model(tmp_path / "m.onnx", parameters={"testVectors": "vectors.npz"})

    assert report.status == "Failed"
    assert rules(report) == ["functional.test-vectors"]
    assert "bundle" in report.findings[0].message


def test_model_linked_from_outside_the_bundle_fails(tmp_path: Path) -> None:
    save(linear_model(), tmp_path / "outside.onnx")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "m.onnx").symlink_to(tmp_path / "outside.onnx")

    report = check_model(bundle)

    assert report.status == "Failed"
    assert rules(report) == ["functional.outside-bundle"]


def test_a_run_over_the_time_limit_is_cancelled(tmp_path: Path) -> None:
    # 30 chained 512x512 MatMuls on a batch of 512: far longer than a 1 ms limit.
    w = numpy_helper.from_array(np.eye(512, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}"])
        for i in range(30)
    ]
    nodes.append(helper.make_node("Identity", ["h30"], ["y"]))
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])],
        [w],
    )
    policy = FunctionalPolicy(batch_size=512, run_timeout_seconds=0.001)

    report = check_model(save(model, tmp_path / "m.onnx"), policy=policy)

    assert report.status == "Failed"
    assert rules(report) == ["functional.timeout"]


# --- the signature (stored on the version and compared at deploy time) ----------------------


def test_report_carries_the_signature_the_session_declares(tmp_path: Path) -> None:
    model = _model(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("Cast", ["ids"], ["n"], to=TensorProto.FLOAT),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None, 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, 4]),
            helper.make_tensor_value_info("n", TensorProto.FLOAT, [1, 4]),
        ],
    )

    report = check_model(save(model, tmp_path / "m.onnx"))

    assert report.status == "Passed", report.findings
    assert report.to_dict()["signature"] == {
        "inputs": [
            {"name": "x", "type": "tensor(float)", "shape": ["batch", None, 4]},
            {"name": "ids", "type": "tensor(int64)", "shape": [1, 4]},
        ],
        "outputs": [
            {"name": "y", "type": "tensor(float)", "shape": ["batch", None, 4]},
            {"name": "n", "type": "tensor(float)", "shape": [1, 4]},
        ],
    }


def test_signature_is_kept_when_the_run_fails(tmp_path: Path) -> None:
    report = check_model(save(linear_model(), tmp_path / "m.onnx"), parameters={"dimensions": 3})

    assert rules(report) == ["functional.parameters"]
    assert report.to_dict()["signature"]["inputs"] == [
        {"name": "x", "type": "tensor(float)", "shape": ["batch", 4]}
    ]


@pytest.mark.parametrize(
    "artifact",
    [
        pytest.param("gone.onnx", id="missing-file"),
        pytest.param("junk.onnx", id="not-onnx"),
    ],
)
def test_signature_is_null_when_no_session_was_opened(tmp_path: Path, artifact: str) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a model")

    data = check_model(tmp_path / artifact).to_dict()

    assert data["status"] == "Failed"
    assert data["signature"] is None
