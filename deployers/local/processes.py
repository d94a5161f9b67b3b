"""The processes of the local model servers: what they may see (their environment), what
they may use (their memory limit), and what ``/proc`` says of them.

A recorded process is alive when its pid exists, is not a zombie, and started at the time
recorded (field 22 of ``/proc/<pid>/stat``, from :func:`read_process_state`): a pid that now
belongs to another process is neither adopted nor signalled. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from deployers.base import PermanentError, Workload
from registry.children import clean_env, looks_secret, parse_memory

if TYPE_CHECKING:
    from registry.settings import Settings

__all__ = [
    "DIGEST_MISMATCH_EXIT",
    "child_env",
    "describe_exit",
    "pick_free_port",
    "read_log_tail",
    "read_memory_limit",
    "read_process_state",
    "reap",
    "send_signal",
    "server_env",
]

DIGEST_MISMATCH_EXIT = 2
"""``modelreg serve-model`` exits with 2 when the artifact's SHA-256 is not the expected one."""

LOG_TAIL_BYTES = 8192
REASON_MAX_CHARS = 1000


def child_env(settings: Settings) -> dict[str, str]:
    """What a model server may see: a clean environment (``registry.children.clean_env``:
    PATH, HOME, TMPDIR, the locale, PYTHONPATH, thread settings) plus the ``MODELREG_*``
    settings it needs to read the local artifact store. Never the database URL, S3 keys or API
    tokens: with S3 storage the deployer copies the artifact for the server (``artifacts=``)."""
    return clean_env(
        {
            "MODELREG_DATA_DIR": str(settings.data_dir),
            "MODELREG_STORAGE": "local",
            "MODELREG_ARTIFACT_DIR": str(settings.artifact_root),
            "MODELREG_LOG_LEVEL": settings.log_level,
        }
    )


def server_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what a model server must not see (see :func:`child_env`)."""
    settings = {k: v for k, v in env.items() if k.startswith("MODELREG_") and not looks_secret(k)}
    return clean_env(settings, base=env)


def read_memory_limit(workload: Workload) -> int | None:
    """``strategyParams.resources.limits.memory`` in bytes, applied as ``RLIMIT_AS``."""
    limits = workload.resources.get("limits")
    if not isinstance(limits, Mapping) or limits.get("memory") is None:
        return None
    try:
        return parse_memory(limits["memory"])
    except ValueError as exc:
        raise PermanentError(
            f"deployment {workload.deployment_id}: strategyParams.resources.limits.memory: {exc}"
        ) from exc


def read_process_state(pid: int) -> tuple[str, int] | None:
    """The state letter and the start time (in clock ticks since boot) of process ``pid``, or
    ``None`` when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def reap(pid: int) -> int | None:
    """The exit code of ``pid`` if it is a child of this process that has exited (it is then
    reaped); ``None`` when it still runs or is not our child."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited != pid:
        return None
    return os.waitstatus_to_exitcode(status)


def pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_log_tail(path: Path) -> str:
    """The gist of the last run's output: its last ``error:`` line, else its last lines."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("--- ")]
    if starts:
        lines = lines[starts[-1] + 1 :]
    errors = [line for line in lines if line.startswith("error:")]
    tail = errors[-1] if errors else " | ".join(lines[-3:])
    tail = tail or "(no output)"
    return tail if len(tail) <= REASON_MAX_CHARS else f"...{tail[-REASON_MAX_CHARS:]}"


def send_signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, signum)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown)"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
