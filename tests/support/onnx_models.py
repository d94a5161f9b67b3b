"""Small ONNX models built in code, for the tests."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def add_model(*, constant: float = 1.0, opset: int = 17, input_name: str = "x") -> bytes:
    """y = x + constant, x: float[batch, 4]. ``input_name`` renames x (clients that send "x"
    then get a 400)."""
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    c = helper.make_tensor("c", TensorProto.FLOAT, [4], [constant] * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", [input_name, "c"], ["y"])], "add", [x], [y], [c]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    serialized: bytes = model.SerializeToString()
    return serialized


def nan_model() -> bytes:
    """y = log(-|x| - 1): NaN for every input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Neg", ["a"], ["n"]),
        helper.make_node("Sub", ["n", "one"], ["m"]),
        helper.make_node("Log", ["m"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "nan", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    serialized: bytes = model.SerializeToString()
    return serialized


def unloadable_model() -> bytes:
    """A well-formed ONNX file that no runtime loads: its one node is an operator the default
    domain does not have. The scan passes it (it is a model, of an allowed domain); the model
    server cannot start on it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("NoSuchOperator", ["x"], ["y"])], "bad", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    serialized: bytes = model.SerializeToString()
    return serialized


def reshape_model() -> bytes:
    """y = reshape(x, [-1, 3]), x: float[batch, 4]: onnxruntime fails unless 3 divides 4*batch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    target = helper.make_tensor("target", TensorProto.INT64, [2], [-1, 3])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "target"], ["y"])], "reshape", [x], [y], [target]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
