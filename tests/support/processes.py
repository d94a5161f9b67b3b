"""Processes by pid, told apart from a later process that reuses the pid by their start time
(``/proc/<pid>/stat``)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def process_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def kill_if_recorded(pid: int, started: int) -> None:
    """SIGKILL ``pid`` (and reap it) if it is still the process that was recorded."""
    if process_start(pid) != started:
        return
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # not a child of this process
        os.waitpid(pid, 0)
