"""TensorFlow SavedModels, read as protobuf: real ones made with TensorFlow (committed
``saved_model.pb`` files, ``fixtures/savedmodel/make_fixtures.py``), hand-encoded ones built
here from the .proto field numbers, and hostile bytes. TensorFlow is never imported."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from registry.formats import Format, sniff
from validators.report import Finding, Severity
from validators.security import savedmodel_scan
from validators.security.savedmodel_scan import (
    FILE_AND_NETWORK_OPS,
    MAX_DEPTH,
    PYTHON_OPS,
    SAVED_MODEL_NAMES,
    looks_like_saved_model,
    scan_saved_model,
)

FIXTURES = Path(__file__).parent / "fixtures" / "savedmodel"
LOC = "saved_model.pb"


def _real(name: str) -> bytes:
    return (FIXTURES / name / "saved_model.pb").read_bytes()


def _scan(data: bytes) -> list[Finding]:
    return scan_saved_model(data, location=LOC)


def _rules(findings: Iterable[Finding]) -> list[tuple[str, Severity]]:
    return [(f.rule_id, f.severity) for f in findings]


# --- a tiny protobuf encoder ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _func(name: str, **attrs: bytes) -> bytes:
    """An AttrValue holding a NameAttrList (field 10)."""
    return _len(10, _len(1, name) + b"".join(_len(2, _entry(k, v)) for k, v in attrs.items()))


def _string(value: str) -> bytes:
    return _len(2, value)  # AttrValue.s


def _entry(key: str, value: bytes) -> bytes:
    return _len(1, key) + _len(2, value)


def _node(name: str, op: str, *inputs: str, **attrs: bytes) -> bytes:
    body = _len(1, name) + _len(2, op) + b"".join(_len(3, i) for i in inputs)
    return body + b"".join(_len(5, _entry(k, v)) for k, v in attrs.items())


def _function(name: str, *nodes: bytes) -> bytes:
    return _len(1, _len(1, name)) + b"".join(_len(3, n) for n in nodes)


def _graph(nodes: Iterable[bytes] = (), functions: Iterable[bytes] = ()) -> bytes:
    body = b"".join(_len(1, n) for n in nodes)
    library = b"".join(_len(1, f) for f in functions)
    return body + (_len(2, library) if library else b"")


def _meta_graph(graph: bytes, *, save: str = "", restore: str = "") -> bytes:
    info = _len(1, _len(4, "serve"))  # meta_info_def.tags
    saver = _len(1, "saver_filename:0") + _len(2, save) + _len(3, restore) if save else b""
    return info + _len(2, graph) + (_len(3, saver) if saver else b"")


def _saved_model(*meta_graphs: bytes, version: int | None = 1) -> bytes:
    head = _int(1, version) if version is not None else b""
    return head + b"".join(_len(2, m) for m in meta_graphs)


def _tf2(*functions: bytes, serve: str = "serve") -> bytes:
    """A TF2-shaped SavedModel: a serving call, and the saver's save and restore calls."""
    main = [
        _node("saver_filename", "Placeholder"),
        _node("StatefulPartitionedCall", "StatefulPartitionedCall", f=_func(serve)),
        _node("sp1", "StatefulPartitionedCall", "saver_filename", f=_func("traced_save")),
        _node("sp2", "StatefulPartitionedCall", "saver_filename", f=_func("traced_restore")),
    ]
    saver = (
        _function("traced_save", _node("SaveV2", "SaveV2"), _node("m", "MergeV2Checkpoints")),
        _function("traced_restore", _node("RestoreV2", "RestoreV2")),
    )
    graph = _graph(main, [*saver, *functions])
    return _saved_model(_meta_graph(graph, save="sp1:0", restore="sp2"))


def _where(function: str, node: str, meta_graph: int = 0) -> str:
    return f"{LOC}#meta_graph[{meta_graph}]/function:{function}/node:{node}"


# --- real SavedModels, made with TensorFlow ----------------------------------------------

BENIGN = [
    "benign_module",  # a tf.Module: matmul + relu
    "benign_keras",  # a Keras model, tf.saved_model.save
    "benign_control_flow",  # tf.while_loop, tf.cond, tf.print to stderr
    "benign_vocabulary",  # a lookup table from a vocabulary asset
    "benign_tf1_builder",  # TF1 SavedModelBuilder: the saver is in the main graph
    "benign_keras_export",  # Keras 3's model.export, after a training step
    "benign_tf1_assets",  # TF1, a vocabulary asset, an init op and two meta graphs
]

MALICIOUS = [
    pytest.param("read_file", "ReadFile", Severity.HIGH, id="tf.io.read_file"),
    pytest.param("write_file", "WriteFile", Severity.HIGH, id="tf.io.write_file"),
    pytest.param("matching_files", "MatchingFiles", Severity.HIGH, id="tf.io.matching_files"),
    pytest.param("py_function", "EagerPyFunc", Severity.CRITICAL, id="tf.py_function"),
    pytest.param("numpy_function", "PyFunc", Severity.CRITICAL, id="tf.numpy_function"),
    pytest.param("print_to_file", "PrintV2", Severity.HIGH, id="tf.print-to-file"),
    pytest.param("save_in_serving", "SaveV2", Severity.HIGH, id="SaveV2-in-serving"),
]


@pytest.mark.parametrize("name", BENIGN)
def test_real_benign_saved_model_has_no_finding(name: str) -> None:
    data = _real(name)
    assert _scan(data) == []
    assert looks_like_saved_model(data[:4096], size=len(data))


@pytest.mark.parametrize(
    "name", ["benign_module", "benign_keras", "benign_keras_export", "benign_tf1_builder"]
)
def test_real_models_with_variables_have_saver_ops(name: str) -> None:
    # it is the saver's reach, not their absence, that keeps them out of the findings
    assert b"SaveV2" in _real(name)
    assert b"RestoreV2" in _real(name)


@pytest.mark.parametrize(("name", "op", "severity"), MALICIOUS)
def test_real_malicious_saved_model_is_reported(name: str, op: str, severity: Severity) -> None:
    [finding] = _scan(_real(name))
    assert (finding.rule_id, finding.severity) == ("savedmodel.dangerous-op", severity)
    assert f"runs {op}" in finding.message
    # the op sits in the serving lambda's function, which the signature wrapper calls
    assert finding.location.startswith(f"{LOC}#meta_graph[0]/function:__inference_<lambda>_")
    assert finding.location.endswith(f"/node:{op}")


def test_print_to_file_names_the_stream() -> None:
    [finding] = _scan(_real("print_to_file"))
    assert "file:///tmp/modelreg-savedmodel-fixture/log" in finding.message


# --- hand-encoded SavedModels --------------------------------------------------------------


def test_hand_encoded_benign_model_has_no_finding() -> None:
    serve = _function("serve", _node("MatMul", "MatMul", "x", "w"), _node("Relu", "Relu", "m"))
    assert _scan(_tf2(serve)) == []


def test_op_in_a_nested_function_is_reported_in_that_function() -> None:
    inner = _function("inner", _node("rf", "ReadFile", "path"))
    middle = _function("middle", _node("if", "StatelessIf", then_branch=_func("inner")))
    serve = _function("serve", _node("call", "PartitionedCall", f=_func("middle")))
    findings = _scan(_tf2(serve, middle, inner))
    assert [f.location for f in findings] == [_where("inner", "rf")]


def test_function_nobody_calls_is_still_scanned() -> None:
    findings = _scan(_tf2(_function("serve"), _function("orphan", _node("w", "WriteFile"))))
    assert [f.location for f in findings] == [_where("orphan", "w")]


def test_op_in_the_second_meta_graph() -> None:
    first = _meta_graph(_graph([_node("x", "Placeholder")]))
    second = _meta_graph(_graph([_node("py", "EagerPyFunc")]))
    [finding] = _scan(_saved_model(first, second))
    assert finding.severity is Severity.CRITICAL
    assert finding.location == f"{LOC}#meta_graph[1]/node:py"


def test_op_in_the_main_graph() -> None:
    data = _saved_model(_meta_graph(_graph([_node("load/ReadFile", "ReadFile", "Const")])))
    assert [f.location for f in _scan(data)] == [f"{LOC}#meta_graph[0]/node:load/ReadFile"]


def test_function_named_by_a_list_of_functions_deep_in_attrs() -> None:
    branches = _len(1, _len(9, _len(1, "case_a")) + _len(9, _len(1, "case_b")))  # list.func
    serve = _function("serve", _node("case", "Case", branches=branches))
    case_b = _function("case_b", _node("save", "SaveV2"))
    findings = _scan(_tf2(serve, _function("case_a"), case_b))
    assert [f.location for f in findings] == [_where("case_b", "save")]


@pytest.mark.parametrize("op", sorted(PYTHON_OPS | FILE_AND_NETWORK_OPS))
def test_every_listed_op_is_reported(op: str) -> None:
    [finding] = _scan(_tf2(_function("serve", _node("n", op))))
    expected = Severity.CRITICAL if op in PYTHON_OPS else Severity.HIGH
    assert _rules([finding]) == [("savedmodel.dangerous-op", expected)]
    assert finding.message.startswith(f"node 'n' runs {op}")


def test_the_last_op_field_wins_as_in_protobuf() -> None:
    disguised = _len(1, "n") + _len(2, "Identity") + _len(2, "ReadFile")
    assert len(_scan(_tf2(_function("serve", disguised)))) == 1
    undone = _len(1, "n") + _len(2, "ReadFile") + _len(2, "Identity")
    assert _scan(_tf2(_function("serve", undone))) == []


@pytest.mark.parametrize(
    ("op", "attrs", "reported"),
    [
        pytest.param("PrintV2", {}, False, id="print-default-stderr"),
        pytest.param("PrintV2", {"output_stream": "stderr"}, False, id="print-stderr"),
        pytest.param("PrintV2", {"output_stream": "log(info)"}, False, id="print-log"),
        pytest.param("PrintV2", {"output_stream": "file:///etc/x"}, True, id="print-file"),
        pytest.param("DecodeProtoV2", {"descriptor_source": "local://"}, False, id="proto-local"),
        pytest.param("DecodeProtoV2", {"descriptor_source": "/etc/d.pb"}, True, id="proto-file"),
        pytest.param("EncodeProto", {"descriptor_source": "bytes://\n\x01"}, False, id="bytes"),
    ],
)
def test_ops_that_touch_a_file_when_an_attr_says_so(
    op: str, attrs: dict[str, str], reported: bool
) -> None:
    node = _node("n", op, **{k: _string(v) for k, v in attrs.items()})
    findings = _scan(_tf2(_function("serve", node)))
    assert bool(findings) is reported, findings


def test_an_attr_left_to_the_caller_is_not_taken_as_harmless() -> None:
    # inside a function, output_stream may be a placeholder the calling node fills in
    node = _node("n", "PrintV2", output_stream=_len(9, "stream"))
    [finding] = _scan(_tf2(_function("serve", node)))
    assert "<placeholder stream>" in finding.message


# --- checkpoint ops: expected in the saver, reported anywhere else ------------------------


def test_checkpoint_op_in_serving_is_reported() -> None:
    findings = _scan(_tf2(_function("serve", _node("r", "RestoreV2", "prefix"))))
    assert [f.location for f in findings] == [_where("serve", "r")]
    assert "outside the model's saver" in findings[0].message


def test_save_op_in_the_restore_function_is_reported() -> None:
    # the restore function runs at every load: writing a checkpoint there is not the saver's
    main = [
        _node("sp1", "StatefulPartitionedCall", f=_func("traced_save")),
        _node("sp2", "StatefulPartitionedCall", f=_func("traced_restore")),
    ]
    restore = _function("traced_restore", _node("r", "RestoreV2"), _node("s", "SaveV2"))
    graph = _graph(main, [_function("traced_save", _node("s", "SaveV2")), restore])
    findings = _scan(_saved_model(_meta_graph(graph, save="sp1:0", restore="sp2")))
    assert [f.location for f in findings] == [_where("traced_restore", "s")]


def test_saver_function_that_serving_also_calls_is_not_exempt() -> None:
    serve = _function("serve", _node("call", "StatefulPartitionedCall", f=_func("traced_save")))
    findings = _scan(_tf2(serve))
    assert sorted(f.location for f in findings) == [
        _where("traced_save", "SaveV2"),
        _where("traced_save", "m"),
    ]


def test_saver_function_that_a_function_only_python_calls_also_calls_is_not_exempt() -> None:
    # a concrete function the loaded object exposes to Python: no graph node calls it
    exposed = _function("exposed", _node("call", "PartitionedCall", f=_func("traced_restore")))
    findings = _scan(_tf2(_function("serve"), exposed))
    assert [f.location for f in findings] == [_where("traced_restore", "RestoreV2")]


def test_tf1_saver_in_the_main_graph() -> None:
    nodes = [
        _node("save/Const", "PlaceholderWithDefault"),
        _node("save/SaveV2", "SaveV2", "save/Const", "w"),
        _node("save/control_dependency", "Identity", "save/Const", "^save/SaveV2"),
        _node("save/RestoreV2", "RestoreV2", "save/Const"),
        _node("save/Assign", "AssignVariableOp", "w", "save/RestoreV2"),
        _node("save/restore_all", "NoOp", "^save/Assign"),
        _node("w", "VarHandleOp"),
        _node("evil", "SaveV2", "w"),  # not upstream of the saver's nodes
    ]
    meta = _meta_graph(_graph(nodes), save="save/control_dependency:0", restore="save/restore_all")
    assert [f.location for f in _scan(_saved_model(meta))] == [f"{LOC}#meta_graph[0]/node:evil"]


def test_without_a_saver_every_checkpoint_op_is_reported() -> None:
    graph = _graph([_node("s", "SaveV2"), _node("r", "RestoreV2"), _node("x", "ShardedFilename")])
    assert len(_scan(_saved_model(_meta_graph(graph)))) == 2  # ShardedFilename only formats


def test_long_names_are_kept_exactly_and_shown_short() -> None:
    long_save = "traced_save_" + "x" * 1000
    main = [_node("sp1", "StatefulPartitionedCall", f=_func(long_save))]
    lookalike = "traced_save_" + "x" * 999 + "y"  # only the last byte differs: not exempt
    functions = [
        _function(long_save, _node("s", "SaveV2")),
        _function(lookalike, _node("s", "SaveV2")),
    ]
    findings = _scan(_saved_model(_meta_graph(_graph(main, functions), save="sp1:0")))
    [finding] = findings
    assert finding.location == _where("traced_save_" + "x" * 108 + "...", "s")


def test_unprintable_names_are_escaped() -> None:
    [finding] = _scan(_tf2(_function("serve", _node("a\nb\x1b", "ReadFile"))))
    assert finding.location == _where("serve", "a\\x0ab\\x1b")


# --- hostile bytes: a clear finding, never an exception -----------------------------------


def _malformed(data: bytes) -> Finding:
    findings = _scan(data)
    assert findings[-1].rule_id == "savedmodel.malformed", findings
    assert findings[-1].severity is Severity.HIGH
    return findings[-1]


def _deep(levels: int) -> bytes:
    value = _string("leaf")
    for _ in range(levels):
        value = _func("f", a=value)  # AttrValue.func -> NameAttrList.attr -> AttrValue ...
    return _saved_model(_meta_graph(_graph([_node("n", "NoOp", a=value)])))


@pytest.mark.parametrize(
    ("data", "problem", "where"),
    [
        pytest.param(b"", "no meta graph", LOC, id="empty"),
        pytest.param(_int(1, 1), "no meta graph", LOC, id="version-only"),
        pytest.param(
            b"\x12" + _varint(2**40) + b"\x0a\x00",
            "field 2 of length 1099511627776 runs past the end of its message (2 bytes left)",
            f"{LOC}@0",
            id="length-2**40",
        ),
        pytest.param(
            b"\x08" + b"\xff" * 10 + b"\x01",
            "varint longer than 10 bytes",
            f"{LOC}@1",
            id="11-byte-varint",
        ),
        pytest.param(b"\x08", "varint runs past the end", f"{LOC}@1", id="truncated-varint"),
        pytest.param(
            _int(2, 7), "field 2 has wire type 0, not 2", f"{LOC}@0", id="meta-graph-varint"
        ),
        pytest.param(
            _saved_model(_meta_graph(_graph([_int(2, 5)]))),
            "field 2 has wire type 0, not 2",
            f"{LOC}#meta_graph[0]/graph_def/node[0]@",
            id="op-as-varint",
        ),
        pytest.param(
            _len(1, b""), "field 1 has wire type 2, not 0", f"{LOC}@0", id="version-as-bytes"
        ),
        pytest.param(b"\x00\x00", "field number 0", f"{LOC}@0", id="field-0"),
        pytest.param(
            b"\x1b\x1c", "wire type 3, which SavedModel never uses", f"{LOC}@0", id="group"
        ),
        pytest.param(b"\x1f", "wire type 7", f"{LOC}@0", id="wire-type-7"),
        pytest.param(
            b"\x19\x00\x00", "of 8 bytes runs past the end", f"{LOC}@0", id="short-fixed64"
        ),
        pytest.param(
            _deep(MAX_DEPTH),
            f"messages nested deeper than {MAX_DEPTH}",
            f"{LOC}#meta_graph[0]/",
            id="deep",
        ),
        pytest.param(
            _saved_model(_meta_graph(_graph([_len(2, b"Read\xffFile")]))),
            "op name is not UTF-8",
            f"{LOC}#meta_graph[0]/graph_def/node[0]@",
            id="op-not-utf8",
        ),
    ],
)
def test_malformed_protobuf_is_a_clear_finding(data: bytes, problem: str, where: str) -> None:
    finding = _malformed(data)
    assert problem in finding.message
    assert finding.location.startswith(where)


def test_nesting_under_the_limit_is_fine() -> None:
    # six messages down to the node's AttrValue, then three per level
    assert _scan(_deep((MAX_DEPTH - 6) // 3)) == []
    assert _malformed(_deep((MAX_DEPTH - 6) // 3 + 1))


def test_malformed_after_a_dangerous_op_reports_both() -> None:
    data = _saved_model(_meta_graph(_graph([_node("rf", "ReadFile")])))
    findings = _scan(data + b"\x12\x05ab")
    assert _rules(findings) == [
        ("savedmodel.dangerous-op", Severity.HIGH),
        ("savedmodel.malformed", Severity.HIGH),
    ]


def test_truncated_real_model_is_malformed_at_every_cut() -> None:
    data = _real("benign_keras")
    for cut in range(1, len(data), 97):
        assert _rules(_scan(data[:cut])) == [("savedmodel.malformed", Severity.HIGH)], cut


def test_random_bytes_never_raise() -> None:
    rng = random.Random(16)
    for size in (1, 2, 3, 7, 64, 1000, 20_000):
        for _ in range(40):
            findings = _scan(rng.randbytes(size))
            assert all(isinstance(f, Finding) for f in findings)
            # half of all wire types are invalid: longer random bytes never parse
            assert findings or size < 64, size


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_give_findings_not_exceptions(data: bytes) -> None:
    assert all(isinstance(f, Finding) for f in _scan(data))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_models_never_raise(data: st.DataObject) -> None:
    raw = bytearray(_real(data.draw(st.sampled_from(BENIGN))))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    assert all(isinstance(f, Finding) for f in _scan(bytes(raw)))


def test_file_over_the_size_limit_is_not_parsed() -> None:
    data = _real("read_file")
    findings = scan_saved_model(data, location=LOC, max_bytes=len(data) - 1)
    assert _rules(findings) == [("limit.savedmodel_bytes", Severity.HIGH)]


def test_too_many_nodes_stop_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(savedmodel_scan, "MAX_GRAPH_ITEMS", 50)
    graph = _graph([_node(f"n{i}", "Identity", "x") for i in range(40)])
    findings = _scan(_saved_model(_meta_graph(graph)))
    assert _rules(findings) == [("limit.savedmodel_nodes", Severity.HIGH)]


def test_a_large_constant_is_skipped_unread() -> None:
    tensor = _len(8, b"\0" * 20_000_000)  # AttrValue.tensor: never decoded
    data = _saved_model(_meta_graph(_graph([_node("c", "Const", value=tensor)])))
    started = time.monotonic()
    assert _scan(data) == []
    assert time.monotonic() - started < 1


def test_a_large_graph_is_scanned_quickly() -> None:
    nodes = [
        _node(f"layer_{i}/MatMul", "MatMul", f"layer_{i - 1}/Relu", "w") for i in range(20_000)
    ]
    serve = _function("serve", *nodes, _node("rf", "ReadFile"))
    started = time.monotonic()
    assert len(_scan(_tf2(serve))) == 1
    assert time.monotonic() - started < 10


# --- telling a SavedModel from an ONNX model ----------------------------------------------


def _onnx(**kwargs: Any) -> bytes:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g", [x], [x])
    return bytes(helper.make_model(graph, **kwargs).SerializeToString())


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_onnx(), id="onnx-helper"),
        pytest.param(_onnx(producer_name="pytorch", producer_version="2.5"), id="onnx-pytorch"),
        pytest.param(_onnx(ir_version=1, producer_name="pytorch"), id="onnx-ir-1"),
        pytest.param(_onnx(ir_version=1), id="onnx-ir-1-no-producer"),
    ],
)
def test_an_onnx_model_is_not_a_saved_model(data: bytes) -> None:
    assert not looks_like_saved_model(data[:4096], size=len(data))


@pytest.mark.parametrize("name", [*BENIGN, "read_file"])
def test_a_real_saved_model_is_one(name: str) -> None:
    data = _real(name)
    assert looks_like_saved_model(data[:4096], size=len(data))


def test_a_real_saved_model_is_not_sniffed_as_onnx() -> None:
    data = _real("benign_module")
    assert sniff(data[:4096], size=len(data)) is not Format.ONNX


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(_tf2(_function("serve")), True, id="hand-encoded"),
        pytest.param(_saved_model(_meta_graph(_graph()), version=None), True, id="no-version"),
        pytest.param(_saved_model(_meta_graph(_graph()), version=7), False, id="version-7"),
        pytest.param(_int(1, 1) + _len(2, b"pytorch"), False, id="not-a-meta-graph"),
        pytest.param(_int(1, 1) + b"\x12\xff\x01" + b"\x0a", False, id="length-past-file"),
        pytest.param(_int(1, 1), False, id="no-meta-graph"),
        pytest.param(b"", False, id="empty"),
        pytest.param(b"\x80\x04\x95", False, id="pickle"),
        pytest.param(b"PK\x03\x04", False, id="zip"),
    ],
)
def test_looks_like_saved_model(head: bytes, expected: bool) -> None:
    assert looks_like_saved_model(head, size=len(head)) is expected


def test_names() -> None:
    assert "saved_model.pb" in SAVED_MODEL_NAMES
