"""ONNX: the protobuf is parsed without its external data, then checked as data.

- External data locations must stay inside the artifact: relative, no ``..``, no absolute or
  drive path, no backslash, no symlink on the way, inside ``root`` once resolved
  (CVE-2024-27318, CVE-2024-5187), and the bytes they name must exist.
- Operators come from allowed domains, in the graph, in every subgraph (``If``, ``Loop``,
  ``Scan``) and in model-local functions; so do ``opset_import`` domains.
- Declared tensor sizes are computed from their dims and never allocated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import onnx

from registry.bundles import unsafe_name
from validators.report import Finding, Severity
from validators.security.policy import SecurityPolicy

#: A serialized protobuf message cannot be larger than this, so neither can a parseable model.
PROTOBUF_LIMIT = 2 * 1024**3 - 1

#: Bytes per element of ONNX tensor types (``TensorProto.DataType``); strings are variable.
_ITEM_BYTES: dict[int, float] = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8,
    15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 0.5, 22: 0.5, 23: 0.5, 24: 1, 25: 0.25,
    26: 0.25,
}  # fmt: skip


@dataclass
class _Scan:
    path: Path
    root: Path
    policy: SecurityPolicy
    location: str
    findings: list[Finding] = field(default_factory=list)
    external_files: dict[Path, int] = field(default_factory=dict)

    def add(self, severity: Severity, rule: str, message: str, where: str = "") -> None:
        self.findings.append(Finding(severity, rule, message, f"{self.location}{where}"))


def allowed_domains(policy: SecurityPolicy) -> frozenset[str]:
    extra = {"com.microsoft"} if policy.allow_com_microsoft else set()
    return policy.onnx_allowed_domains | extra


def scan_onnx(
    path: Path,
    *,
    policy: SecurityPolicy,
    location: str,
    root: Path | None = None,
    external_data: set[Path] | None = None,
    claimed: bool = True,
) -> list[Finding]:
    """Findings for the ONNX model at ``path``; external data must lie inside ``root``
    (default: the model's folder). The external-data files the model names, once checked,
    are added to ``external_data`` when given.

    ``claimed`` says whether the file claims to be ONNX (by its name or declared format): a
    claimed model that does not parse is ``onnx.corrupt`` (HIGH); bytes that were only
    sniffed as ONNX's protobuf (random tensor data may be) and do not parse are a LOW
    ``format.unknown``, as any unknown content."""
    scan = _Scan(path, root or path.parent, policy, location)
    size = path.stat().st_size
    if size > min(policy.max_model_bytes, PROTOBUF_LIMIT):
        scan.add(
            Severity.HIGH,
            "limit.model_bytes",
            f"model file of {size} bytes is over the limit "
            f"({min(policy.max_model_bytes, PROTOBUF_LIMIT)}); not parsed",
        )
        return scan.findings
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors: not a model
        if claimed:
            scan.add(Severity.HIGH, "onnx.corrupt", f"not a valid ONNX model: {exc}")
        else:
            scan.add(
                Severity.LOW,
                "format.unknown",
                "reads like a protobuf but not as an ONNX model, and claims no format; "
                "checked for pickles only",
            )
        return scan.findings
    _check_model(scan, model)
    if external_data is not None:
        external_data.update(scan.external_files)
    total = size + sum(scan.external_files.values())
    if total > policy.max_model_bytes:
        scan.add(
            Severity.HIGH,
            "limit.model_bytes",
            f"model and its external data take {total} bytes, over the limit "
            f"({policy.max_model_bytes})",
        )
    return scan.findings


def _check_model(scan: _Scan, model: onnx.ModelProto) -> None:
    allowed = allowed_domains(scan.policy)
    local = {(f.domain, f.name) for f in model.functions}
    function_domains = {domain for domain, _ in local}
    for opset in model.opset_import:
        if opset.domain not in allowed and opset.domain not in function_domains:
            scan.add(
                Severity.HIGH,
                "onnx.domain",
                f"opset_import of domain {opset.domain!r}, which is not allowed",
                "#opset_import",
            )
    for function in model.functions:
        where = f"#function:{function.domain}.{function.name}"
        for opset in function.opset_import:
            if opset.domain not in allowed and opset.domain not in function_domains:
                scan.add(
                    Severity.HIGH,
                    "onnx.domain",
                    f"function imports domain {opset.domain!r}, which is not allowed",
                    where,
                )
        _check_nodes(scan, function.node, allowed=allowed, local=local, where=where)
    if model.HasField("graph"):
        _check_graph(scan, model.graph, allowed=allowed, local=local, where="#graph")
    for info in model.training_info:
        for graph in (info.initialization, info.algorithm):
            _check_graph(scan, graph, allowed=allowed, local=local, where="#training")


def _check_graph(
    scan: _Scan,
    graph: onnx.GraphProto,
    *,
    allowed: frozenset[str],
    local: set[tuple[str, str]],
    where: str,
) -> None:
    for tensor in graph.initializer:
        _check_tensor(scan, tensor, f"{where}/initializer:{tensor.name}")
    for sparse in graph.sparse_initializer:
        _check_sparse(scan, sparse, f"{where}/initializer:{sparse.values.name}")
    for info in (*graph.input, *graph.output, *graph.value_info):
        _check_value_info(scan, info, f"{where}/value:{info.name}")
    _check_nodes(scan, graph.node, allowed=allowed, local=local, where=where)


def _check_nodes(
    scan: _Scan,
    nodes: Iterable[onnx.NodeProto],
    *,
    allowed: frozenset[str],
    local: set[tuple[str, str]],
    where: str,
) -> None:
    for index, node in enumerate(nodes):
        node_where = f"{where}/node:{node.name or f'{node.op_type}_{index}'}"
        if node.domain not in allowed and (node.domain, node.op_type) not in local:
            scan.add(
                Severity.HIGH,
                "onnx.domain",
                f"operator {node.domain}::{node.op_type} is from a domain that is not allowed",
                node_where,
            )
        for attr in node.attribute:
            attr_where = f"{node_where}.{attr.name}"
            if attr.HasField("t"):
                _check_tensor(scan, attr.t, attr_where)
            for tensor in attr.tensors:
                _check_tensor(scan, tensor, attr_where)
            if attr.HasField("sparse_tensor"):
                _check_sparse(scan, attr.sparse_tensor, attr_where)
            for sparse in attr.sparse_tensors:
                _check_sparse(scan, sparse, attr_where)
            if attr.HasField("g"):
                _check_graph(scan, attr.g, allowed=allowed, local=local, where=attr_where)
            for graph in attr.graphs:
                _check_graph(scan, graph, allowed=allowed, local=local, where=attr_where)


def _elements(dims: list[int]) -> int | None:
    """The element count of static dims; None when a dim is negative."""
    if any(d < 0 for d in dims):
        return None
    return math.prod(dims)


def _check_elements(scan: _Scan, dims: list[int], where: str) -> int | None:
    count = _elements(dims)
    if count is None:
        scan.add(Severity.HIGH, "onnx.shape", f"negative dimension in shape {dims}", where)
    elif count > scan.policy.max_tensor_elements:
        scan.add(
            Severity.HIGH,
            "limit.tensor_elements",
            f"declared tensor of {count} elements (shape {dims}) is over the limit "
            f"({scan.policy.max_tensor_elements})",
            where,
        )
        return None
    return count


def _check_sparse(scan: _Scan, sparse: onnx.SparseTensorProto, where: str) -> None:
    _check_elements(scan, list(sparse.dims), where)
    _check_tensor(scan, sparse.values, f"{where}.values")
    _check_tensor(scan, sparse.indices, f"{where}.indices")


def _check_value_info(scan: _Scan, info: onnx.ValueInfoProto, where: str) -> None:
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type" or not info.type.tensor_type.HasField("shape"):
        return
    dims = info.type.tensor_type.shape.dim
    if all(d.WhichOneof("value") == "dim_value" for d in dims):
        _check_elements(scan, [d.dim_value for d in dims], where)


def _check_tensor(scan: _Scan, tensor: onnx.TensorProto, where: str) -> None:
    count = _check_elements(scan, list(tensor.dims), where)
    expected = None
    if count is not None and tensor.data_type in _ITEM_BYTES:
        expected = math.ceil(count * _ITEM_BYTES[tensor.data_type])
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        _check_external(scan, tensor, where, expected=expected)
    elif tensor.HasField("raw_data") and expected not in (None, len(tensor.raw_data)):
        scan.add(
            Severity.MEDIUM,
            "onnx.tensor_data",
            f"raw_data holds {len(tensor.raw_data)} bytes, the shape needs {expected}",
            where,
        )


def unsafe_location(location: str) -> str | None:
    """Why an external-data location (or an archive member name) is unsafe, or None: the
    rule the bundle checks apply to member names (``registry.bundles.unsafe_name``)."""
    return unsafe_name(location)


def _check_external(
    scan: _Scan, tensor: onnx.TensorProto, where: str, *, expected: int | None
) -> None:
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    reason = unsafe_location(location)
    if reason is not None:
        scan.add(
            Severity.CRITICAL,
            "onnx.external_data.path",
            f"external data location {location!r} {reason} (path traversal, CVE-2024-27318 / "
            "CVE-2024-5187)",
            where,
        )
        return
    base = scan.path.parent
    current = base
    for part in PurePosixPath(location).parts:
        current = current / part
        if current.is_symlink():
            scan.add(
                Severity.HIGH,
                "onnx.external_data.symlink",
                f"external data location {location!r} goes through the symlink {part!r}",
                where,
            )
            return
    target = (base / location).resolve()
    if not target.is_relative_to(scan.root.resolve()):
        scan.add(
            Severity.CRITICAL,
            "onnx.external_data.path",
            f"external data location {location!r} resolves outside the artifact",
            where,
        )
        return
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        scan.add(
            Severity.HIGH, "onnx.external_data.range", "offset or length is not a number", where
        )
        return
    if not target.is_file():
        scan.add(
            Severity.HIGH,
            "onnx.external_data.missing",
            f"external data file {location!r} does not exist or is not a regular file",
            where,
        )
        return
    file_size = os.stat(target).st_size
    scan.external_files[target] = file_size
    span = length if length is not None else file_size - offset
    if offset < 0 or span < 0 or offset + span > file_size:
        scan.add(
            Severity.HIGH,
            "onnx.external_data.range",
            f"bytes [{offset}, {offset + span}) run outside {location!r} ({file_size} bytes)",
            where,
        )
    elif expected is not None and span != expected:
        scan.add(
            Severity.MEDIUM,
            "onnx.tensor_data",
            f"external data holds {span} bytes, the shape needs {expected}",
            where,
        )
