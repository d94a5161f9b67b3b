"""The security policy: what the scanner allows, what it refuses, and the limits that keep a
scan bounded whatever the artifact.

A scan ``Failed`` when any finding's severity is at least ``threshold`` (``HIGH`` by default).

Severity mapping used by the pickle scanner:

- ``CRITICAL``: a global in ``pickle_dangerous_globals`` is imported (code execution, process
  or network access, nested loaders such as ``pickle.loads`` or ``torch.load``), whatever the
  opcode route (``GLOBAL``, ``STACK_GLOBAL``, ``INST``) and whatever alias hides it
  (``__builtin__``, ``posix``, a dotted attribute path, ``operator.attrgetter`` gadgets); an
  embedded pickle passed to a loader that is itself malicious.
- ``HIGH``: a global off the allow-list that the pickle *calls* (``REDUCE``, ``INST``,
  ``OBJ``, ``NEWOBJ``, ``NEWOBJ_EX``, or ``BUILD``, which runs the class's ``__setstate__``):
  the allow-list is the default stance, because a deny-list is always one gadget behind;
  ``BUILD`` on an imported object itself (it rewrites a class or a module-level object); a
  global in ``pickle_suspicious_globals`` (gadget builders such as ``functools.partial``,
  ``builtins.type``); a global name that is an attribute path (``collections`` +
  ``_sys.modules``) and is not allowed; a ``STACK_GLOBAL`` whose module or name cannot be
  resolved statically; a parse error after an import was seen; a limit exceeded
  (fail-closed).
- ``MEDIUM``: a global off the allow-list that is only referenced, never called (a class
  passed as a value).
- ``LOW``: a parse error before any import; data after the last pickle that is not a
  pickle (legacy ``torch.save`` storages); a name no module path spells (the import fails);
  a copyreg extension code (``EXT1/2/4``: copyreg's registry is empty unless the loading
  program fills it); TorchScript ``code/`` (inspected on its own); unexpected non-pickle
  members in a PyTorch zip (unexpected pickles and members outside its folder are MEDIUM,
  paths escaping it HIGH).

Matching rules: an entry of ``pickle_safe_globals`` matches exactly and wins over everything
(it is the most specific rule: ``torch.jit._pickle.build_intlist`` is allowed below the
dangerous ``torch.jit``). An entry of ``pickle_dangerous_globals`` or
``pickle_suspicious_globals`` matches itself and everything below it (``"os"`` matches
``os.system`` and ``os.path.join``; ``"torch.jit"`` matches ``torch.jit.load``), after
Python 2 names are mapped as the unpickler maps them (``__builtin__`` is ``builtins``) and for
every suffix of a dotted name (``posixpath`` + ``os.system`` is ``os.system``). Dangerous
entries win over ``pickle_safe_prefixes``, which match what a module defines at its top level
(never an attribute path below it), and those win over suspicious entries.

All four lists are fields of ``SecurityPolicy``: an operator allows their own classes with
``pickle_safe_prefixes`` (``{"mycompany.models."}``) or ``pickle_safe_globals``.
"""

from __future__ import annotations

from dataclasses import dataclass

from validators.report import Severity

GIB = 1024**3

_TORCH_STORAGES = (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
    "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
    "ComplexFloatStorage", "ComplexDoubleStorage", "QUInt8Storage", "QInt8Storage",
    "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage", "UntypedStorage", "TypedStorage",
    "Float8_e4m3fnStorage", "Float8_e5m2Storage",
)  # fmt: skip

_TORCH_REBUILDERS = (
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_sparse_tensor", "_rebuild_sparse_csr_tensor",
    "_rebuild_qtensor", "_rebuild_device_tensor_from_numpy", "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass", "_rebuild_nested_tensor", "_rebuild_xla_tensor",
    "_rebuild_mlc_tensor", "_rebuild_device_tensor_from_cpu_tensor",
)  # fmt: skip

_TORCH_DTYPES = (
    "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16",
    "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
    "long", "int", "short", "qint8", "quint8", "qint32", "float8_e4m3fn", "float8_e5m2",
    "Size", "device", "dtype", "layout", "memory_format", "strided", "sparse_coo",
    "contiguous_format", "channels_last", "preserve_format",
)  # fmt: skip

_NUMPY_CORES = ("numpy.core", "numpy._core")

_NUMPY_SCALARS = (
    "bool_", "float16", "float32", "float64", "longdouble", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "complex64", "complex128", "str_", "bytes_",
    "datetime64", "timedelta64", "intc", "uintc", "longlong", "ulonglong", "object_",
)  # fmt: skip

#: numpy's bit generators and their seed sequences, as a Generator or RandomState pickles them
_NUMPY_RANDOM = (
    "_mt19937.MT19937", "_pcg64.PCG64", "_pcg64.PCG64DXSM", "_philox.Philox", "_sfc64.SFC64",
    "bit_generator.SeedSequence", "bit_generator.__pyx_unpickle_SeedSequence",
    "_generator.Generator",
)  # fmt: skip

#: the model classes of gradient-boosting libraries (their ``__setstate__`` parses the
#: library's own model format)
_BOOSTERS = (
    "xgboost.core.Booster", "xgboost.sklearn.XGBModel", "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor", "xgboost.sklearn.XGBRanker",
    "xgboost.sklearn.XGBRFClassifier", "xgboost.sklearn.XGBRFRegressor",
    "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMModel", "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor", "lightgbm.sklearn.LGBMRanker",
)  # fmt: skip

#: what TorchScript writes in its pickles: list and tensor builders (below the dangerous
#: ``torch.jit``: an exact safe entry wins over a dangerous prefix)
_TORCHSCRIPT_BUILDERS = (
    "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist",
    "build_complexlist", "build_booltensor", "restore_type_tag",
)  # fmt: skip

DEFAULT_PICKLE_SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.complex",
        "builtins.slice",
        "builtins.range",
        "builtins.object",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "_codecs.encode",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.ma.core._mareconstruct",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random.mtrand.RandomState",
        *(f"numpy.{name}" for name in _NUMPY_SCALARS),
        *(f"numpy.random.{name}" for name in _NUMPY_RANDOM),
        *_BOOSTERS,
        *(f"torch.jit._pickle.{name}" for name in _TORCHSCRIPT_BUILDERS),
        *(f"{core}.multiarray._reconstruct" for core in _NUMPY_CORES),
        *(f"{core}.multiarray.scalar" for core in _NUMPY_CORES),
        *(f"{core}.numeric._frombuffer" for core in _NUMPY_CORES),
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.storage._StorageBase",
        "torch._tensor._rebuild_from_type",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Tensor",
        "torch._utils._get_restore_location",
        *(f"torch.{name}" for name in _TORCH_STORAGES),
        *(f"torch.cuda.{name}" for name in _TORCH_STORAGES),
        *(f"torch._utils.{name}" for name in _TORCH_REBUILDERS),
        *(f"torch.{name}" for name in _TORCH_DTYPES),
    }
)

#: Modules whose classes are allowed by prefix. They hold estimators and containers, not
#: loaders; the dangerous list still wins over these, and a prefix allows only what a module
#: defines at its top level (``sklearn.x.Estimator``), never an attribute path below it
#: (``sklearn.x.Estimator.method``). ``__torch__.`` names the classes of a TorchScript
#: archive's own code, which the TorchScript loader compiles (the plain unpickler finds no
#: such module); the code itself is inspected as such.
DEFAULT_PICKLE_SAFE_PREFIXES: frozenset[str] = frozenset(
    {
        "sklearn.",
        "numpy.dtypes.",
        "torch.nn.modules.",
        "torch.optim.",
        "__torch__.",
        "scipy.sparse._csr.",
        "scipy.sparse._csc.",
        "scipy.sparse._coo.",
        "scipy.sparse.csr.",
        "scipy.sparse.csc.",
        "scipy.sparse.coo.",
    }
)

DEFAULT_PICKLE_DANGEROUS_GLOBALS: frozenset[str] = frozenset(
    {
        # processes, shells and the OS
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "shutil", "signal",
        "platform.popen", "asyncio", "_winapi", "msvcrt", "winreg", "_osx_support",
        "_aix_support", "uuid._get_command_stdout", "uuid._popen", "pydoc.pipepager",
        "pydoc.tempfilepager", "pydoc.pager", "pydoc.locate", "commands", "popen2",
        "_pyrepl", "mailcap", "pexpect", "ptyprocess", "sh", "plumbum", "fabric", "invoke",
        "paramiko",
        # running code
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__",
        "builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.open",
        "builtins.breakpoint", "builtins.input", "builtins.globals", "builtins.locals",
        "builtins.vars", "builtins.execfile", "builtins.apply", "builtins.file",
        "builtins.reload", "builtins.__loader__", "builtins.__builtins__", "builtins.help",
        "builtins.exit", "builtins.quit",
        "runpy", "code", "codeop", "importlib", "imp", "zipimport", "pkgutil", "sys",
        "_frozen_importlib", "_frozen_importlib_external", "_imp",
        "ctypes", "_ctypes", "marshal", "types.FunctionType", "types.CodeType",
        "types.MethodType", "types.LambdaType", "types.ModuleType", "timeit", "cProfile",
        "profile", "pdb", "bdb", "trace", "doctest", "idlelib", "lib2to3", "test",
        "logging.config", "site", "_sitebuiltins", "gc", "atexit", "_thread", "threading",
        "multiprocessing", "concurrent", "_io", "io.open", "io.FileIO", "_pyio", "fileinput",
        "linecache", "tkinter", "turtle",
        # gadget builders that reach any attribute or call
        "operator.attrgetter", "operator.methodcaller", "operator.itemgetter",
        "_operator.attrgetter", "_operator.methodcaller", "_operator.itemgetter",
        "operator.call", "_operator.call",
        # nested loaders
        "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib.load",
        "joblib.externals", "joblib._store_backends", "joblib.memory", "joblib.parallel",
        "torch.utils.data.datapipes.utils.decoder", "torch.utils.data._utils.worker",
        "torch._jit_internal",
        "joblib.numpy_pickle.load", "shelve", "copyreg.add_extension",
        "torch.load", "torch.serialization", "torch.storage._load_from_bytes", "torch.hub",
        "torch.jit", "torch._C", "torch.package", "torch.utils.cpp_extension",
        "torch.utils.collect_env", "torch.utils.bottleneck", "torch._inductor", "torch._dynamo",
        "torch.distributed",
        "torch.testing", "torch.ops", "torch._ops", "torch.fx", "torch.compile",
        "numpy.load", "numpy.loadtxt", "numpy.fromfile", "numpy.save", "numpy.savetxt",
        "numpy.lib.npyio", "numpy.testing", "numpy.f2py", "numpy.distutils",
        "numpy.ctypeslib",
        # inside the allowed ``sklearn.`` prefix: test helpers that run code, downloaders,
        # vendored loaders
        "sklearn.utils._testing", "sklearn.datasets", "sklearn.externals",
        "sklearn.utils._show_versions", "sklearn.utils._joblib",
        # network
        "socket", "_socket", "ssl", "http", "httplib", "urllib", "urllib2", "urllib3",
        "requests", "aiohttp", "httpx", "ftplib", "telnetlib", "smtplib", "poplib",
        "imaplib", "nntplib", "xmlrpc", "socketserver", "webbrowser", "select", "selectors",
        # packaging and environments
        "pip", "setuptools", "distutils", "venv", "ensurepip", "sysconfig",
    }
)  # fmt: skip

DEFAULT_PICKLE_SUSPICIOUS_GLOBALS: frozenset[str] = frozenset(
    {
        "functools.partial", "functools.reduce", "functools.partialmethod", "_functools",
        "builtins.type", "builtins.super", "builtins.classmethod", "builtins.staticmethod",
        "builtins.property", "builtins.map", "builtins.filter", "builtins.iter",
        "builtins.next", "builtins.memoryview", "builtins.print", "builtins.dir",
        "builtins.hasattr", "builtins.isinstance", "builtins.id", "builtins.hash",
        "operator", "_operator", "copyreg", "copy", "tempfile", "glob", "pathlib.Path",
        "inspect", "weakref", "ast", "dis", "string.Formatter", "types", "abc",
        "collections.namedtuple", "itertools", "contextlib", "traceback", "warnings",
        "logging", "platform", "uuid", "pydoc", "zipfile", "tarfile", "gzip", "bz2", "lzma",
        "zlib", "base64", "codecs", "_codecs", "struct", "mmap", "builtins",
    }
)  # fmt: skip

DEFAULT_ONNX_ALLOWED_DOMAINS: frozenset[str] = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}
)


@dataclass(frozen=True)
class SecurityPolicy:
    """What a scan allows and the limits that bound it. Field names are stable: the pickle,
    ONNX, safetensors and archive scanners all read them."""

    #: a scan is ``Failed`` when any finding has at least this severity
    threshold: Severity = Severity.HIGH

    pickle_safe_globals: frozenset[str] = DEFAULT_PICKLE_SAFE_GLOBALS
    pickle_safe_prefixes: frozenset[str] = DEFAULT_PICKLE_SAFE_PREFIXES
    pickle_dangerous_globals: frozenset[str] = DEFAULT_PICKLE_DANGEROUS_GLOBALS
    pickle_suspicious_globals: frozenset[str] = DEFAULT_PICKLE_SUSPICIOUS_GLOBALS
    #: opcodes emulated per pickle stream (all concatenated pickles together)
    pickle_max_opcodes: int = 50_000_000
    #: memo entries and stack depth kept during emulation
    pickle_max_memo: int = 4_000_000
    pickle_max_stack: int = 1_000_000
    #: embedded pickles (``pickle.loads(b"...")`` arguments) are scanned to this depth
    pickle_max_nesting: int = 3
    #: bytes held in memory for one constant (larger blobs are skipped, not read)
    pickle_max_inline_bytes: int = 1024 * 1024

    max_file_bytes: int = 50 * GIB
    max_model_bytes: int = 50 * GIB
    max_archive_depth: int = 3
    max_archive_members: int = 10_000
    #: the sum of the sizes an archive declares for its members
    max_declared_bytes: int = 50 * GIB
    max_compression_ratio: float = 200.0
    #: members (and compressed tars) smaller than this are not held to the ratio: tiny files
    #: compress well, and a bomb needs size to hurt
    compression_ratio_floor_bytes: int = 1024 * 1024
    max_tensor_elements: int = 10**10

    onnx_allowed_domains: frozenset[str] = DEFAULT_ONNX_ALLOWED_DOMAINS
    allow_com_microsoft: bool = False

    def fails(self, severity: Severity) -> bool:
        """Whether a finding of this severity fails the scan."""
        return severity >= self.threshold


DEFAULT_POLICY = SecurityPolicy()
