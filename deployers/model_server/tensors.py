"""The Open Inference Protocol's JSON tensors: a model's tensor specs, a request's inputs
coerced to numpy arrays of the model's types and declared shapes, and outputs back to JSON.

``data`` is row-major and flat, or nested lists. Answers are standard JSON: a non-finite float
in an output (NaN, +-Infinity) is written as ``null``, in its place, so the shape and every
finite value are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployers.model_server.limits import MAX_JSON_DEPTH, json_depth

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "InferenceRequestError",
    "TensorSpec",
    "decode_input",
    "encode_error",
    "encode_output",
    "parse_request",
    "read_spec",
]

#: onnxruntime type -> (OIP datatype, numpy dtype); ``None``: numpy cannot hold it.
_TYPES: dict[str, tuple[str, str | None]] = {
    "tensor(float)": ("FP32", "float32"),
    "tensor(double)": ("FP64", "float64"),
    "tensor(float16)": ("FP16", "float16"),
    "tensor(bfloat16)": ("BF16", None),
    "tensor(int8)": ("INT8", "int8"),
    "tensor(int16)": ("INT16", "int16"),
    "tensor(int32)": ("INT32", "int32"),
    "tensor(int64)": ("INT64", "int64"),
    "tensor(uint8)": ("UINT8", "uint8"),
    "tensor(uint16)": ("UINT16", "uint16"),
    "tensor(uint32)": ("UINT32", "uint32"),
    "tensor(uint64)": ("UINT64", "uint64"),
    "tensor(bool)": ("BOOL", "bool"),
    "tensor(string)": ("BYTES", "object"),
}

#: Which numpy kinds (of the array JSON data parses to) each kind of tensor accepts.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b", "O": "U"}


class InferenceRequestError(Exception):
    """A request the model cannot run: answered with 400 (or 404) and ``{"error": ...}``."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    dtype: str | None  # numpy dtype; None when numpy cannot hold the element type

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def read_spec(arg: Any) -> TensorSpec:
    """The spec of an onnxruntime input or output (a ``NodeArg``)."""
    datatype, dtype = _TYPES.get(arg.type, (str(arg.type), None))
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape, dtype)


def parse_request(body: bytes) -> dict[str, Any]:
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise InferenceRequestError(
            f"the body nests arrays and objects {depth} levels deep, more than the limit "
            f"({MAX_JSON_DEPTH})"
        )
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise InferenceRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InferenceRequestError("the body must be a JSON object")
    return request


def decode_input(spec: TensorSpec, item: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """The input ``item`` as a numpy array of the model's type and of its declared shape."""
    import numpy as np

    name = spec.name
    datatype = item.get("datatype")
    if datatype != spec.datatype:
        raise InferenceRequestError(
            f"input {name!r}: datatype {datatype!r} does not match the model's {spec.datatype}"
        )
    if spec.dtype is None:
        raise InferenceRequestError(f"input {name!r}: datatype {datatype} is not supported")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InferenceRequestError(
            f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}"
        )
    if spec.shape and (
        len(shape) != len(spec.shape)
        or any(want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    ):
        raise InferenceRequestError(
            f"input {name!r}: shape {shape} does not match the model's {list(spec.shape)}"
        )
    if "data" not in item:
        raise InferenceRequestError(f"input {name!r} has no 'data'")
    try:
        array = np.asarray(item["data"])
    except (ValueError, TypeError) as exc:
        raise InferenceRequestError(f"input {name!r}: 'data' is not a tensor: {exc}") from None
    count = math.prod(shape)
    if array.size != count:
        raise InferenceRequestError(
            f"input {name!r}: shape {shape} holds {count} element(s) but 'data' has {array.size}"
        )
    target = np.dtype(spec.dtype)
    if array.size and array.dtype.kind not in _ACCEPTED_KINDS.get(target.kind, ""):
        raise InferenceRequestError(f"input {name!r}: 'data' does not hold {datatype} values")
    if target.kind in "iu" and array.size:
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise InferenceRequestError(f"input {name!r}: a value is out of range for {datatype}")
    return array.astype(target, copy=False).reshape(shape)


def encode_output(name: str, datatype: str, array: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(array)
    data = array.ravel().tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        data = [v if math.isfinite(v) else None for v in data]  # JSON has no NaN or Infinity
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def encode_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
