"""picklescan CVE-2025-10157: unsafe-globals check bypassed through submodules.

picklescan matched its dangerous-globals list by exact module name, so a global from a
submodule of a listed module (``asyncio.unix_events._UnixSubprocessTransport``,
``os.path`` helpers, ``multiprocessing.util.spawnv_passfds``...) was not flagged. (CVE id from
JFrog's disclosure; the GHSA id is not verified here.) Our policy matches a listed module and
everything below it, and a dotted attribute path inside the name (``posixpath`` +
``os.system``) is matched on every suffix.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param("asyncio.unix_events", "_UnixSubprocessTransport", id="asyncio-transport"),
        pytest.param("asyncio.base_events", "BaseEventLoop", id="asyncio-loop"),
        pytest.param("multiprocessing.util", "spawnv_passfds", id="multiprocessing"),
        pytest.param("subprocess", "Popen", id="subprocess"),
        pytest.param("http.server", "HTTPServer", id="http-server"),
        pytest.param("urllib.request", "urlretrieve", id="urllib"),
        pytest.param("torch.utils.cpp_extension", "load_inline", id="torch-cpp-extension"),
    ],
)
def test_submodules_of_dangerous_modules_are_critical(module: str, name: str) -> None:
    assert worst(scan(c.stack_global_call(module, name))) is Severity.CRITICAL


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        pytest.param("posixpath", "os.system", Severity.CRITICAL, id="os-through-posixpath"),
        pytest.param("ntpath", "os.system", Severity.CRITICAL, id="os-through-ntpath"),
        pytest.param(
            "sklearn.base", "os.system", Severity.CRITICAL, id="os-through-an-allowed-prefix"
        ),
        pytest.param("collections", "_sys.modules", Severity.HIGH, id="sys-alias"),
        pytest.param("typing", "collections.abc", Severity.HIGH, id="unknown-path"),
    ],
)
def test_attribute_paths_are_followed(module: str, name: str, expected: Severity) -> None:
    assert worst(scan(c.stack_global_call(module, name))) is expected
