"""Embedded pickles handed to a second loader (scanner evasion).

A pickle can carry another pickle as a bytes constant and pass it to ``pickle.loads``,
``_pickle.loads``, ``dill.loads`` or ``torch.load(io.BytesIO(...))``; scanners that look only
at the outer stream see one "loads" call. ``torch.load``/``numpy.load`` on a path, and
``torch.storage._load_from_bytes``, reach another file or blob the scanner never sees.
(Techniques from picklescan and ModelScan issue threads; no single advisory id.) The loaders
are dangerous globals, and constant payloads passed to them are scanned too.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity

INNER = c.call_global("subprocess", "getoutput", "id", protocol=2)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("pickle", "loads", id="pickle"),
        pytest.param("_pickle", "loads", id="c-pickle"),
        pytest.param("dill", "loads", id="dill"),
        pytest.param("cloudpickle", "loads", id="cloudpickle"),
    ],
)
def test_embedded_payload_is_scanned(module: str, name: str) -> None:
    data = c.proto(3) + c.glob(module, name) + c.binbytes(INNER) + c.TUPLE1 + c.REDUCE + c.STOP
    findings = scan(data)
    messages = " ".join(f.message for f in findings)
    assert f"{module}.{name}" in messages
    assert "embedded" in messages
    assert "subprocess.getoutput" in messages


def test_embedded_payload_through_bytesio_and_torch_load() -> None:
    data = (
        c.proto(2) + c.glob("torch", "load") + c.MARK + c.glob("io", "BytesIO") + c.MARK
        + c.binbytes(INNER) + c.TUPLE + c.REDUCE + c.TUPLE + c.REDUCE + c.STOP
    )  # fmt: skip
    messages = " ".join(f.message for f in scan(data))
    assert "torch.load" in messages
    assert "subprocess.getoutput" in messages


def test_embedded_payload_spelled_as_protocol2_codecs_encode() -> None:
    text = INNER.decode("latin-1")
    data = (
        c.proto(2) + c.glob("pickle", "loads") + c.MARK + c.glob("_codecs", "encode")
        + c.MARK + c.binunicode(text) + c.binunicode("latin1") + c.TUPLE + c.REDUCE + c.TUPLE
        + c.REDUCE + c.STOP
    )  # fmt: skip
    assert "subprocess.getoutput" in " ".join(f.message for f in scan(data))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("torch", "load", id="torch-load"),
        pytest.param("torch.serialization", "load", id="torch-serialization"),
        pytest.param("torch.storage", "_load_from_bytes", id="torch-load-from-bytes"),
        pytest.param("numpy", "load", id="numpy-load"),
        pytest.param("joblib", "load", id="joblib-load"),
    ],
)
def test_recursive_loaders_are_critical(module: str, name: str) -> None:
    assert worst(scan(c.call_global(module, name, "/tmp/x", protocol=2))) is Severity.CRITICAL
