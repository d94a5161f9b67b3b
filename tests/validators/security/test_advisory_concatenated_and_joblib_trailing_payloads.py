"""Payloads after the first STOP, and after a joblib array (scanner evasion).

A stream can hold several pickles back to back: loaders that call ``pickle.load`` more than
once (the legacy ``torch.load`` format, joblib's object arrays, custom loaders) run all of
them, while scanners that stop at the first STOP saw only a harmless first pickle. joblib
writes raw array bytes right after each ``NumpyArrayWrapper``; a scanner that cannot step over
them stops there, and a payload placed after the array goes unseen. Conversely, plain
``pickle.load`` reads those "array bytes" as opcodes. (Techniques from picklescan and
ModelScan issue threads and Trail of Bits' "Sleepy Pickle" write-up; no single advisory id.)
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity
from validators.security.pickle import scan_pickle
from validators.security.policy import DEFAULT_POLICY


def test_payload_after_a_benign_pickle() -> None:
    data = pickle.dumps({"weights": [1.0, 2.0]}, protocol=2) + c.call_global("os", "system")
    assert worst(scan(data)) is Severity.CRITICAL


def test_payload_after_many_benign_pickles() -> None:
    data = b"".join(pickle.dumps(i, protocol=i % 6) for i in range(20))
    data += c.stack_global_call("os", "system")
    findings = scan(data)
    assert worst(findings) is Severity.CRITICAL
    offset = int(findings[0].location.rsplit("@", 1)[1])
    assert len(data) - len(c.stack_global_call("os", "system")) < offset < len(data)


def test_payload_after_a_numpy_array_pickle() -> None:
    data = pickle.dumps(np.ones((64, 64)), protocol=5) + c.call_global("os", "system")
    assert worst(scan(data)) is Severity.CRITICAL


@pytest.mark.parametrize("with_objects", [False, True], ids=["raw-arrays", "object-array"])
def test_payload_after_joblib_arrays(with_objects: bool) -> None:
    data = c.joblib_bytes(with_objects=with_objects) + c.stack_global_call("os", "system")
    findings = scan(data)
    assert worst(findings) is Severity.CRITICAL
    assert [f.rule_id for f in findings] == ["pickle.dangerous-global"]


def test_joblib_file_alone_is_clean() -> None:
    assert scan(c.joblib_bytes()) == []
    assert scan(c.joblib_bytes(with_objects=True)) == []


def test_payload_disguised_as_joblib_array_bytes() -> None:
    findings = scan(c.joblib_hiding_payload())
    assert worst(findings) is Severity.CRITICAL
    assert "plain pickle.load" in findings[0].message


def test_payload_disguised_as_large_joblib_array_bytes_mid_stream() -> None:
    stream = io.BytesIO(b"header" + c.joblib_hiding_payload(filler=3 * 1024 * 1024))
    stream.seek(6)
    findings = scan_pickle(stream, location="m", policy=DEFAULT_POLICY)
    assert [f.rule_id for f in findings] == ["pickle.dangerous-global"]
    assert "plain pickle.load" in findings[0].message
