"""Aliases of dangerous globals and protocol-0 text globals (scanner evasion).

Published bypasses of blocklist scanners spell a global another way: ``__builtin__`` (the
Python 2 name the unpickler maps to ``builtins``), ``posix``/``nt`` instead of ``os``,
``builtins.getattr(builtins.__import__("os"), "system")``, protocol-0 ``GLOBAL``/``INST``
text lines, odd spacing in names, and ``copyreg._reconstructor`` around a dangerous class.
(Techniques from picklescan and ModelScan issue threads and the fickling documentation; no
single advisory id.)
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("__builtin__", "eval", id="py2-builtin"),
        pytest.param("builtins", "eval", id="builtins"),
        pytest.param("__builtin__", "__import__", id="py2-import"),
        pytest.param("posix", "system", id="posix"),
        pytest.param("nt", "system", id="nt"),
        pytest.param("os ", "system", id="trailing-space"),
        pytest.param(" os", "system", id="leading-space"),
        pytest.param("os", "system\r", id="carriage-return"),
        pytest.param("copy_reg", "add_extension", id="py2-copyreg"),
    ],
)
@pytest.mark.parametrize("route", ["GLOBAL", "INST", "STACK_GLOBAL"])
def test_aliases_are_critical(module: str, name: str, route: str) -> None:
    if route == "GLOBAL":
        data = c.call_global(module, name)
    elif route == "INST":
        data = c.MARK + c.string0("id") + c.inst(module, name) + c.STOP
    else:
        data = c.stack_global_call(module, name)
    assert worst(scan(data)) is Severity.CRITICAL


def test_getattr_import_nesting_is_critical() -> None:
    [sample] = [s for s in c.malicious_samples() if s.id == "getattr-import-nesting"]
    names = {f.message.split("'")[1] for f in scan(sample.data) if f.severity is Severity.CRITICAL}
    assert names == {"builtins.getattr", "builtins.__import__"}


def test_copyreg_reconstructor_around_a_dangerous_class() -> None:
    [sample] = [s for s in c.malicious_samples() if s.id == "copyreg-reconstructor-chain"]
    findings = scan(sample.data)
    assert [f.message.split("'")[1] for f in findings] == ["subprocess.Popen"]
