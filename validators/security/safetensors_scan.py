"""safetensors: the header is checked, the tensor data is never read.

The layout is an 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object of
tensor name → ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional
``"__metadata__"`` map of str → str), then the data buffer the offsets point into.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from typing import BinaryIO

from registry.formats import MAX_SAFETENSORS_HEADER, read_head
from validators.report import Finding, Severity

#: Bytes per element of every dtype the safetensors format defines.
DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}


def scan_safetensors(stream: BinaryIO, *, size: int, location: str) -> list[Finding]:
    """Findings for the safetensors file of ``size`` bytes that ``stream`` is positioned at."""

    def bad(rule: str, message: str, severity: Severity = Severity.HIGH) -> list[Finding]:
        return [Finding(severity, f"safetensors.{rule}", message, location)]

    prefix = read_head(stream, 8)
    if len(prefix) < 8:
        return bad("header_length", f"file of {size} bytes is too short for a header length")
    (length,) = struct.unpack("<Q", prefix)
    if length > size - 8:
        return bad("header_length", f"header length {length} runs past the file ({size} bytes)")
    if length > MAX_SAFETENSORS_HEADER:
        return bad("header_length", f"header length {length} is over {MAX_SAFETENSORS_HEADER}")
    raw = read_head(stream, length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return bad("header_encoding", "header is not valid UTF-8")
    except (ValueError, RecursionError):
        return bad("header_json", "header is not valid JSON")
    if not isinstance(header, dict):
        return bad("header_json", "header is not a JSON object")

    findings: list[Finding] = []
    data_size = size - 8 - length
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        where = f"{location}#tensor:{name}"
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                findings.append(
                    Finding(
                        Severity.HIGH,
                        "safetensors.metadata",
                        "__metadata__ must map strings to strings",
                        where,
                    )
                )
            continue
        problem = _check_entry(entry, data_size=data_size)
        if isinstance(problem, tuple):
            spans.append((problem[0], problem[1], name))
        else:
            findings.append(Finding(Severity.HIGH, problem[0], problem[1], where))
    spans.sort()
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            findings.append(
                Finding(
                    Severity.HIGH,
                    "safetensors.overlap",
                    f"tensors {first!r} and {second!r} share bytes of the data buffer",
                    f"{location}#tensor:{second}",
                )
            )
    return findings


def _check_entry(entry: object, *, data_size: int) -> tuple[int, int] | list[str]:
    """A tensor's (begin, end) in the data buffer, or [rule id, message] when it is invalid."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        return ["safetensors.tensor", "entry needs dtype, shape and data_offsets"]
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        return ["safetensors.dtype", f"unknown dtype {dtype!r}"]
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        return ["safetensors.shape", f"shape {shape!r} is not a list of natural numbers"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_natural(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return ["safetensors.offsets", f"data_offsets {offsets!r} is not [begin, end]"]
    begin, end = offsets
    if end > data_size:
        return [
            "safetensors.offsets",
            f"data_offsets [{begin}, {end}] run past the data buffer ({data_size} bytes)",
        ]
    expected = math.ceil(math.prod(shape) * DTYPE_BYTES[dtype])
    if end - begin != expected:
        return [
            "safetensors.size",
            f"{end - begin} bytes for a {dtype} tensor of shape {shape} ({expected} expected)",
        ]
    return begin, end


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
