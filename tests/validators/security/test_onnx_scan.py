"""ONNX models built in code: what the scanner lets through and what it stops."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from validators.report import ScanReport, Severity
from validators.security import scan_artifact
from validators.security.policy import DEFAULT_POLICY


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    return (
        helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4]),
    )


def _model(
    nodes: list[onnx.NodeProto],
    *,
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    functions: list[onnx.FunctionProto] = (),  # type: ignore[assignment]
    opsets: list[onnx.OperatorSetIdProto] | None = None,
) -> onnx.ModelProto:
    x, y = _io()
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    return helper.make_model(
        graph,
        functions=list(functions),
        opset_imports=opsets or [helper.make_opsetid("", 17)],
    )


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def _external(name: str, location: str, *, offset: int = 0, length: int = 16) -> onnx.TensorProto:
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [4], [0.0] * 4)
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _add_model(initializer: onnx.TensorProto) -> onnx.ModelProto:
    return _model(
        [helper.make_node("Add", ["X", initializer.name], ["Y"])], initializers=[initializer]
    )


def test_benign_model_passes(tmp_path: Path) -> None:
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    report = scan_artifact(_save(_add_model(weight), tmp_path / "model.onnx"))
    assert report.status == "Passed", report.findings
    assert report.verdict == "clean"
    assert report.files_scanned == ("model.onnx",)
    assert report.tool_versions["onnx"] == onnx.__version__


def test_model_with_external_data_inside_its_folder_passes(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(b"\0" * 16)
    model = _add_model(_external("W", "weights/w.bin"))
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert report.verdict == "clean", report.findings
    assert scan_artifact(tmp_path).verdict == "clean"


def test_a_bundle_notes_unknown_files_but_not_the_external_data_a_model_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(b"\0" * 16)
    (tmp_path / "a-stray.bin").write_bytes(b"\1" * 16)
    _save(_add_model(_external("W", "weights/w.bin")), tmp_path / "model.onnx")
    report = scan_artifact(tmp_path)
    assert report.verdict == "clean", report.findings
    assert set(report.files_scanned) == {"a-stray.bin", "model.onnx", "weights/w.bin"}
    unknown = [f.location for f in report.findings if f.rule_id == "format.unknown"]
    assert unknown == ["a-stray.bin"]


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("../../etc/passwd", id="dot-dot"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("weights/../../secret", id="dot-dot-inside"),
        pytest.param("..\\..\\etc\\passwd", id="backslash"),
        pytest.param("C:/Windows/win.ini", id="drive"),
    ],
)
def test_external_data_outside_the_model_folder_fails(tmp_path: Path, location: str) -> None:
    report = scan_artifact(
        _save(_add_model(_external("W", location)), tmp_path / "m" / "model.onnx")
    )
    assert report.verdict == "malicious"
    finding = next(f for f in report.findings if f.rule_id == "onnx.external_data.path")
    assert finding.severity == Severity.CRITICAL
    assert "initializer:W" in finding.location


def test_symlinked_external_data_fails(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 16)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    os.symlink(secret, model_dir / "w.bin")
    report = scan_artifact(_save(_add_model(_external("W", "w.bin")), model_dir / "model.onnx"))
    assert report.verdict == "malicious"
    assert "onnx.external_data.symlink" in _rules(report)


def test_symlinked_folder_on_the_way_to_external_data_fails(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(b"\0" * 16)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    os.symlink(tmp_path / "outside", model_dir / "data")
    report = scan_artifact(
        _save(_add_model(_external("W", "data/w.bin")), model_dir / "model.onnx")
    )
    assert "onnx.external_data.symlink" in _rules(report)


@pytest.mark.parametrize(
    ("size", "offset", "length", "rule"),
    [
        pytest.param(None, 0, 16, "onnx.external_data.missing", id="missing-file"),
        pytest.param(8, 0, 16, "onnx.external_data.range", id="length-past-end"),
        pytest.param(16, 8, 16, "onnx.external_data.range", id="offset-past-end"),
    ],
)
def test_external_data_must_exist_and_hold_the_range(
    tmp_path: Path, size: int | None, offset: int, length: int, rule: str
) -> None:
    if size is not None:
        (tmp_path / "w.bin").write_bytes(b"\0" * size)
    model = _add_model(_external("W", "w.bin", offset=offset, length=length))
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert report.status == "Failed"
    assert rule in _rules(report)


def test_custom_domain_operator_fails(tmp_path: Path) -> None:
    node = helper.make_node("Evil", ["X"], ["Y"], domain="evil.ops")
    model = _model([node], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)])
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert report.verdict == "malicious"
    locations = [f.location for f in report.findings if f.rule_id == "onnx.domain"]
    assert any("node:" in loc for loc in locations)
    assert any("opset_import" in loc for loc in locations)


def test_custom_domain_operator_hidden_in_a_function_fails(tmp_path: Path) -> None:
    function = helper.make_function(
        "local.fns",
        "Wrapper",
        ["a"],
        ["b"],
        [helper.make_node("Evil", ["a"], ["b"], domain="evil.ops")],
        [helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)],
    )
    call = helper.make_node("Wrapper", ["X"], ["Y"], domain="local.fns")
    model = _model(
        [call],
        functions=[function],
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("local.fns", 1)],
    )
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert report.verdict == "malicious"
    hits = [f for f in report.findings if f.rule_id == "onnx.domain"]
    assert any("function:local.fns.Wrapper" in f.location and "Evil" in f.message for f in hits)
    # the call to the model-local function itself is fine
    assert not any("Wrapper" in f.message for f in hits)


def test_custom_domain_operator_hidden_in_an_if_subgraph_fails(tmp_path: Path) -> None:
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])
    evil = helper.make_graph(
        [helper.make_node("Evil", ["X"], ["Y"], domain="evil.ops")], "then", [], [y]
    )
    plain = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "else", [], [y])
    loop_body = helper.make_graph(
        [helper.make_node("If", ["c"], ["Y"], then_branch=evil, else_branch=plain)],
        "body",
        [],
        [y],
    )
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    outer = helper.make_node("If", ["c"], ["Y"], then_branch=loop_body, else_branch=plain)
    model = _model([outer], initializers=[cond])
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert report.verdict == "malicious"
    hit = next(f for f in report.findings if f.rule_id == "onnx.domain")
    assert "then_branch" in hit.location


def test_com_microsoft_is_allowed_only_by_the_option(tmp_path: Path) -> None:
    node = helper.make_node("FusedGemm", ["X"], ["Y"], domain="com.microsoft")
    model = _model(
        [node], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    path = _save(model, tmp_path / "model.onnx")
    assert scan_artifact(path).verdict == "malicious"
    allowing = dataclasses.replace(DEFAULT_POLICY, allow_com_microsoft=True)
    assert scan_artifact(path, allowing).verdict == "clean"


def test_absurd_declared_tensor_is_a_finding_not_an_oom(tmp_path: Path) -> None:
    huge = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[10**6, 10**6])
    big_io = helper.make_tensor_value_info("Z", TensorProto.FLOAT, [10**6, 10**6])
    model = _add_model(huge)
    model.graph.value_info.append(big_io)
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert report.verdict == "too-large"
    hits = [f for f in report.findings if f.rule_id == "limit.tensor_elements"]
    assert {"initializer:W" in f.location for f in hits} == {True, False}
    assert all("1000000000000" in f.message for f in hits)


def test_absurd_constant_node_is_a_finding(tmp_path: Path) -> None:
    value = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[10**12])
    const = helper.make_node("Constant", [], ["C"], value=value)
    model = _model([const, helper.make_node("Relu", ["X"], ["Y"])])
    report = scan_artifact(_save(model, tmp_path / "model.onnx"))
    assert "limit.tensor_elements" in _rules(report)


def test_model_over_the_size_limit_is_too_large_without_parsing(tmp_path: Path) -> None:
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    path = _save(_add_model(weight), tmp_path / "model.onnx")
    small = dataclasses.replace(DEFAULT_POLICY, max_model_bytes=16)
    report = scan_artifact(path, small)
    assert report.verdict == "too-large"
    assert _rules(report) == {"limit.model_bytes"}


def test_truncated_model_is_reported_not_raised(tmp_path: Path) -> None:
    weight = helper.make_tensor("W", TensorProto.FLOAT, [64], [1.0] * 64)
    data = _add_model(weight).SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: len(data) // 2])
    report = scan_artifact(path)
    assert isinstance(report, ScanReport)
