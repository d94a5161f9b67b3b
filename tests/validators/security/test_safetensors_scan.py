"""safetensors files written by hand: header, then data."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from registry.formats import Format, detect_format
from validators.security import scan_artifact


def _write(path: Path, header: Any, data: bytes, *, raw: bytes | None = None) -> Path:
    body = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


BENIGN = {
    "__metadata__": {"format": "pt"},
    "weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "bias": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},
    "mask": {"dtype": "BOOL", "shape": [], "data_offsets": [20, 21]},
}


def test_benign_file_passes(tmp_path: Path) -> None:
    path = _write(tmp_path / "model.bin", BENIGN, b"\0" * 21)
    assert detect_format(path) is Format.SAFETENSORS
    report = scan_artifact(path)
    assert report.status == "Passed", report.findings
    assert report.findings == ()


def _entry(**changes: Any) -> dict[str, Any]:
    return {"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16], **changes}}


@pytest.mark.parametrize(
    ("header", "raw", "data", "rule"),
    [
        pytest.param(_entry(dtype="F128"), None, 16, "safetensors.dtype", id="unknown-dtype"),
        pytest.param(_entry(shape=[-1]), None, 16, "safetensors.shape", id="negative-dim"),
        pytest.param(_entry(shape="4"), None, 16, "safetensors.shape", id="shape-not-list"),
        pytest.param(
            _entry(data_offsets=[0, 32]), None, 16, "safetensors.offsets", id="past-buffer"
        ),
        pytest.param(_entry(data_offsets=[16, 0]), None, 16, "safetensors.offsets", id="reversed"),
        pytest.param(_entry(data_offsets=[0]), None, 16, "safetensors.offsets", id="one-offset"),
        pytest.param(_entry(shape=[5]), None, 16, "safetensors.size", id="size-mismatch"),
        pytest.param(
            {"t": {"dtype": "F32", "shape": [4]}}, None, 16, "safetensors.tensor", id="no-offsets"
        ),
        pytest.param(
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            },
            None,
            16,
            "safetensors.overlap",
            id="overlap",
        ),
        pytest.param(
            {"__metadata__": {"n": 1}}, None, 0, "safetensors.metadata", id="metadata-not-str"
        ),
        pytest.param(None, b"{\xff\xfe}", 0, "safetensors.header_encoding", id="not-utf8"),
        pytest.param(None, b'{"t": [1, 2', 0, "safetensors.header_json", id="bad-json"),
        pytest.param(
            None,
            b"{" + b"[" * 5000 + b"]" * 5000 + b"}",
            0,
            "safetensors.header_json",
            id="deep-json",
        ),
    ],
)
def test_broken_header_fails_with_its_rule(
    tmp_path: Path, header: Any, raw: bytes | None, data: int, rule: str
) -> None:
    path = _write(tmp_path / "model.safetensors", header, b"\0" * data, raw=raw)
    report = scan_artifact(path)
    assert report.status == "Failed"
    assert rule in {f.rule_id for f in report.findings}, report.findings


def test_header_not_an_object_fails(tmp_path: Path) -> None:
    # a JSON array after the length is not sniffed as safetensors at all, so write the
    # object-looking prefix and break it later
    path = _write(tmp_path / "m.safetensors", None, b"", raw=b"{}  ")
    assert scan_artifact(path).status == "Passed"
    path = _write(tmp_path / "m.safetensors", None, b"", raw=b'{"t": 1}')
    assert "safetensors.tensor" in {f.rule_id for f in scan_artifact(path).findings}


@pytest.mark.parametrize("length", [10**9, 200 * 1024 * 1024], ids=["past-file", "over-cap"])
def test_header_length_past_the_file_fails(tmp_path: Path, length: int) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", length) + b'{"t": {}}')
    report = scan_artifact(path)
    assert report.status == "Failed"
    assert [f.rule_id for f in report.findings] == ["safetensors.header_length"]


def test_tensor_data_is_never_read(tmp_path: Path) -> None:
    """A declared 1 TB tensor is judged from the header alone."""
    header = {"t": {"dtype": "U8", "shape": [10**12], "data_offsets": [0, 10**12]}}
    report = scan_artifact(_write(tmp_path / "m.safetensors", header, b"\0" * 8))
    assert "safetensors.offsets" in {f.rule_id for f in report.findings}
