"""TorchScript code: what a ``torch.jit.save`` archive's ``code/`` actually calls.

TorchScript is not malicious by itself. ``torch.jit.load`` compiles the archive's code as
TorchScript, a subset of Python that reaches only TorchScript builtins and registered
operators (``torch.*``, ``ops.<namespace>.*``): no imports, no ``eval``, no files. What is
dangerous is an operator that touches the outside world, and code that is not TorchScript at
all (a loader that accepted it would be running Python). The source is parsed with ``ast``,
which never executes anything, and every dotted name it uses is checked:

- ``HIGH`` ``torchscript.file-access``: an operator that reads or writes files
  (``torch.from_file``, ``ops.aten.from_file``, ``torch.load``/``torch.save``, ...);
- ``HIGH`` ``torchscript.python-escape``: what no TorchScript program can use and only Python
  has: an import, a call of ``eval``, ``exec``, ``__import__``, ``open`` and the like, or a
  reach into ``os``, ``subprocess``, ``sys`` and the like;
- ``MEDIUM`` ``torchscript.custom-op``: an operator outside PyTorch's own namespaces
  (``ops.mylib.run``): its code lives in a native library the archive does not contain;
- ``HIGH`` ``torchscript.malformed``: code that does not parse (no loader compiles it), or a
  file over the size limit (``limit.torchscript_code``).

Locations are ``{location}#line:{n}``. Repeats of one name are counted in one finding.
"""

from __future__ import annotations

import ast

from validators.report import Finding, Severity

#: bytes of one code file read (a real file is a few kB)
MAX_CODE_BYTES = 16 * 1024 * 1024

#: operators that read or write files, by every spelling TorchScript code may use
FILE_OPERATORS = frozenset(
    {
        "torch.from_file", "ops.aten.from_file", "torch.ops.aten.from_file",
        "torch.load", "torch.save", "torch.jit.load", "torch.jit.save",
        "ops.aten.save", "ops.aten._load", "torch.ops.aten.save",
        "torch.classes.load_library", "torch.ops.load_library", "ops.load_library",
    }
)  # fmt: skip

#: Python-only builtins (when called) and modules (when reached into): a TorchScript program
#: can use neither
PYTHON_BUILTINS = frozenset(
    {
        "eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars",
        "breakpoint", "input", "exit", "quit", "help", "memoryview", "setattr", "delattr",
    }
)  # fmt: skip
PYTHON_MODULES = frozenset(
    {
        "os", "sys", "subprocess", "builtins", "importlib", "socket", "shutil", "pathlib",
        "io", "pickle", "marshal", "ctypes", "runpy", "posix", "nt", "pty", "signal",
        "urllib", "http", "requests",
    }
)  # fmt: skip

#: operator namespaces PyTorch itself defines
TORCH_NAMESPACES = frozenset(
    {
        "aten", "prim", "quantized", "_quantized", "prepacked", "quantized_decomposed",
        "_caffe2", "profiler", "cuda", "mkldnn", "mkldnn_prepacked", "onednn", "xnnpack",
        "vulkan_prepack", "_test", "rngprims", "higher_order", "inductor", "_c10d_functional",
        "c10d", "fbgemm",
    }
)  # fmt: skip


def scan_torchscript_code(source: bytes, *, location: str) -> list[Finding]:
    """Findings for one TorchScript code file (``code/**/*.py`` of a ``torch.jit.save``
    archive). Never raises on hostile input."""
    if len(source) > MAX_CODE_BYTES:
        return [
            Finding(
                Severity.HIGH,
                "limit.torchscript_code",
                f"code file of {len(source)} bytes is over the limit ({MAX_CODE_BYTES})",
                location,
            )
        ]
    try:
        tree = ast.parse(source.decode("utf-8"), mode="exec")
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        return [
            Finding(
                Severity.HIGH,
                "torchscript.malformed",
                f"TorchScript code that does not parse: {type(exc).__name__}: {exc}"[:300],
                location,
            )
        ]
    hits: dict[tuple[str, str], list[int]] = {}
    try:
        for node in ast.walk(tree):
            for rule, name in _judge(node):
                hits.setdefault((rule, name), []).append(getattr(node, "lineno", 0))
    except RecursionError:
        return [
            Finding(
                Severity.HIGH,
                "torchscript.malformed",
                "TorchScript code nested too deeply to inspect",
                location,
            )
        ]
    findings = []
    for (rule, name), lines in hits.items():
        severity, message = _MESSAGES[rule]
        times = f" ({len(lines)} times)" if len(lines) > 1 else ""
        findings.append(
            Finding(
                severity, rule, message.format(name=name) + times, f"{location}#line:{lines[0]}"
            )
        )
    return findings


_MESSAGES = {
    "torchscript.file-access": (
        Severity.HIGH,
        "TorchScript code calls {name!r}, an operator that reads or writes files",
    ),
    "torchscript.python-escape": (
        Severity.HIGH,
        "the code names {name!r}, which only Python has (TorchScript cannot reach it)",
    ),
    "torchscript.custom-op": (
        Severity.MEDIUM,
        "TorchScript code calls {name!r}, an operator outside PyTorch's own namespaces",
    ),
}


def _judge(node: ast.AST) -> list[tuple[str, str]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        names = [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        return [("torchscript.python-escape", f"import {n}") for n in names]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in PYTHON_BUILTINS:
            return [("torchscript.python-escape", node.func.id)]
        return []
    if not isinstance(node, ast.Attribute):
        return []
    dotted = _dotted(node)
    if dotted is None:
        return []
    found: list[tuple[str, str]] = []
    if dotted.split(".", 1)[0] in PYTHON_MODULES and isinstance(node.value, ast.Name):
        found.append(("torchscript.python-escape", dotted))
    if dotted in FILE_OPERATORS:
        found.append(("torchscript.file-access", dotted))
    parts = dotted.split(".")
    if parts[0] == "torch" and len(parts) > 1 and parts[1] == "ops":
        parts = parts[1:]
    if parts[0] == "ops" and len(parts) >= 3 and parts[1] not in TORCH_NAMESPACES:
        found.append(("torchscript.custom-op", ".".join(parts[:3])))
    return found


def _dotted(node: ast.Attribute) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name; None for anything else."""
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name):
        return None
    parts.append(value.id)
    return ".".join(reversed(parts))
