"""Pickle header tricks (issue 16, items 1 and 9): sniffing follows what CPython's unpickler
accepts, and framing is read as CPython reads it, so neither hides a payload.

Every payload here is inert (``os.system("true")``), and nothing is ever unpickled.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from validators.report import Finding, Severity
from validators.security import scan_artifact
from validators.security.pickle import looks_like_pickle, scan_pickle
from validators.security.policy import DEFAULT_POLICY

#: the call, in protocol-0 text opcodes (no PROTO header of its own)
PAYLOAD_V0 = b"cos\nsystem\n(S'true'\ntR"


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def _critical(findings: Sequence[Finding]) -> bool:
    return any(f.severity is Severity.CRITICAL and ".system" in f.message for f in findings)


def _scan(data: bytes) -> list[Finding]:
    return scan_pickle(io.BytesIO(data), location="m.pkl", policy=DEFAULT_POLICY)


def _long_string(n: int) -> bytes:
    return b"X" + struct.pack("<I", n) + b"a" * n


TRICKS = {
    "proto-0-header": b"\x80\x00" + PAYLOAD_V0 + b".",
    "proto-1-header": b"\x80\x01" + PAYLOAD_V0 + b".",
    "long-binunicode-then-pop": _long_string(5000) + b"0" + PAYLOAD_V0 + b".",
    "long-binbytes-then-pop": b"B" + struct.pack("<I", 6000) + b"\0" * 6000 + b"0"
    + PAYLOAD_V0 + b".",
    "long-string-line-then-pop": b"S'" + b"a" * 5000 + b"'\n0" + PAYLOAD_V0 + b".",
    "long-unicode-line-then-pop": b"V" + b"a" * 5000 + b"\n0" + PAYLOAD_V0 + b".",
    "mark-then-proto": b"(\x80\x02" + b"1" + PAYLOAD_V0 + b".",
}  # fmt: skip


@pytest.mark.parametrize("data", list(TRICKS.values()), ids=list(TRICKS))
def test_a_header_trick_is_sniffed_as_a_pickle_and_its_payload_found(
    tmp_path: Path, data: bytes
) -> None:
    assert looks_like_pickle(data[:4096], size=len(data))
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    assert _critical(report.findings), report.findings


@pytest.mark.parametrize("data", list(TRICKS.values()), ids=list(TRICKS))
def test_a_header_trick_in_a_torch_zip_is_found(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")
    report = scan_artifact(path)
    assert report.verdict == "malicious"
    assert _critical(report.findings), report.findings


def test_a_long_first_opcode_in_a_second_concatenated_pickle_is_found() -> None:
    data = pickle.dumps({"weights": [1, 2]}, protocol=2) + _long_string(5000) + b"0"
    data += PAYLOAD_V0 + b"."
    assert _critical(_scan(data))


def test_a_long_first_opcode_that_overruns_the_file_is_not_a_pickle() -> None:
    data = _long_string(5000)[:4096]
    assert looks_like_pickle(data, size=None)
    assert not looks_like_pickle(data, size=len(data))  # the file ends inside the string


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"\x80\x06N.", id="protocol-6"),
        pytest.param(b"c" + b"\0" * 4095, id="global-with-no-newline"),
        pytest.param(b"I" + b"1" * 4095, id="int-line-longer-than-the-head"),
    ],
)
def test_what_no_unpickler_reads_is_still_not_a_pickle(head: bytes) -> None:
    assert not looks_like_pickle(head, size=len(head) + 10)


# -- random tensor bytes ------------------------------------------------------------------------


def test_random_tensor_bytes_that_sniff_as_a_pickle_never_fail_the_scan() -> None:
    """Raw storages are read as pickles when their first bytes could start one (a payload may
    hide in any member, CVE-2025-1889). Random floats must then give nothing that fails:
    EXT codes resolve nowhere, STACK_GLOBAL on numbers imports nothing, and a name no module
    path spells imports nothing either."""
    rng = np.random.default_rng(16)
    sniffed = 0
    for i in range(6000):
        kind = i % 3
        if kind == 0:
            data = rng.standard_normal(1024).astype(np.float32).tobytes()
        elif kind == 1:
            data = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        else:
            data = rng.integers(-100, 100, 512, dtype=np.int64).tobytes()
        if not looks_like_pickle(data[:4096], size=len(data)):
            continue
        sniffed += 1
        findings = scan_pickle(io.BytesIO(data), location="t", policy=DEFAULT_POLICY)
        assert not any(DEFAULT_POLICY.fails(f.severity) for f in findings), (data[:32], findings)
    assert sniffed > 0  # the test reads some random storages as pickles, or it proves nothing


# -- framing --------------------------------------------------------------------------------------


def _framed(body: bytes, declared: int) -> bytes:
    return b"\x80\x04\x95" + struct.pack("<Q", declared) + body


_CALL_V4 = b"\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_framed(_CALL_V4, len(_CALL_V4)), id="honest-frame"),
        pytest.param(_framed(_CALL_V4, 5), id="frame-ends-inside-an-opcode"),
        pytest.param(_framed(_CALL_V4, 0), id="empty-frame"),
        pytest.param(_framed(_CALL_V4, 1 << 40), id="frame-longer-than-the-file"),
        pytest.param(
            b"\x80\x04" + b"".join(
                b"\x95" + struct.pack("<Q", len(op)) + op
                for op in (b"\x8c\x02os", b"\x8c\x06system", b"\x93", b"\x8c\x04true", b"\x85",
                           b"R", b".")
            ),
            id="a-frame-per-opcode",
        ),
        pytest.param(
            _framed(b"\x8c\x02os\x95" + struct.pack("<Q", 3) + b"\x8c\x06system\x93"
                    + b"\x8c\x04true\x85R.", 13),
            id="frame-opcode-inside-a-frame",
        ),
    ],
)  # fmt: skip
def test_framing_hides_no_payload(data: bytes) -> None:
    """CPython's C unpickler reads a frame's opcodes inline (it only checks the frame's bytes
    are there); the Python one fails on an opcode that crosses a frame's end, but only when it
    gets there. Reading every opcode inline, whatever the frames say, is the union of both."""
    assert _critical(_scan(data))


def test_a_real_framed_pickle_with_a_payload_in_a_late_frame_is_found() -> None:
    data = pickle.dumps([list(range(30_000)), _Evil()], protocol=4)
    assert data.count(b"\x95") > 1  # the pickler wrote several frames
    assert _critical(_scan(data))
