"""ReversingLabs "nullifAI" (February 2025): broken pickles that still run their payload.

Models on Hugging Face held a pickle whose payload sat at the start of the stream and whose
later bytes were broken. The unpickler executes opcodes as it reads them, so the payload runs
before the error; picklescan stopped at the parse error and reported nothing dangerous. (Not a
CVE; reported by ReversingLabs and fixed in picklescan 0.0.22.) We report every import seen
before the error, and a parse error after any import is itself HIGH.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity
from validators.security.policy import DEFAULT_POLICY


def test_dangerous_import_before_a_break_is_critical() -> None:
    data = c.proto(2) + c.glob("os", "system") + c.MARK + c.string0("id") + c.TUPLE + c.REDUCE
    data += b"\xff\xfe garbage"
    findings = scan(data)
    rules = {f.rule_id: f.severity for f in findings}
    assert rules["pickle.dangerous-global"] is Severity.CRITICAL
    assert rules["pickle.parse-error-after-import"] is Severity.HIGH


def test_unknown_import_before_a_break_fails_the_scan() -> None:
    data = c.call_global("evil_pkg", "loader", protocol=2)[:-1] + b"\x00"
    findings = scan(data)
    assert worst(findings) is Severity.HIGH
    assert DEFAULT_POLICY.fails(worst(findings))


@pytest.mark.parametrize("cut", [1, 3, 7])
def test_truncated_payload_is_still_found(cut: int) -> None:
    data = c.stack_global_call("subprocess", "getoutput")
    assert worst(scan(data[:-cut])) is Severity.CRITICAL


def test_break_inside_a_frame_after_stack_global() -> None:
    body = c.sbu("os") + c.sbu("system") + c.STACK_GLOBAL + c.sbu("id") + c.TUPLE1 + c.REDUCE
    frame = b"\x95" + (len(body) + 100).to_bytes(8, "little")  # the frame claims more bytes
    assert worst(scan(c.proto(4) + frame + body)) is Severity.CRITICAL
