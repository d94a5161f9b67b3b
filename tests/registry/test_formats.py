"""The upload's format check: only a plain contradiction between what a file's first bytes
certainly are and its declared format refuses it (``registry.formats.contradiction``)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile

import pytest

from registry.formats import contradiction
from tests.support.onnx_models import add_model


def _onnx() -> bytes:
    return add_model(constant=1.0)


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 4


def _zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, pickle.dumps({"a": 1}, protocol=2))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("declared", "data", "found"),
    [
        ("ONNX", _zip("archive/data.pkl"), "a PyTorch file"),
        ("ONNX", pickle.dumps([1, 2], protocol=4), "a pickle"),
        ("ONNX", _safetensors(), "a SafeTensors file"),
        ("SafeTensors", _onnx(), "an ONNX model"),
        ("SafeTensors", _zip("archive/data.pkl"), "a PyTorch file"),
        ("PyTorch", _onnx(), "an ONNX model"),
        ("PyTorch", _safetensors(), "a SafeTensors file"),
        ("Joblib", _onnx(), "an ONNX model"),
        ("Pickle", _safetensors(), "a SafeTensors file"),
    ],
)
def test_a_plain_contradiction_names_both_formats(declared: str, data: bytes, found: str) -> None:
    said = contradiction(declared, data[:4096], size=len(data))
    assert said is not None
    assert found in said
    assert f"declares format {declared}" in said


@pytest.mark.parametrize(
    ("declared", "data"),
    [
        ("ONNX", _onnx()),
        ("ONNX", _zip("model/model.onnx")),  # a bundle: validation looks inside
        ("SafeTensors", _safetensors()),
        ("PyTorch", _zip("archive/data.pkl")),
        ("PyTorch", pickle.dumps([1], protocol=2)),  # the legacy torch.save format
        ("Pickle", pickle.dumps([1], protocol=5)),
        ("Joblib", pickle.dumps([1], protocol=4)),
        ("Pickle", b"(lp0\nI1\na."),  # protocol 0 says nothing certain: validation judges
        ("ONNX", b"something the sniffers cannot name"),
        ("TensorFlow SavedModel", _zip("saved_model.pb")),
        ("Unheard-of", _onnx()),
    ],
)
def test_what_may_be_the_declared_format_is_left_to_validation(declared: str, data: bytes) -> None:
    assert contradiction(declared, data[:4096], size=len(data)) is None
