"""fickling's unsafe-imports list missed modules that run code (several 2025 reports).

fickling flags an import as unsafe by a list of modules; reports in 2025 showed payloads it
rated as likely safe through modules missing from that list, for example ``pty.spawn``,
``runpy._run_code``, ``cProfile.run``, ``timeit.timeit``, ``code.InteractiveInterpreter``,
``pydoc.pipepager``, ``_posixsubprocess.fork_exec``, ``marshal.loads`` with
``types.FunctionType``, ``ctypes``, ``importlib``. (Reported against fickling, picklescan and
ModelScan alike; exact GHSA ids are not verified here, so this file is named by technique.)
Every one of them is a dangerous global in our policy.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity

CALLABLES = [
    ("pty", "spawn"),
    ("runpy", "_run_code"),
    ("runpy", "run_path"),
    ("cProfile", "run"),
    ("profile", "run"),
    ("timeit", "timeit"),
    ("code", "InteractiveInterpreter"),
    ("codeop", "compile_command"),
    ("pydoc", "pipepager"),
    ("_posixsubprocess", "fork_exec"),
    ("marshal", "loads"),
    ("types", "FunctionType"),
    ("ctypes", "CDLL"),
    ("importlib", "import_module"),
    ("importlib.util", "spec_from_file_location"),
    ("bdb", "Bdb"),
    ("pdb", "Pdb"),
    ("trace", "Trace"),
    ("doctest", "debug_script"),
    ("webbrowser", "open_new"),
    ("shutil", "rmtree"),
    ("socket", "socket"),
    ("uuid", "_get_command_stdout"),
    ("_osx_support", "_read_output"),
    ("idlelib.autocomplete", "AutoComplete"),
    ("logging.config", "listen"),
]


@pytest.mark.parametrize(
    ("module", "name"), [pytest.param(m, n, id=f"{m}.{n}") for m, n in CALLABLES]
)
def test_code_running_modules_are_critical(module: str, name: str) -> None:
    findings = scan(c.call_global(module, name, protocol=2))
    assert worst(findings) is Severity.CRITICAL
    assert findings[0].rule_id == "pickle.dangerous-global"


def test_marshal_function_chain_is_critical() -> None:
    # types.FunctionType(marshal.loads(<code>), {})()
    data = (
        c.proto(2) + c.glob("types", "FunctionType") + c.MARK + c.glob("marshal", "loads")
        + c.MARK + c.short_binbytes(b"\xe3fake code object") + c.TUPLE + c.REDUCE
        + c.EMPTY_DICT + c.TUPLE + c.REDUCE + c.EMPTY_TUPLE + c.REDUCE + c.STOP
    )  # fmt: skip
    names = {f.message.split("'")[1] for f in scan(data) if f.severity is Severity.CRITICAL}
    assert names == {"types.FunctionType", "marshal.loads"}
