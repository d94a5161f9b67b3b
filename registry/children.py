"""Child processes that run what we do not trust: a clean environment and resource limits.

The validator child and the local model servers run code that an artifact steers (an ONNX
graph can ask onnxruntime for any amount of memory). So they start with:

- :func:`clean_env`: only the variables a Python process needs (``PATH``, ``HOME``,
  ``TMPDIR``, the locale, ``PYTHONPATH``, the OpenMP/OpenBLAS thread settings) plus what the
  caller names. Never the database URL, S3 keys or API tokens: a name that looks like a
  secret is refused even when a caller asks for it.
- :class:`Limits`, applied in the child before its program runs: the address space
  (``RLIMIT_AS``), the CPU time (``RLIMIT_CPU``), and optionally death with its parent
  (``PR_SET_PDEATHSIG``). :func:`limited_argv` turns ``python -m module args`` into
  ``python -m registry.children [limits] -- module args``: the fresh interpreter sets the
  limits first, then runs the module as ``__main__`` (same process, same pid). Nothing runs
  between fork and exec in the (threaded) parent, as a ``preexec_fn`` would.

:func:`spawn` starts such a child with ``posix_spawn`` and :class:`Child` waits for it with
``wait4``, which also tells the CPU time it used.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import resource
import runpy
import select
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CPU_GRACE_SECONDS",
    "Child",
    "Limits",
    "available_cores",
    "available_memory",
    "clean_env",
    "limited_argv",
    "limited_env",
    "looks_secret",
    "parse_memory",
    "spawn",
]

#: Variables a child keeps from the parent's environment, by exact name.
KEPT_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PYTHONPATH",
        "MALLOC_ARENA_MAX",
    }
)
#: ... and by prefix: the locale and the thread settings of OpenMP and the BLAS libraries.
KEPT_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_NUM_THREADS")

_SECRET = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE|API_KEY|APIKEY|AUTH"
    r"|COOKIE|SESSION|DATABASE_URL|DSN)",
    re.IGNORECASE,
)

CPU_GRACE_SECONDS = 5
"""The hard CPU limit is the soft one plus this: SIGXCPU first, SIGKILL if it is ignored."""

PR_SET_PDEATHSIG = 1

MALLOC_ARENAS = 2
"""``MALLOC_ARENA_MAX`` of a child with a memory limit (see :func:`limited_env`)."""

#: Signals a child must not inherit as ignored (as ``subprocess``'s ``restore_signals``).
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT)


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential."""
    upper = name.upper()
    return (
        bool(_SECRET.search(upper))
        or upper.startswith(("AWS_", "MODELREG_S3_"))
        or upper in ("MODELREG_TOKEN", "MODELREG_DATABASE_URL")
    )


def clean_env(
    extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of an untrusted child: the kept variables of ``base`` (default
    ``os.environ``) plus ``extra``. Raises ValueError for a secret-looking name in ``extra``."""
    source = os.environ if base is None else base
    env = {
        name: value
        for name, value in source.items()
        if (name in KEPT_NAMES or name.startswith(KEPT_PREFIXES)) and not looks_secret(name)
    }
    for name, value in (extra or {}).items():
        if looks_secret(name):
            raise ValueError(f"{name} looks like a credential: a child process must not get it")
        env[name] = value
    return env


_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?\s*$")
_FACTORS = {
    None: 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_memory(value: object) -> int:
    """Bytes of a memory quantity as Kubernetes writes it: ``"512Mi"``, ``"4Gi"``, ``"1G"``,
    or a number of bytes. Raises ValueError for anything else, or for zero."""
    if isinstance(value, bool):
        raise ValueError(f"not a memory quantity: {value!r}")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and (match := _QUANTITY.match(value)):
        amount = int(float(match.group(1)) * _FACTORS[match.group(2)])
    else:
        raise ValueError(f"not a memory quantity such as '512Mi' or '4Gi': {value!r}")
    if amount <= 0:
        raise ValueError(f"a memory limit must be more than 0 bytes, not {value!r}")
    return amount


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset or
    ``taskset`` narrows), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: The memory limit of this process's cgroup: v2, then v1 (which says "no limit" with a huge
#: number, larger than any machine's memory).
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def available_memory(*, cgroup_limits: Sequence[Path] = CGROUP_MEMORY_LIMITS) -> int | None:
    """Bytes of memory this process's children may use together: the machine's physical
    memory, or its cgroup's limit when that is lower. None when neither can be read."""
    try:
        physical: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        physical = None
    known = [physical] if physical else []
    for path in cgroup_limits:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:  # "max": none
            known.append(int(text))
        break
    return min(known) if known else None


@dataclass(frozen=True)
class Limits:
    """What :func:`limited_argv` applies to the child before its program starts."""

    memory_bytes: int | None = None
    """``RLIMIT_AS``: an allocation beyond it fails (``MemoryError``, or onnxruntime's
    "Failed to allocate memory")."""
    cpu_seconds: int | None = None
    """``RLIMIT_CPU``: SIGXCPU at this many seconds of CPU, SIGKILL ``CPU_GRACE_SECONDS`` later."""
    parent: int | None = None
    """Die (SIGKILL) when this process, the child's parent, dies."""


def limited_env(env: Mapping[str, str], limits: Limits) -> dict[str, str]:
    """``env`` for a child under ``limits``. With a memory limit, glibc's malloc gets at most
    ``MALLOC_ARENAS`` arenas (unless ``env`` says otherwise): each arena reserves 64 MiB
    of address space, so one per thread would spend an ``RLIMIT_AS`` on many cores."""
    out = dict(env)
    if limits.memory_bytes is not None:
        out.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    return out


def limited_argv(
    module: str, args: Sequence[str], limits: Limits, *, python: str = sys.executable
) -> list[str]:
    """``python -m module args`` run under ``limits``:
    ``python -m registry.children [limits] -- module args``."""
    wrapper = [python, "-m", "registry.children"]
    if limits.memory_bytes is not None:
        wrapper += ["--memory", str(limits.memory_bytes)]
    if limits.cpu_seconds is not None:
        wrapper += ["--cpu", str(limits.cpu_seconds)]
    if limits.parent is not None:
        wrapper += ["--parent", str(limits.parent)]
    return [*wrapper, "--", module, *args]


def apply_limits(limits: Limits) -> None:
    """Set ``limits`` on this process (what the wrapper does before the module runs)."""
    if limits.parent is not None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != limits.parent:  # the parent died before the line above
            os._exit(1)
    if limits.cpu_seconds is not None:
        soft = limits.cpu_seconds
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + CPU_GRACE_SECONDS))
    if limits.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))


@dataclass(frozen=True)
class Exit:
    """How a child ended: its exit code (negative: the signal that killed it) and its CPU time."""

    code: int
    cpu_seconds: float


class Child:
    """A process started by :func:`spawn`, reaped with ``wait4``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exit: Exit | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def poll(self) -> Exit | None:
        if self.exit is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self._reaped(status, usage)
        return self.exit

    def wait(self, timeout: float | None = None) -> Exit | None:
        """The exit, or None when the child still runs after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], left)
            else:
                time.sleep(0.05 if left is None else min(0.05, left))
        return self.exit

    def kill(self) -> None:
        if self.exit is None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _reaped(self, status: int, usage: resource.struct_rusage) -> None:
        self.exit = Exit(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)
        self.close()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    output: Path,
    setsid: bool = False,
    mode: int = 0o600,
) -> int:
    """Start ``argv`` (``argv[0]`` looked up on ``PATH``) with ``env``, stdin from
    ``/dev/null`` and stdout and stderr appended to ``output``; its pid."""
    return os.posix_spawnp(
        argv[0],
        list(argv),
        dict(env),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(output), os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=setsid,
        setsigdef=_RESET_SIGNALS,
    )


def main(args: Sequence[str] | None = None) -> None:
    """``python -m registry.children [--memory B] [--cpu S] [--parent PID] -- module args...``:
    set the limits, then run ``module`` as ``__main__`` in this same interpreter (as
    ``python -m module args`` would), before it imports anything."""
    parser = argparse.ArgumentParser(prog="python -m registry.children")
    parser.add_argument("--memory", type=int)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--parent", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    parsed = parser.parse_args(args)
    command = list(parsed.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("give the module to run after --")
    apply_limits(Limits(parsed.memory, parsed.cpu, parsed.parent))
    sys.argv = command
    runpy.run_module(command[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
