"""A labelled corpus of pickles, built in code. Nothing here is ever unpickled.

Malicious pickles are assembled opcode by opcode (or produced by ``pickle.dumps`` of an
object whose ``__reduce__`` names a dangerous callable: dumping does not call it). Benign
pickles come from ``pickle.dumps`` / ``joblib.dump`` of harmless objects, or are assembled the
way PyTorch writes ``data.pkl``.
"""

from __future__ import annotations

import collections
import datetime
import io
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

from validators.report import Finding, Severity
from validators.security.pickle import scan_pickle
from validators.security.policy import DEFAULT_POLICY

# -- a tiny opcode assembler ------------------------------------------------------------------

MARK = b"("
STOP = b"."
POP = b"0"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
OBJ = b"o"
STACK_GLOBAL = b"\x93"
MEMOIZE = b"\x94"
SETITEM = b"s"
SETITEMS = b"u"
NONE = b"N"
NEWFALSE = b"\x89"
BINPERSID = b"Q"


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def glob(module: str, name: str) -> bytes:
    """GLOBAL: the protocol-0 text form ``c<module>\\n<name>\\n``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def inst(module: str, name: str) -> bytes:
    return b"i" + module.encode() + b"\n" + name.encode() + b"\n"


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def binunicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def binunicode8(text: str) -> bytes:
    data = text.encode()
    return b"\x8d" + struct.pack("<Q", len(data)) + data


def unicode0(text: str) -> bytes:
    """UNICODE: protocol 0, raw-unicode-escape text to a newline."""
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def string0(text: str) -> bytes:
    """STRING: protocol 0, a quoted repr."""
    return b"S" + repr(text).encode() + b"\n"


def short_binstring(text: str) -> bytes:
    data = text.encode()
    return b"U" + bytes([len(data)]) + data


def binstring(text: str) -> bytes:
    data = text.encode()
    return b"T" + struct.pack("<i", len(data)) + data


def short_binbytes(data: bytes) -> bytes:
    return b"C" + bytes([len(data)]) + data


def binbytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def binint1(n: int) -> bytes:
    return b"K" + bytes([n])


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def long_binput(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def long_binget(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def put0(i: int) -> bytes:
    return b"p" + str(i).encode() + b"\n"


def get0(i: int) -> bytes:
    return b"g" + str(i).encode() + b"\n"


def call_global(module: str, name: str, arg: str = "echo pwned", *, protocol: int = 0) -> bytes:
    """``module.name(arg)`` through GLOBAL and REDUCE."""
    head = proto(protocol) if protocol >= 2 else b""
    return head + glob(module, name) + MARK + string0(arg) + TUPLE + REDUCE + STOP


def stack_global_call(module: str, name: str, arg: str = "echo pwned") -> bytes:
    """``module.name(arg)`` through STACK_GLOBAL (protocol 4)."""
    return proto(4) + sbu(module) + sbu(name) + STACK_GLOBAL + sbu(arg) + TUPLE1 + REDUCE + STOP


class _Reduces:
    """Pickling this names ``func`` in the stream; dumping never calls it."""

    def __init__(self, func: object, *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.func, self.args)


def dumps_reduce(func: object, *args: object, protocol: int) -> bytes:
    return pickle.dumps(_Reduces(func, *args), protocol=protocol)


# -- corpus entries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    id: str
    data: bytes
    #: the least severity the scan must report; None for a benign sample (no finding at all)
    expect: Severity | None
    #: a fragment the message of some finding at or above ``expect`` must contain
    names: str = ""


def malicious_samples() -> list[Sample]:
    s: list[Sample] = []
    crit = Severity.CRITICAL

    def add(id_: str, data: bytes, names: str = "", expect: Severity = crit) -> None:
        s.append(Sample(id_, data, expect, names))

    # protocols 0-5 as pickle writes them
    for p in range(6):
        add(
            f"os-system-dumps-proto{p}", dumps_reduce(os.system, "echo pwned", protocol=p), "system"
        )
    # each opcode route
    add("global-reduce-proto0", call_global("os", "system"), "os.system")
    add("global-reduce-proto2", call_global("subprocess", "check_output", protocol=2), "subprocess")
    add("stack-global-reduce", stack_global_call("os", "system"), "os.system")
    add(
        "stack-global-binunicode",
        proto(4) + binunicode("os") + binunicode("system") + STACK_GLOBAL + sbu("id") + TUPLE1
        + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "stack-global-binunicode8",
        proto(4) + binunicode8("os") + binunicode8("system") + STACK_GLOBAL + sbu("id")
        + TUPLE1 + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "stack-global-unicode-text",
        proto(4) + unicode0("os") + unicode0("system") + STACK_GLOBAL + sbu("id") + TUPLE1
        + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "stack-global-string-text",
        proto(4) + string0("os") + string0("system") + STACK_GLOBAL + sbu("id") + TUPLE1
        + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "stack-global-binstrings",
        proto(4) + short_binstring("os") + binstring("system") + STACK_GLOBAL + sbu("id")
        + TUPLE1 + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "stack-global-via-memo",
        proto(4) + sbu("os") + binput(0) + POP + sbu("system") + binput(1) + POP
        + binget(0) + binget(1) + STACK_GLOBAL + sbu("id") + TUPLE1 + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "stack-global-via-long-memo",
        proto(4) + sbu("posix") + long_binput(7) + POP + sbu("system") + MEMOIZE + POP
        + long_binget(7) + long_binget(1) + STACK_GLOBAL + sbu("id") + TUPLE1 + REDUCE + STOP,
        "posix.system",
    )  # fmt: skip
    add(
        "stack-global-via-text-memo",
        proto(4) + string0("nt") + put0(3) + POP + string0("system") + put0(4) + POP
        + get0(3) + get0(4) + STACK_GLOBAL + sbu("id") + TUPLE1 + REDUCE + STOP,
        "nt.system",
    )  # fmt: skip
    add(
        "stack-global-names-built-elsewhere",
        # the strings sit in the memo long before, inside an unrelated dict
        proto(4) + EMPTY_DICT + MARK + sbu("a") + sbu("subprocess") + MEMOIZE + sbu("b")
        + sbu("getoutput") + MEMOIZE + SETITEMS + POP + binget(0) + binget(1) + STACK_GLOBAL
        + sbu("id") + TUPLE1 + REDUCE + STOP,
        "subprocess.getoutput",
    )  # fmt: skip
    add("inst-proto0", MARK + string0("echo pwned") + inst("os", "system") + STOP, "os.system")
    add("obj-proto1", MARK + glob("os", "system") + string0("id") + OBJ + STOP, "os.system")
    add(
        "newobj-proto2",
        proto(2) + glob("subprocess", "Popen") + MARK + string0("id") + TUPLE + TUPLE1
        + NEWOBJ + STOP,
        "subprocess.Popen",
    )  # fmt: skip
    add(
        "newobj-ex-proto4",
        proto(4) + sbu("subprocess") + sbu("Popen") + STACK_GLOBAL + sbu("id") + TUPLE1
        + EMPTY_DICT + NEWOBJ_EX + STOP,
        "subprocess.Popen",
    )  # fmt: skip
    add(
        "build-setstate-gadget",
        # BUILD sets an instance attribute __setstate__ = os.system; a second BUILD calls it
        proto(2) + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
        + NONE + EMPTY_DICT + sbu("__setstate__") + glob("os", "system") + SETITEM + TUPLE2
        + BUILD + string0("echo pwned") + BUILD + STOP,
        "os.system",
    )  # fmt: skip
    add(
        "global-hidden-in-memo",
        proto(2) + glob("os", "system") + binput(5) + POP + NONE + POP + binget(5)
        + MARK + string0("id") + TUPLE + REDUCE + STOP,
        "os.system",
    )  # fmt: skip
    # aliases and spellings
    add("builtin-py2-spelling", call_global("__builtin__", "eval", "1"), "eval")
    add("builtins-exec", call_global("builtins", "exec", "1"), "builtins.exec")
    add("posix-system", call_global("posix", "system"), "posix.system")
    add("nt-system", call_global("nt", "system"), "nt.system")
    add("os-path-submodule", call_global("os.path", "exists"), "os.path")
    add("module-trailing-space", call_global("os ", "system"), "system")
    add("dotted-name-traversal", stack_global_call("posixpath", "os.system"), "os.system")
    add(
        "dunder-traversal",
        stack_global_call("collections", "OrderedDict.__init__.__globals__"),
        "__globals__",
    )
    add(
        "getattr-import-nesting",
        # getattr(__import__("os"), "system")("id")
        proto(2) + glob("builtins", "getattr") + MARK + glob("builtins", "__import__")
        + MARK + string0("os") + TUPLE + REDUCE + string0("system") + TUPLE + REDUCE
        + MARK + string0("id") + TUPLE + REDUCE + STOP,
        "getattr",
    )  # fmt: skip
    add(
        "operator-attrgetter",
        proto(2) + glob("operator", "attrgetter") + MARK + string0("system") + TUPLE + REDUCE
        + MARK + glob("importlib", "import_module") + MARK + string0("os") + TUPLE + REDUCE
        + TUPLE + REDUCE + STOP,
        "attrgetter",
    )  # fmt: skip
    add("functools-partial", call_global("functools", "partial"), "partial", Severity.HIGH)
    add("numpy-runstring", call_global("numpy.testing._private.utils", "runstring"), "runstring")
    add("torch-load", call_global("torch", "load", "/tmp/evil.pt"), "torch.load")
    add("torch-serialization-load", call_global("torch.serialization", "load"), "torch")
    add("torch-load-from-bytes", call_global("torch.storage", "_load_from_bytes"), "torch")
    add("numpy-load", call_global("numpy", "load", "/tmp/evil.npy"), "numpy.load")
    evil = dumps_reduce(os.system, "echo inner", protocol=2)
    add(
        "embedded-pickle-loads",
        proto(4) + sbu("_pickle") + sbu("loads") + STACK_GLOBAL
        + b"C" + bytes([len(evil)]) + evil + TUPLE1 + REDUCE + STOP,
        "embedded",
    )  # fmt: skip
    add(
        "embedded-pickle-load-bytesio",
        proto(2) + glob("pickle", "load") + MARK + glob("io", "BytesIO") + MARK
        + short_binbytes(evil) + TUPLE + REDUCE + TUPLE + REDUCE + STOP,
        "posix.system",
    )  # fmt: skip
    add(
        "copyreg-reconstructor-chain",
        proto(2) + glob("copyreg", "_reconstructor") + MARK + glob("subprocess", "Popen")
        + glob("builtins", "object") + NONE + TUPLE + REDUCE + STOP,
        "subprocess.Popen",
    )  # fmt: skip
    # concatenation and trailing payloads
    add("concatenated-pickles", pickle.dumps([1, 2]) + call_global("os", "system"), "os.system")
    add(
        "concatenated-after-array",
        pickle.dumps(np.arange(100), protocol=5) + stack_global_call("runpy", "run_path"),
        "runpy",
    )
    add(
        "payload-after-joblib-array",
        joblib_bytes() + stack_global_call("os", "system"),
        "os.system",
    )
    add(
        "payload-after-joblib-object-array",
        joblib_bytes(with_objects=True) + call_global("pty", "spawn", protocol=2),
        "pty.spawn",
    )
    add("payload-in-joblib-array-bytes", joblib_hiding_payload(), "os.system")
    # broken pickles
    add(
        "parse-error-after-unknown-import",
        proto(2) + glob("evilpkg.payload", "run") + MARK + string0("x") + TUPLE + REDUCE
        + b"\xff\xff",
        "invalid",
        Severity.HIGH,
    )  # fmt: skip
    add(
        "truncated-after-dangerous-import",
        call_global("os", "system")[:-1],
        "os.system",
    )
    add("unresolved-stack-global", _unresolved_stack_global(), "computed", Severity.HIGH)
    # dangerous modules of all sorts
    for module, name in DANGEROUS_CALLABLES:
        add(f"dangerous-{module}.{name}", call_global(module, name, protocol=2), f"{module}.{name}")
    return s


#: callables that run code, spawn processes, touch the network or install packages
DANGEROUS_CALLABLES: tuple[tuple[str, str], ...] = (
    ("subprocess", "run"),
    ("_posixsubprocess", "fork_exec"),
    ("pty", "spawn"),
    ("runpy", "_run_code"),
    ("runpy", "run_module"),
    ("code", "InteractiveInterpreter"),
    ("codeop", "compile_command"),
    ("webbrowser", "open"),
    ("socket", "create_connection"),
    ("shutil", "rmtree"),
    ("importlib", "import_module"),
    ("sys", "modules"),
    ("ctypes", "CDLL"),
    ("marshal", "loads"),
    ("types", "FunctionType"),
    ("types", "CodeType"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("dill", "loads"),
    ("platform", "popen"),
    ("asyncio.subprocess", "create_subprocess_shell"),
    ("asyncio.unix_events", "_UnixSubprocessTransport"),
    ("multiprocessing.util", "spawnv_passfds"),
    ("http.client", "HTTPSConnection"),
    ("urllib.request", "urlopen"),
    ("requests.api", "get"),
    ("ftplib", "FTP"),
    ("telnetlib", "Telnet"),
    ("smtplib", "SMTP"),
    ("pip", "main"),
    ("pip._internal.cli.main", "main"),
    ("setuptools.sandbox", "run_setup"),
    ("distutils.spawn", "spawn"),
    ("venv", "create"),
    ("ensurepip", "bootstrap"),
    ("zipimport", "zipimporter"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("builtins", "breakpoint"),
    ("builtins", "setattr"),
    ("__builtin__", "execfile"),
    ("timeit", "timeit"),
    ("cProfile", "run"),
    ("profile", "run"),
    ("pdb", "run"),
    ("bdb", "Bdb"),
    ("trace", "Trace"),
    ("doctest", "debug_script"),
    ("pydoc", "pipepager"),
    ("uuid", "_get_command_stdout"),
    ("_osx_support", "_read_output"),
    ("_aix_support", "_read_cmd_output"),
    ("idlelib.pyshell", "ModifiedInterpreter"),
    ("lib2to3.pgen2.pgen", "generate_grammar"),
    ("test.support.script_helper", "assert_python_ok"),
    ("logging.config", "listen"),
    ("torch.utils.collect_env", "run"),
    ("torch._inductor.codecache", "compile_file"),
    ("torch.jit", "load"),
    ("torch.hub", "load"),
    ("numpy.f2py", "compile"),
    ("operator", "methodcaller"),
    ("_operator", "attrgetter"),
    ("cloudpickle", "loads"),
    ("commands", "getoutput"),
    ("os", "popen"),
    ("os", "execv"),
    ("posix", "posix_spawn"),
)


def _unresolved_stack_global() -> bytes:
    """STACK_GLOBAL whose module name is the result of a call (``str(b"os", "ascii")``)."""
    return (
        proto(4) + sbu("builtins") + sbu("str") + STACK_GLOBAL + short_binbytes(b"os")
        + sbu("ascii") + TUPLE2 + REDUCE + sbu("system") + STACK_GLOBAL + sbu("id") + TUPLE1
        + REDUCE + STOP
    )  # fmt: skip


def joblib_hiding_payload(*, filler: int = 0) -> bytes:
    """A joblib array wrapper whose "array bytes" are opcodes: joblib.load skips them as data,
    but plain ``pickle.load`` runs them. ``filler`` bytes of padding come first."""
    payload = POP + glob("os", "system") + MARK + string0("id") + TUPLE + REDUCE + STOP
    if filler:
        payload = binbytes(bytes(filler)) + POP + payload
    dtype = (
        sbu("numpy") + sbu("dtype") + STACK_GLOBAL + sbu("u1") + NEWFALSE + b"\x88"
        + b"\x87" + REDUCE + MARK + binint1(3) + sbu("|") + NONE + NONE + NONE
        + b"J\xff\xff\xff\xff" + b"J\xff\xff\xff\xff" + binint1(0) + TUPLE + BUILD
    )  # fmt: skip
    state = (
        EMPTY_DICT + MARK + sbu("shape") + b"J" + struct.pack("<i", len(payload)) + TUPLE1
        + sbu("order")
        + sbu("C") + sbu("dtype") + dtype + sbu("allow_mmap") + NEWFALSE + SETITEMS
    )  # fmt: skip
    wrapper = (
        proto(4) + sbu("joblib.numpy_pickle") + sbu("NumpyArrayWrapper") + STACK_GLOBAL
        + EMPTY_TUPLE + NEWOBJ + state + BUILD
    )  # fmt: skip
    return wrapper + payload + STOP


def joblib_bytes(*, with_objects: bool = False) -> bytes:
    """What ``joblib.dump`` writes for a dict of arrays (raw array bytes inline)."""
    import joblib

    value: dict[str, object] = {
        "weights": np.arange(1000, dtype=np.float64).reshape(10, 100),
        "bias": np.ones(3, dtype=np.float32),
        "labels": np.array(["cat", "dog"], dtype="<U5"),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "scalar": np.float64(1.5),
    }
    if with_objects:
        value["objects"] = np.array(["a", None, 3], dtype=object)
    out = io.BytesIO()
    joblib.dump(value, out)
    return out.getvalue()


def torch_state_dict_bytes() -> bytes:
    """``data.pkl`` as ``torch.save(model.state_dict())`` writes it (protocol 2): an
    OrderedDict of tensors rebuilt by ``torch._utils._rebuild_tensor_v2`` from persistent ids,
    with the ``_metadata`` attribute set by BUILD."""

    def tensor(key: str, shape: tuple[int, ...], memo: int) -> bytes:
        storage_id = MARK + string0("storage") + glob("torch", "FloatStorage") + string0(key)
        storage_id += string0("cpu") + binint1(max(1, int(np.prod(shape)))) + TUPLE
        size = MARK + b"".join(binint1(n) for n in shape) + TUPLE
        stride = MARK + b"".join(binint1(1) for _ in shape) + TUPLE
        return (
            glob("torch._utils", "_rebuild_tensor_v2") + binput(memo) + MARK + storage_id
            + BINPERSID + binint1(0) + size + stride + NEWFALSE
            + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + TUPLE + REDUCE
        )  # fmt: skip

    body = proto(2) + glob("collections", "OrderedDict") + binput(0) + EMPTY_TUPLE + REDUCE
    body += binput(1) + MARK
    body += binunicode("fc.weight") + tensor("0", (4, 3), 2)
    body += binunicode("fc.bias") + tensor("1", (4,), 3)
    body += SETITEMS
    metadata = (
        glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + binunicode("")
        + EMPTY_DICT + binunicode("version") + binint1(1) + SETITEM + SETITEM
    )  # fmt: skip
    body += EMPTY_DICT + binunicode("_metadata") + metadata + SETITEM + BUILD + STOP
    return body


def benign_samples() -> list[Sample]:
    data = {
        "ints": [0, 1, -1, 255, 65535, 2**31 - 1, -(2**31), 2**70],
        "floats": [0.0, 1.5, float("inf")],
        "text": ["", "héllo", "x" * 300],
        "bytes": [b"", b"\x00\xff", bytes(300)],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        "nested": {"a": {"b": [None, True, False]}},
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "complex": 1 + 2j,
        "bytearray": bytearray(b"ab"),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "ordered": collections.OrderedDict(a=1),
    }
    shared = ["shared"]
    data["aliases"] = [shared, shared]
    s: list[Sample] = []
    for p in range(6):
        s.append(Sample(f"plain-data-proto{p}", pickle.dumps(data, protocol=p), None))
        s.append(Sample(f"numpy-arange-proto{p}", pickle.dumps(np.arange(10), protocol=p), None))
        s.append(
            Sample(
                f"numpy-mixed-proto{p}",
                pickle.dumps(
                    {
                        "f": np.linspace(0, 1, 7).astype(np.float32),
                        "s": np.float64(2.5),
                        "i": np.int64(3),
                        "u": np.array(["ab", "c"]),
                        "o": np.array([1, "x", None], dtype=object),
                        "rec": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
                        "dt": np.dtype("float16"),
                    },
                    protocol=p,
                ),
                None,
            )
        )
    s.append(Sample("torch-state-dict", torch_state_dict_bytes(), None))
    s.append(Sample("torch-state-dict-twice", torch_state_dict_bytes() * 2, None))
    s.append(Sample("joblib-arrays", joblib_bytes(), None))
    s.append(Sample("joblib-object-array", joblib_bytes(with_objects=True), None))
    s.extend(sklearn_samples())
    return s


def sklearn_samples() -> list[Sample]:
    """A fitted estimator pickled and joblib-dumped; empty if scikit-learn is missing."""
    try:
        import joblib
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:  # pragma: no cover - scikit-learn is a test extra
        return []
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.array([0, 1] * 10)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    tree = DecisionTreeClassifier(max_depth=3).fit(x, y)
    out = []
    for p in (2, 4, 5):
        out.append(
            Sample(f"sklearn-pipeline-pickle-proto{p}", pickle.dumps(model, protocol=p), None)
        )
    out.append(Sample("sklearn-tree-pickle", pickle.dumps(tree), None))
    for name, value in (("pipeline", model), ("tree", tree)):
        buffer = io.BytesIO()
        joblib.dump(value, buffer)
        out.append(Sample(f"sklearn-{name}-joblib", buffer.getvalue(), None))
    return out


def scan(data: bytes) -> list[Finding]:
    """Scan ``data`` as one pickle file with the default policy."""
    return scan_pickle(io.BytesIO(data), location="model.bin", policy=DEFAULT_POLICY)


def worst(findings: list[Finding]) -> Severity:
    """The highest severity among ``findings`` (LOW when there is none)."""
    return max((f.severity for f in findings), default=Severity.LOW)
