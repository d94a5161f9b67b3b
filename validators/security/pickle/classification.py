"""Which globals and calls are dangerous: the severity of an import, its rule id and message.

Every import is classified by the ``SecurityPolicy`` (see ``validators.security.policy`` for
the severity mapping), under every spelling the unpickler could resolve it to: NFKC-folded,
through ``_compat_pickle``'s Python 2 names, and as an attribute path below the module.
"""

from __future__ import annotations

import _compat_pickle
import re
import unicodedata

from validators.report import Severity
from validators.security.pickle.values import Call, Global
from validators.security.policy import SecurityPolicy

_MAX_NAME = 4096

#: globals whose first argument, when it is a constant, is itself a pickle to scan
LOADERS = frozenset(
    {
        "pickle.loads", "pickle.load", "pickle._loads", "pickle._load", "_pickle.loads",
        "_pickle.load", "dill.loads", "dill.load", "cloudpickle.loads", "cloudpickle.load",
        "numpy.loads", "torch.load", "torch.serialization.load", "joblib.load",
        "joblib.numpy_pickle.load", "pickle.Unpickler", "_pickle.Unpickler",
        "torch.utils.data.datapipes.utils.decoder.basichandlers",
        "joblib.externals.cloudpickle.loads", "joblib.externals.cloudpickle.load",
    }
)  # fmt: skip
#: loaders whose pickle is not their first argument, by the argument's index
#: (``basichandlers(extension, data)`` unpickles ``data`` when the extension says pickle)
LOADER_ARGUMENT = {"torch.utils.data.datapipes.utils.decoder.basichandlers": 1}
BYTES_IO = frozenset({"io.BytesIO", "_io.BytesIO"})
#: allowed callables that make an instance of the class they are given as first argument
RECONSTRUCTORS = frozenset(
    {"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"}
)
JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
#: how a module or a name is spelled (what a pickle's first opcodes must import to be one)
IDENTIFIER = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*\Z")


def _matches(qualified: str, entries: frozenset[str]) -> bool:
    """Whether ``module.name`` falls under an entry: the entry itself or anything below it."""
    if qualified in entries:
        return True
    dot = qualified.rfind(".")
    while dot > 0:
        prefix = qualified[:dot]
        if prefix in entries or prefix + ".*" in entries:
            return True
        dot = qualified.rfind(".", 0, dot)
    return False


def _candidate_names(module: str, name: str) -> list[str]:
    """Every ``module.name`` spelling the unpickler could resolve these strings to."""
    pairs = {(module, name)}
    for mod, nam in list(pairs):
        cleaned = (
            unicodedata.normalize("NFKC", mod).strip(),
            unicodedata.normalize("NFKC", nam).strip(),
        )
        pairs.add(cleaned)
    for mod, nam in list(pairs):
        if (mod, nam) in _compat_pickle.NAME_MAPPING:
            pairs.add(_compat_pickle.NAME_MAPPING[(mod, nam)])
        if mod in _compat_pickle.IMPORT_MAPPING:
            pairs.add((_compat_pickle.IMPORT_MAPPING[mod], nam))
    names: list[str] = []
    for mod, nam in pairs:
        names.append(f"{mod}.{nam}")
        parts = nam.split(".")
        # a dotted name is an attribute path: ``posixpath`` + ``os.system`` is os.system
        names.extend(".".join(parts[i:]) for i in range(len(parts) - 1))
    return names


def classify_global(module: str, name: str, *, policy: SecurityPolicy) -> Severity | None:
    """The severity of importing ``module.name``; ``None`` when the policy allows it."""
    if len(module) + len(name) > _MAX_NAME:
        # no importable name is this long: judge the module alone, and refuse the rest
        if len(module) <= _MAX_NAME and _matches(
            module.strip() + ".", policy.pickle_dangerous_globals
        ):
            return Severity.CRITICAL
        return Severity.HIGH
    qualified = f"{module}.{name}"
    normal = normalise(module, name)
    if qualified in policy.pickle_safe_globals or normal in policy.pickle_safe_globals:
        return None  # an exact entry is the most specific rule there is
    candidates = _candidate_names(module, name)
    if any(_matches(c, policy.pickle_dangerous_globals) for c in candidates):
        return Severity.CRITICAL
    if any(p.startswith("__") and p.endswith("__") for p in name.split(".")) and name not in (
        "__newobj__",
        "__newobj_ex__",
        "__randomstate_ctor",
        "__bit_generator_ctor",
        "__generator_ctor",
    ):
        return Severity.CRITICAL
    if "." not in name:
        for spelled in (qualified, normal):
            if any(spelled.startswith(p) for p in policy.pickle_safe_prefixes):
                return None
    if any(_matches(c, policy.pickle_suspicious_globals) for c in candidates):
        return Severity.HIGH
    if "." in name.strip():
        # an attribute path reaches through whatever the module imported (``_sys.modules``)
        return Severity.HIGH
    return Severity.MEDIUM


def normalise(module: str, name: str) -> str:
    """``module.name`` as Python 3 spells it (``__builtin__.eval`` is ``builtins.eval``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def rule_of(severity: Severity) -> tuple[str, str]:
    """The rule id of importing a global of this severity, and what the message calls it."""
    if severity >= Severity.CRITICAL:
        return "pickle.dangerous-global", "dangerous global"
    if severity >= Severity.HIGH:
        return "pickle.suspicious-global", "suspicious global"
    return "pickle.unknown-global", "global not in the allowlist"


def shorten(text: str, limit: int = 200) -> str:
    """Names in messages are cut: a finding must not carry a megabyte of attacker text."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def describe(value: object) -> str:
    """How a message names a value that should have been a module or a name."""
    if isinstance(value, str):
        return value
    if isinstance(value, Global):
        return f"<{value.qualified}>"
    if isinstance(value, Call) and isinstance(value.func, Global):
        return f"<result of {value.func.qualified}>"
    return "<computed>"
