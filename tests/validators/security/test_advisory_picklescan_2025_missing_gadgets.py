"""picklescan 2025 GHSA reports: gadgets missing from the dangerous-globals list.

A series of 2025 picklescan security advisories each added callables that reach code
execution and were not blocked, among them ``numpy.testing._private.utils.runstring``,
``torch.utils.collect_env.run``, ``torch._inductor.codecache.compile_file``,
``uuid._get_command_stdout``, ``_osx_support``/``_aix_support`` helpers, ``lib2to3`` and
``idlelib`` internals, ``operator.attrgetter``/``methodcaller`` and ``functools.partial``
gadget builders. (The individual GHSA ids are not verified here; this file is named by
technique.) Gadget builders are HIGH or CRITICAL; code runners are CRITICAL.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("numpy.testing._private.utils", "runstring", id="numpy-runstring"),
        pytest.param("torch.utils.collect_env", "run", id="torch-collect-env"),
        pytest.param("torch._inductor.codecache", "compile_file", id="torch-inductor"),
        pytest.param("torch.utils.bottleneck.__main__", "run_cprofile", id="torch-bottleneck"),
        pytest.param("uuid", "_get_command_stdout", id="uuid"),
        pytest.param("_osx_support", "_read_output", id="osx-support"),
        pytest.param("_aix_support", "_read_cmd_output", id="aix-support"),
        pytest.param("lib2to3.pgen2.pgen", "generate_grammar", id="lib2to3"),
        pytest.param("idlelib.pyshell", "ModifiedInterpreter", id="idlelib"),
        pytest.param("operator", "attrgetter", id="attrgetter"),
        pytest.param("operator", "methodcaller", id="methodcaller"),
        pytest.param("_operator", "attrgetter", id="c-operator"),
        pytest.param("numpy.f2py", "compile", id="numpy-f2py"),
    ],
)
def test_code_execution_gadgets_are_critical(module: str, name: str) -> None:
    assert worst(scan(c.stack_global_call(module, name))) is Severity.CRITICAL


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("functools", "partial", id="partial"),
        pytest.param("functools", "reduce", id="reduce"),
        pytest.param("builtins", "type", id="type"),
        pytest.param("builtins", "map", id="map"),
    ],
)
def test_gadget_builders_fail_the_scan(module: str, name: str) -> None:
    assert worst(scan(c.stack_global_call(module, name))) >= Severity.HIGH


def test_build_setstate_gadget_is_critical() -> None:
    [sample] = [s for s in c.malicious_samples() if s.id == "build-setstate-gadget"]
    findings = scan(sample.data)
    assert any("os.system" in f.message for f in findings if f.severity is Severity.CRITICAL)
