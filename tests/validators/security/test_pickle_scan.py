"""The pickle scanner over a labelled corpus, its stream handling and limits, and fuzzing.

Nothing here unpickles: the corpus is bytes built in ``corpus_pickle``.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import corpus_pickle as corpus
from validators.report import Finding, Severity
from validators.security.pickle import (
    check_torch_zip,
    classify_global,
    looks_like_pickle,
    scan_pickle,
)
from validators.security.policy import DEFAULT_POLICY, SecurityPolicy

MALICIOUS = corpus.malicious_samples()
BENIGN = corpus.benign_samples()


def scan(data: bytes, policy: SecurityPolicy = DEFAULT_POLICY) -> list[Finding]:
    return scan_pickle(io.BytesIO(data), location="model.pkl", policy=policy)


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


class _Unseekable(io.RawIOBase):
    """A pipe-like stream: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# -- the corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample",
    [pytest.param(s, id=f"malicious-{s.id}") for s in MALICIOUS]
    + [pytest.param(s, id=f"benign-{s.id}") for s in BENIGN],
)
def test_corpus_is_classified(sample: corpus.Sample) -> None:
    findings = scan(sample.data)
    assert looks_like_pickle(sample.data[:256]), "the format detector must see a pickle"
    if sample.expect is None:
        assert findings == []
        return
    top = worst(findings)
    assert top is not None
    assert top >= sample.expect, findings
    assert DEFAULT_POLICY.fails(top)
    strong = [f for f in findings if f.severity >= sample.expect]
    assert any(sample.names in f.message for f in strong), findings
    assert all(f.location.startswith("model.pkl@") for f in findings)


def test_corpus_detection_rate_is_total() -> None:
    detected = [s.id for s in MALICIOUS if DEFAULT_POLICY.fails(worst(scan(s.data)) or 0)]
    false_positives = [s.id for s in BENIGN if scan(s.data)]
    assert len(detected) == len(MALICIOUS)
    assert false_positives == []


def test_corpus_is_large_enough_to_mean_something() -> None:
    assert len(MALICIOUS) >= 100
    assert len(BENIGN) >= 20


# -- findings ---------------------------------------------------------------------------------


def test_dangerous_global_finding_names_it_with_its_offset() -> None:
    data = corpus.proto(2) + corpus.call_global("os", "system")
    [finding] = scan(data)
    assert finding.severity is Severity.CRITICAL
    assert finding.rule_id == "pickle.dangerous-global"
    assert "os.system" in finding.message
    assert finding.location == "model.pkl@2"


def test_an_unknown_global_only_referenced_is_medium_and_does_not_fail() -> None:
    data = corpus.proto(2) + corpus.glob("mypackage.layers", "Dense") + corpus.STOP
    findings = scan(data)
    assert [(f.severity, f.rule_id) for f in findings] == [
        (Severity.MEDIUM, "pickle.unknown-global")
    ]
    assert not DEFAULT_POLICY.fails(Severity.MEDIUM)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(corpus.call_global("mypackage.layers", "Dense", protocol=2), id="REDUCE"),
        pytest.param(b"(S'x'\nimypackage.layers\nDense\n.", id="INST"),
        pytest.param(
            corpus.proto(2) + b"(" + corpus.glob("mypackage.layers", "Dense") + b"S'x'\no.",
            id="OBJ",
        ),
        pytest.param(
            corpus.proto(2) + corpus.glob("mypackage.layers", "Dense") + b")\x81.", id="NEWOBJ"
        ),
        pytest.param(
            corpus.proto(2) + corpus.glob("copyreg", "_reconstructor")
            + b"(" + corpus.glob("mypackage.layers", "Dense") + corpus.glob("builtins", "object")
            + b"NtR}b.",
            id="BUILD-runs-setstate",
        ),
    ],
)  # fmt: skip
def test_calling_a_global_off_the_allow_list_is_high(data: bytes) -> None:
    findings = scan(data)
    [call] = [f for f in findings if f.rule_id == "pickle.unknown-callable"]
    assert call.severity is Severity.HIGH
    assert "mypackage.layers.Dense" in call.message


def test_build_on_an_imported_object_itself_is_high() -> None:
    # BUILD's slot state is setattr on the target: here, on a class the pickle imported
    data = corpus.proto(2) + corpus.glob("collections", "OrderedDict") + b"N}\x86b."
    findings = scan(data)
    assert [(f.severity, f.rule_id) for f in findings] == [
        (Severity.HIGH, "pickle.build-on-global")
    ]


def test_a_call_on_a_flagged_global_is_folded_into_one_finding() -> None:
    data = (
        corpus.proto(2) + corpus.glob("os", "system") + corpus.binput(0)
        + b"".join(
            corpus.binget(0) + corpus.MARK + corpus.string0("id") + corpus.TUPLE + corpus.REDUCE
            + corpus.POP
            for _ in range(5)
        )
        + corpus.NONE + corpus.STOP
    )  # fmt: skip
    [finding] = scan(data)
    assert finding.rule_id == "pickle.dangerous-global"


def test_repeated_import_is_counted_not_repeated() -> None:
    data = corpus.proto(4) + (corpus.glob("os", "system") + corpus.POP) * 3 + b"N."
    [finding] = scan(data)
    assert "(3 times)" in finding.message


def test_an_extension_code_is_noted_low_and_counts_as_no_import() -> None:
    # copyreg's registry is empty unless the loading program fills it: random tensor bytes
    # often start with EXT1, and a later parse error must not make them "broken after an
    # import" (HIGH)
    data = corpus.proto(2) + b"\x82\x01" + corpus.EMPTY_TUPLE + corpus.REDUCE + corpus.STOP
    assert [(f.severity, f.rule_id) for f in scan(data)] == [
        (Severity.LOW, "pickle.extension-code")
    ]
    assert [(f.severity, f.rule_id) for f in scan(data[:-1])] == [
        (Severity.LOW, "pickle.extension-code"),
        (Severity.LOW, "pickle.parse-error"),
    ]


def test_parse_error_without_import_is_low() -> None:
    findings = scan(pickle.dumps([1, 2, 3], protocol=2)[:-3])
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.LOW, "pickle.parse-error")]


def test_parse_error_after_import_is_high() -> None:
    data = corpus.call_global("mypackage", "Thing", protocol=2)[:-2] + b"\xfe"
    rules = {f.rule_id: f.severity for f in scan(data)}
    assert rules["pickle.parse-error-after-import"] is Severity.HIGH


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_an_object_of_a_class_off_the_allow_list_fails_until_the_policy_allows_it(
    protocol: int,
) -> None:
    data = pickle.dumps(corpus.Sample("x", b"", None), protocol=protocol)
    findings = scan(data)
    assert {f.severity for f in findings} == {Severity.MEDIUM, Severity.HIGH}
    [call] = [f for f in findings if f.severity is Severity.HIGH]
    assert call.rule_id == "pickle.unknown-callable"
    assert "tests.support.corpus_pickle.Sample" in call.message

    allowing = dataclasses.replace(
        DEFAULT_POLICY,
        pickle_safe_prefixes=DEFAULT_POLICY.pickle_safe_prefixes | {"tests.support."},
    )
    assert scan_pickle(io.BytesIO(data), location="m", policy=allowing) == []


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        pytest.param("collections", "OrderedDict", None, id="ordered-dict-allowed"),
        pytest.param("__builtin__", "set", None, id="py2-builtin-set-allowed"),
        pytest.param("numpy.core.multiarray", "_reconstruct", None, id="numpy1-reconstruct"),
        pytest.param("numpy._core.multiarray", "_reconstruct", None, id="numpy2-reconstruct"),
        pytest.param("torch._utils", "_rebuild_tensor_v2", None, id="torch-rebuild"),
        pytest.param("torch", "BFloat16Storage", None, id="torch-storage"),
        pytest.param("sklearn.tree._classes", "DecisionTreeClassifier", None, id="sklearn"),
        pytest.param("os", "system", Severity.CRITICAL, id="os-system"),
        pytest.param("__builtin__", "getattr", Severity.CRITICAL, id="py2-getattr"),
        pytest.param("copy_reg", "_reconstructor", None, id="py2-copyreg-alias"),
        pytest.param("exceptions", "eval", Severity.MEDIUM, id="py2-module-without-alias"),
        pytest.param("commands", "getoutput", Severity.CRITICAL, id="py2-commands"),
        pytest.param("posixpath", "os.system", Severity.CRITICAL, id="attribute-path"),
        pytest.param(
            "sklearn.utils", "_testing.os.system", Severity.CRITICAL, id="safe-prefix-path"
        ),
        pytest.param("collections", "OrderedDict.__new__", Severity.CRITICAL, id="dunder"),
        pytest.param(" os", "system ", Severity.CRITICAL, id="whitespace"),
        pytest.param("functools", "partial", Severity.HIGH, id="gadget-builder"),
        pytest.param("builtins", "type", Severity.HIGH, id="class-builder"),
        pytest.param("mypackage", "Model", Severity.MEDIUM, id="unknown"),
        pytest.param("numpy", "trace", Severity.MEDIUM, id="name-like-a-module-is-not-it"),
        pytest.param(
            "sklearn.utils._testing",
            "assert_run_python_script_without_output",
            Severity.CRITICAL,
            id="dangerous-inside-safe-prefix",
        ),
    ],
)
def test_globals_are_classified(module: str, name: str, expected: Severity | None) -> None:
    assert classify_global(module, name, policy=DEFAULT_POLICY) == expected


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        pytest.param("os", Severity.CRITICAL, id="dangerous-module"),
        pytest.param("a", Severity.HIGH, id="other"),
    ],
)
def test_huge_global_names_are_refused_and_cut_short(module: str, expected: Severity) -> None:
    name = "a." * 300_000 + "system"
    data = corpus.proto(4) + corpus.sbu(module) + corpus.binunicode(name) + corpus.STACK_GLOBAL
    [finding] = scan(data + corpus.STOP)
    assert finding.severity is expected
    assert len(finding.message) < 400


def test_policy_can_allow_a_global() -> None:
    policy = SecurityPolicy(
        pickle_safe_globals=DEFAULT_POLICY.pickle_safe_globals | {"mypackage.Model"}
    )
    assert scan(corpus.call_global("mypackage", "Model", protocol=2), policy) == []


# -- streams, blobs and limits ----------------------------------------------------------------


class _CountingReader(io.BufferedReader):
    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_large_blob_is_sought_past_not_read(tmp_path: Path) -> None:
    blob = 512 * 1024 * 1024  # sparse: costs no disk
    path = tmp_path / "big.pkl"
    with path.open("wb") as f:
        f.write(corpus.proto(4) + b"\x8e" + blob.to_bytes(8, "little"))
        f.seek(blob, io.SEEK_CUR)
        f.write(corpus.POP + corpus.stack_global_call("os", "system")[2:])
    tracemalloc.start()
    with path.open("rb", buffering=0) as raw, _CountingReader(raw) as f:
        findings = scan_pickle(f, location="big.pkl", policy=DEFAULT_POLICY)
        read = f.bytes_read
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [f.rule_id for f in findings] == ["pickle.dangerous-global"]
    assert read < 8 * 1024 * 1024
    assert peak < 16 * 1024 * 1024


def test_unseekable_stream_is_read_in_bounded_chunks() -> None:
    blob = 40 * 1024 * 1024
    data = corpus.proto(4) + b"\x8e" + blob.to_bytes(8, "little") + bytes(blob) + corpus.POP
    data += corpus.stack_global_call("os", "system")[2:]
    tracemalloc.start()
    with io.BufferedReader(_Unseekable(data)) as stream:
        del data
        findings = scan_pickle(stream, location="pipe", policy=DEFAULT_POLICY)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [f.rule_id for f in findings] == ["pickle.dangerous-global"]
    assert peak < 16 * 1024 * 1024


def test_unseekable_joblib_stream_is_scanned() -> None:
    data = corpus.joblib_bytes() + corpus.stack_global_call("os", "system")
    with io.BufferedReader(_Unseekable(data)) as stream:
        findings = scan_pickle(stream, location="pipe", policy=DEFAULT_POLICY)
    assert "pickle.dangerous-global" in {f.rule_id for f in findings}
    assert worst(findings) is Severity.CRITICAL


def test_big_numpy_array_pickle_scans_clean(tmp_path: Path) -> None:
    path = tmp_path / "array.pkl"
    with path.open("wb") as f:
        pickle.dump(np.zeros(4 * 1024 * 1024), f, protocol=4)
    with path.open("rb") as f:
        assert scan_pickle(f, location="array.pkl", policy=DEFAULT_POLICY) == []


def test_huge_protocol0_line_is_skipped() -> None:
    data = b"V" + b"a" * (2 * 1024 * 1024) + b"\n" + corpus.POP
    data += corpus.call_global("os", "system")
    assert worst(scan(data)) is Severity.CRITICAL


def test_opcode_limit_fails_closed() -> None:
    policy = SecurityPolicy(pickle_max_opcodes=1000)
    findings = scan(pickle.dumps(list(range(100_000)), protocol=4), policy)
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.HIGH, "pickle.limits")]


def test_memo_limit_fails_closed() -> None:
    policy = SecurityPolicy(pickle_max_memo=10)
    findings = scan(pickle.dumps([str(i) for i in range(100)], protocol=4), policy)
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.HIGH, "pickle.limits")]


def test_embedded_pickles_nest_only_so_deep() -> None:
    inner = corpus.call_global("os", "system", protocol=2)
    for _ in range(6):
        inner = (
            corpus.proto(2) + corpus.glob("pickle", "loads") + corpus.binbytes(inner)
            + corpus.TUPLE1 + corpus.REDUCE + corpus.STOP
        )  # fmt: skip
    rules = {f.rule_id for f in scan(inner)}
    assert {"pickle.dangerous-global", "pickle.limits"} <= rules


def test_trailing_data_after_the_last_pickle_is_low() -> None:
    findings = scan(pickle.dumps({"a": 1}, protocol=2) + b"\x00\x01 raw storage bytes")
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.LOW, "pickle.trailing-data")]


def test_legacy_torch_layout_is_clean_but_for_its_raw_storage_bytes() -> None:
    """The pre-1.6 ``torch.save`` format: magic number, protocol, sys info, the data pickle
    and the storage keys, each a pickle, then raw storage bytes."""
    data = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    data += pickle.dumps(1001, protocol=2)
    data += pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    data += corpus.torch_state_dict_bytes()
    data += pickle.dumps(["0", "1"], protocol=2)
    data += (12).to_bytes(8, "little") + bytes(48)
    findings = scan(data)
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.LOW, "pickle.trailing-data")]


def test_scan_starts_at_the_stream_position() -> None:
    stream = io.BytesIO(b"NUMPY-like header!" + corpus.call_global("os", "system"))
    stream.seek(18)
    [finding] = scan_pickle(stream, location="m", policy=DEFAULT_POLICY)
    assert finding.severity is Severity.CRITICAL


# -- looks_like_pickle ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello world\n", id="text"),
        pytest.param(b'{"a": 1}', id="json"),
        pytest.param(b"import os\nos.system('id')\n", id="python-source"),
        pytest.param(b"cat foo\nbar baz\n", id="text-starting-with-c"),
        pytest.param(b"(abc", id="mark-then-letters"),
        pytest.param(b"a,b,c\n1,2,3\n", id="csv"),
        pytest.param(b"\x80\x06\x95", id="protocol-6"),
        pytest.param(b"\x80", id="bare-proto"),
        pytest.param(b"PK\x03\x04\x14\x00", id="zip"),
        pytest.param(b"\x93NUMPY\x01\x00v\x00{'descr'", id="npy"),
        pytest.param(b"\x08\x07\x12\x04onnx", id="onnx"),
        pytest.param(b"Version 1.0\n", id="text-starting-with-v"),
        pytest.param(b"I am a file\n", id="text-starting-with-i"),
    ],
)
def test_non_pickles_are_not_pickles(head: bytes) -> None:
    assert not looks_like_pickle(head)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"N.", id="none"),
        pytest.param(b"K\x01.", id="binint1"),
        pytest.param(b"(lp0\nI1\na.", id="protocol0-list"),
        pytest.param(b"]q\x00(K\x01K\x02e.", id="protocol1-list"),
        pytest.param(b"}q\x00", id="protocol1-dict-cut-short"),
        pytest.param(b"cos\nsystem\n(S'id'\ntR.", id="protocol0-global"),
        pytest.param(b"\x80\x02}q\x00.", id="protocol2"),
        pytest.param(b"\x95\x05\x00\x00\x00\x00\x00\x00\x00N.", id="frame-first"),
    ],
)
def test_pickles_look_like_pickles(head: bytes) -> None:
    assert looks_like_pickle(head)


# -- check_torch_zip --------------------------------------------------------------------------

TORCH_LAYOUT = [
    "archive/data.pkl",
    "archive/byteorder",
    "archive/data/0",
    "archive/data/1",
    "archive/version",
    "archive/.data/serialization_id",
]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(TORCH_LAYOUT, [], id="standard-layout"),
        pytest.param(
            ["model/data.pkl", "model/.data/version", "model/data/0"], [], id="old-layout"
        ),
        pytest.param(
            [*TORCH_LAYOUT, "archive/code/__torch__.py", "archive/constants.pkl"],
            [(Severity.LOW, "torch.torchscript")],
            id="torchscript",
        ),
        pytest.param(
            [*TORCH_LAYOUT, "archive/extra.pkl"],
            [(Severity.MEDIUM, "torch.layout")],
            id="extra-pickle",
        ),
        pytest.param(
            [*TORCH_LAYOUT, "archive/notes.txt"], [(Severity.LOW, "torch.layout")], id="extra-file"
        ),
        pytest.param(
            [*TORCH_LAYOUT, "evil.pkl"], [(Severity.MEDIUM, "torch.layout")], id="top-level-member"
        ),
        pytest.param(
            [*TORCH_LAYOUT, "other/data.pkl"],
            [(Severity.MEDIUM, "torch.layout"), (Severity.MEDIUM, "torch.layout")],
            id="two-folders",
        ),
        pytest.param(
            [*TORCH_LAYOUT, "archive/../../etc/passwd"],
            [(Severity.HIGH, "torch.layout")],
            id="path-escape",
        ),
        pytest.param(
            ["archive/data/0", "archive/version"],
            [(Severity.MEDIUM, "torch.layout")],
            id="no-data-pkl",
        ),
    ],
)
def test_torch_zip_layout(names: list[str], expected: list[tuple[Severity, str]]) -> None:
    findings = check_torch_zip(names, location="model.pt")
    assert sorted((f.severity, f.rule_id) for f in findings) == sorted(expected)
    assert all(f.location.startswith("model.pt") for f in findings)


# -- fuzzing ----------------------------------------------------------------------------------

SEEDS = [s.data for s in MALICIOUS[:60] + BENIGN if len(s.data) < 4096]


def _mutate(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(seed)
    for kind, where, value in edits:
        if not data:
            data.append(value)
            continue
        i = where % len(data)
        if kind == 0:
            data[i] = value
        elif kind == 1:
            data.insert(i, value)
        elif kind == 2:
            del data[i]
        else:
            del data[i:]
    return bytes(data)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    findings = scan(data)
    assert all(isinstance(f, Finding) for f in findings)
    looks_like_pickle(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
)
def test_mutated_pickles_never_raise(seed: bytes, edits: list[tuple[int, int, int]]) -> None:
    data = _mutate(seed, edits)
    findings = scan(data)
    assert all(isinstance(f, Finding) for f in findings)
    assert looks_like_pickle(data[:256]) in (True, False)
    stream = io.BufferedReader(_Unseekable(data))
    assert isinstance(scan_pickle(stream, location="pipe", policy=DEFAULT_POLICY), list)


@FUZZ
@given(st.sampled_from([s.data for s in MALICIOUS]), st.binary(max_size=64))
def test_a_payload_is_found_whatever_benign_pickle_precedes_it(
    payload: bytes, prefix_seed: bytes
) -> None:
    prefix = pickle.dumps(prefix_seed, protocol=len(prefix_seed) % 6)
    top = worst(scan(prefix + payload))
    assert top is not None
    assert top >= Severity.HIGH
