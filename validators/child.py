"""The validator child: ``python -m validators.child JOB``, started by the worker.

The worker starts it through :func:`registry.children.limited_argv`, so it runs under the
memory and CPU limits, with a clean environment (no database URL, no S3 keys, no tokens) and
dies with the worker. ``JOB`` is a JSON file the worker wrote: the parent's pid, the entry
point (``module:function``, default :func:`run_in_child`) and its keyword arguments.

The child needs nothing but the artifact's copy in the scratch directory: it never talks to
the database or the artifact store. It writes the security report to ``security.json`` as
soon as the scan is over (the worker keeps it when a later step breaks a limit), the whole
report to ``output``, and a Python error to ``output.err``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from registry.vocabulary import CheckStatus
from validators.run import validate_artifact

__all__ = [
    "MEMORY_EXIT",
    "MEMORY_MARKERS",
    "PHASE_FILE",
    "SECURITY_FILE",
    "entry_name",
    "mentions_memory_failure",
    "run_in_child",
]

MEMORY_EXIT = 3
"""The child's exit code when a ``MemoryError`` ended it: the memory limit was reached."""

SECURITY_FILE = "security.json"

PHASE_FILE = "phase"
"""The phase the validators are in (scan, load, run, benchmark), next to ``output``: the
child rewrites it at each phase change, the worker reads it while it waits."""

#: What a failed allocation says: Python, numpy, onnxruntime, C++ and the C library.
MEMORY_MARKERS = (
    "MemoryError",
    "Unable to allocate",
    "Failed to allocate memory",
    "bad_alloc",
    "Cannot allocate memory",
    "out of memory",
)

PATH_ARGUMENTS = ("artifact", "workdir", "output")


def mentions_memory_failure(text: str) -> bool:
    return any(marker in text for marker in MEMORY_MARKERS)


def entry_name(entry: Callable[..., None]) -> str:
    """``module:qualname`` of a module-level function, for the job file."""
    return f"{entry.__module__}:{entry.__qualname__}"


def _load_entry(name: str) -> Callable[..., None]:
    module, _, attribute = name.partition(":")
    found: Callable[..., None] = getattr(importlib.import_module(module), attribute)
    return found


def _watch_parent(parent: int) -> None:
    """End this process when ``parent`` ends: the kernel's PR_SET_PDEATHSIG (set by the
    wrapper) does it on Linux; this thread also does it everywhere else."""
    if os.getppid() != parent:  # the worker died before we got here
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    job: dict[str, Any] = json.loads(Path(args[0]).read_text())
    _watch_parent(int(job["parent"]))
    kwargs = dict(job["kwargs"])
    for name in PATH_ARGUMENTS:
        kwargs[name] = Path(kwargs[name])
    entry = _load_entry(job["entry"])
    try:
        entry(**kwargs)
    except MemoryError:
        sys.exit(MEMORY_EXIT)


def run_in_child(**kwargs: Any) -> None:
    """The default entry: the report goes to ``output``, a Python error to ``output.err``."""
    output: Path = kwargs.pop("output")
    memory_limit: int | None = kwargs.pop("memory_limit", None)
    security_file = output.with_name(SECURITY_FILE)

    phase_file = output.with_name(PHASE_FILE)

    def keep_security(security: dict[str, Any]) -> None:
        security_file.write_text(json.dumps(security))

    def enter_phase(phase: str) -> None:
        # Written aside and renamed: the worker never reads half a name.
        staged = phase_file.with_suffix(".new")
        staged.write_text(phase)
        staged.replace(phase_file)

    try:
        report = validate_artifact(
            kwargs.pop("artifact"),
            on_security=keep_security,
            on_phase=enter_phase,
            **kwargs,
        )
        if memory_limit is not None:
            _name_memory_limit(report, memory_limit)
        output.write_text(json.dumps(report, default=str))
    except BaseException:
        output.with_suffix(".err").write_text(traceback.format_exc())
        raise


def memory_finding(limit: int, *, location: str, detail: str = "") -> dict[str, Any]:
    """The finding of a validation that reached the memory limit."""
    message = (
        f"the model needed more memory than the validator's limit of {limit} bytes "
        f"({limit / 1024**3:.2f} GiB, MODELREG_VALIDATOR_MEMORY)"
    )
    if detail:
        message = f"{message}: {detail}"
    return {
        "severity": "HIGH",
        "ruleId": "resource.memory-limit",
        "message": message,
        "location": location,
    }


def _name_memory_limit(report: dict[str, Any], limit: int) -> None:
    """A functional check that failed on an allocation failed on the memory limit: say so."""
    functional = report.get("functional")
    if not isinstance(functional, dict):
        return
    findings = functional.get("findings") or []
    failed = [
        f
        for f in findings
        if isinstance(f, Mapping) and mentions_memory_failure(str(f.get("message", "")))
    ]
    if not failed:
        return
    first = failed[0]
    finding = memory_finding(
        limit, location=str(first.get("location", "")), detail=str(first.get("message", ""))
    )
    functional["findings"] = [finding, *findings]
    functional["status"] = CheckStatus.FAILED
    report["functionalStatus"] = CheckStatus.FAILED
    report["benchmark"] = None


if __name__ == "__main__":
    main()
