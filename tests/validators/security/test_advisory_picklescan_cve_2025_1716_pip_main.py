"""picklescan CVE-2025-1716: ``pip`` was not an unsafe global.

picklescan before 0.0.22 did not list ``pip`` among dangerous globals, so a pickle calling
``pip.main(["install", "<attacker package>"])`` was reported clean; installing a package runs
its build hooks. (CVE id from the NVD/Sonatype disclosure; the matching GHSA id is not
verified here.) We treat ``pip`` and the other installers (``setuptools``, ``distutils``,
``ensurepip``, ``venv``) as whole modules, whatever submodule is named.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("pip", "main", id="pip-main"),
        pytest.param("pip._internal", "main", id="pip-internal"),
        pytest.param("pip._internal.cli.main", "main", id="pip-cli"),
        pytest.param("setuptools.sandbox", "run_setup", id="setuptools"),
        pytest.param("ensurepip", "_run_pip", id="ensurepip"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_installer_calls_are_critical(module: str, name: str, protocol: int) -> None:
    if protocol >= 4:
        data = c.stack_global_call(module, name, "install evil-package")
    else:
        data = c.call_global(module, name, "install evil-package", protocol=protocol)
    findings = scan(data)
    assert worst(findings) is Severity.CRITICAL
    assert any(f"{module}.{name}" in f.message for f in findings)
