"""Whatever the bytes, ``scan_artifact`` returns a report: it never raises, never hangs."""

from __future__ import annotations

import io
import json
import pickle
import signal
import struct
import tarfile
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from validators.report import ScanReport
from validators.security import scan_artifact


def _onnx() -> bytes:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("W", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    then = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "t", [], [y])
    nodes = [
        helper.make_node("Add", ["X", "W"], ["A"]),
        helper.make_node("If", ["c"], ["Y"], then_branch=then, else_branch=then),
    ]
    c = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w, c])
    return helper.make_model(graph).SerializeToString()


def _safetensors() -> bytes:
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(range(24))


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": [1, 2, 3]}, protocol=2))
        zf.writestr("archive/data/0", b"\x01\x02" * 32)
        zf.writestr("archive/version", "3\n")
        zf.writestr("model.onnx", _onnx())
    return buffer.getvalue()


def _tar(mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in (("m/model.onnx", _onnx()), ("m/w.safetensors", _safetensors())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SEEDS = {
    "onnx": _onnx(),
    "safetensors": _safetensors(),
    "zip": _zip(),
    "tar": _tar("w"),
    "tar.gz": _tar("w:gz"),
    "pickle": pickle.dumps({"a": [1, 2.0, "x", (None, True)]}, protocol=0),
}

#: Seconds one scan may take before the test fails instead of hanging.
SCAN_TIMEOUT = 5

FUZZ = settings(
    max_examples=150,
    deadline=None,
    # no shrinking: a hang costs SCAN_TIMEOUT per attempt; the failing input is printed anyway
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _on_alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"scan_artifact took more than {SCAN_TIMEOUT} s")


def _scan_bytes(data: bytes) -> ScanReport:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artifact"
        path.write_bytes(data)
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(SCAN_TIMEOUT)
        try:
            report = scan_artifact(path)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    assert isinstance(report, ScanReport)
    assert report.verdict in ("clean", "malicious", "too-large", "error")
    assert (report.status == "Passed") == (report.verdict == "clean")
    assert not any(f.rule_id == "scanner.error" for f in report.findings), report.findings
    return report


def test_seeds_are_clean() -> None:
    for name, data in SEEDS.items():
        assert _scan_bytes(data).verdict == "clean", name


@FUZZ
@given(st.binary(max_size=4096))
@example(b"G")  # a truncated BINFLOAT once looped forever in looks_like_pickle
@example(b"\x1f\x8b\x08")  # a truncated gzip header once raised TypeError in tarfile
@example(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
def test_random_bytes(data: bytes) -> None:
    _scan_bytes(data)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[position : position + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(_mutated())
def test_mutated_seeds(data: bytes) -> None:
    _scan_bytes(data)
