"""STACK_GLOBAL operands hidden in the memo (scanner evasion, several reports).

ModelScan and older picklescan releases named the global of a ``STACK_GLOBAL`` by looking at
the two string opcodes right before it. Pushing the strings earlier, storing them with
``BINPUT``/``MEMOIZE`` and fetching them back with ``BINGET``/``LONG_BINGET``/``GET`` (or
building them through a call) hides the name. The technique is described in the 2025 paper
"The Art of Hide and Seek: Making Pickle-Based Model Supply Chain Poisoning Stealthy Again"
and in picklescan/ModelScan issue threads; no single CVE id is cited here. We emulate the
stack and memo with real values, and a name computed at load time is HIGH.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity


def _via_memo(module: bytes, name: bytes) -> bytes:
    return (
        c.proto(4) + module + c.MEMOIZE + c.POP + name + c.MEMOIZE + c.POP
        + c.binget(0) + c.binget(1) + c.STACK_GLOBAL + c.sbu("id") + c.TUPLE1 + c.REDUCE
        + c.STOP
    )  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_via_memo(c.sbu("os"), c.sbu("system")), id="short-binunicode"),
        pytest.param(_via_memo(c.binunicode("os"), c.binunicode("system")), id="binunicode"),
        pytest.param(_via_memo(c.unicode0("os"), c.unicode0("system")), id="unicode-text"),
        pytest.param(_via_memo(c.string0("os"), c.string0("system")), id="string-text"),
        pytest.param(_via_memo(c.short_binstring("os"), c.binstring("system")), id="binstrings"),
    ],
)
def test_names_fetched_from_the_memo_are_resolved(data: bytes) -> None:
    findings = scan(data)
    assert worst(findings) is Severity.CRITICAL
    assert any("os.system" in f.message for f in findings)


def test_names_swapped_through_the_memo_are_resolved() -> None:
    # the string right before STACK_GLOBAL is a decoy; the real operands come from the memo
    data = (
        c.proto(4) + c.sbu("system") + c.binput(1) + c.POP + c.sbu("os") + c.binput(0) + c.POP
        + c.sbu("collections") + c.POP + c.binget(0) + c.binget(1) + c.STACK_GLOBAL
        + c.sbu("id") + c.TUPLE1 + c.REDUCE + c.STOP
    )  # fmt: skip
    assert any("os.system" in f.message for f in scan(data) if f.severity is Severity.CRITICAL)


def test_name_computed_by_a_call_is_high() -> None:
    findings = scan(c._unresolved_stack_global())
    assert worst(findings) >= Severity.HIGH
    assert any(f.rule_id == "pickle.unresolved-global" for f in findings)


def test_dup_of_a_global_keeps_its_name() -> None:
    data = c.proto(2) + c.glob("os", "system") + b"2" + c.POP + c.MARK + c.string0("id")
    data += c.TUPLE + c.REDUCE + c.STOP
    assert worst(scan(data)) is Severity.CRITICAL
