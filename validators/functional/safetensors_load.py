"""Loading a safetensors file, for the functional check, without the ``safetensors`` package
(it is not a dependency): the format is simple enough to read with numpy, and reading it here
keeps every check under our control.

The layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (tensor name →
``{"dtype", "shape", "data_offsets": [begin, end]}`` and an optional ``"__metadata__"`` map of
str → str), then the data buffer. Everything the header claims is held against the file's real
size *before* anything is mapped: the header length, each tensor's offsets and its shape times
dtype, overlaps. A hostile header is a finding (``functional.safetensors.*``), never a crash
and never an allocation the header asked for: tensors are memory-mapped read-only, one at a
time, and read in bounded chunks to count non-finite values.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.formats import MAX_SAFETENSORS_HEADER
from validators.report import Finding, Severity
from validators.security.safetensors_scan import DTYPE_BYTES

#: safetensors dtype → the numpy dtype its bytes are read as. Types numpy has no native form
#: of (bfloat16, the float8s) are read as unsigned integers of their width: the bytes are
#: still mapped and counted, only their finiteness is not judged.
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "<i2",
    "U16": "<u2",
    "F16": "<f2",
    "I32": "<i4",
    "U32": "<u4",
    "F32": "<f4",
    "I64": "<i8",
    "U64": "<u8",
    "F64": "<f8",
    "C64": "<c8",
    "BF16": "<u2",
    "F8_E4M3": "uint8",
    "F8_E5M2": "uint8",
    "F8_E8M0": "uint8",
}
FLOAT_DTYPES = frozenset({"F16", "F32", "F64", "C64"})

#: More tensors than this in one header are not believed.
MAX_TENSORS = 100_000
#: Nor more dimensions than this for one tensor.
MAX_RANK = 32
#: Elements read at a time when counting non-finite values.
CHUNK_ELEMENTS = 1 << 20


@dataclass
class SafetensorsLoad:
    """What loading found: the tensors (name → dtype, shape, non-finite count) and findings."""

    findings: list[Finding] = field(default_factory=list)
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, str] | None = None
    data_bytes: int = 0

    def bad(self, rule: str, message: str, location: str) -> SafetensorsLoad:
        self.findings.append(
            Finding(Severity.HIGH, f"functional.safetensors.{rule}", message, location)
        )
        return self


def load_safetensors(path: Path, *, location: str) -> SafetensorsLoad:
    """Parse the header of the safetensors file at ``path``, check it against the file, and
    map and read every tensor. Never raises for a bad file."""
    found = SafetensorsLoad()
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            return found.bad("header-length", f"file of {size} bytes has no header", location)
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            return found.bad(
                "header-length",
                f"header length {length} runs past the end of the file ({size} bytes)",
                location,
            )
        if length > MAX_SAFETENSORS_HEADER:
            return found.bad(
                "header-length",
                f"header length {length} is over {MAX_SAFETENSORS_HEADER}",
                location,
            )
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return found.bad("header-json", f"the header is not JSON: {exc}", location)
    if not isinstance(header, dict):
        return found.bad("header-json", "the header is not a JSON object", location)
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            return found.bad("metadata", "__metadata__ must map strings to strings", location)
        found.metadata = metadata
    if len(header) > MAX_TENSORS:
        return found.bad(
            "limit", f"{len(header)} tensors in the header, more than {MAX_TENSORS}", location
        )
    data_start = 8 + length
    found.data_bytes = size - data_start
    spans = []
    for name, entry in header.items():
        where = f"{location}#tensor:{name}"
        problem = _entry_problem(entry, data_size=found.data_bytes)
        if problem is not None:
            found.bad(problem[0], problem[1], where)
        else:
            begin, end = entry["data_offsets"]
            spans.append((begin, end, name))
    spans.sort()
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            found.bad(
                "overlap",
                f"tensors {first!r} and {second!r} share bytes of the data buffer",
                f"{location}#tensor:{second}",
            )
    if found.findings:
        return found  # nothing is mapped from a header that lies
    for begin, _end, name in spans:
        found.tensors[name] = _read_tensor(path, header[name], offset=data_start + begin)
    return found


def _entry_problem(entry: object, *, data_size: int) -> tuple[str, str] | None:
    """(rule, message) when a tensor's entry is not one that can be mapped, else None."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        return "tensor", "the entry needs dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        return "dtype", f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        return "shape", f"shape {shape!r} is not a list of natural numbers"
    if len(shape) > MAX_RANK:
        return "shape", f"shape of rank {len(shape)}, more than {MAX_RANK}"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_natural(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return "offsets", f"data_offsets {offsets!r} is not [begin, end]"
    begin, end = offsets
    if end > data_size:
        return "offsets", f"data_offsets [{begin}, {end}] run past the data ({data_size} bytes)"
    # Python's integers do not overflow: an absurd shape gives an absurd size, compared here.
    needed = math.ceil(math.prod(shape) * DTYPE_BYTES[dtype])
    if needed > data_size:
        return "shape", (
            f"shape {shape} of {dtype} needs {needed} bytes, more than the whole data "
            f"buffer ({data_size} bytes)"
        )
    if end - begin != needed:
        return (
            "size",
            f"{end - begin} bytes for a {dtype} tensor of shape {shape} ({needed} needed)",
        )
    return None


def _read_tensor(path: Path, entry: dict[str, Any], *, offset: int) -> dict[str, Any]:
    """Map one tensor read-only and count its non-finite values, chunk by chunk."""
    import numpy as np

    dtype, shape = entry["dtype"], entry["shape"]
    info: dict[str, Any] = {"dtype": dtype, "shape": list(shape)}
    count = math.prod(shape)
    if dtype not in NUMPY_DTYPES or count == 0:
        return info
    array = np.memmap(path, dtype=NUMPY_DTYPES[dtype], mode="r", offset=offset, shape=(count,))
    try:
        if dtype in FLOAT_DTYPES:
            bad = 0
            for start in range(0, count, CHUNK_ELEMENTS):
                chunk = np.asarray(array[start : start + CHUNK_ELEMENTS])
                bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
            info["nonFinite"] = bad
    finally:
        del array
    return info


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
