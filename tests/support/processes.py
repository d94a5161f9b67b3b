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


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children(pid: int, *, marker: bytes | None = None) -> list[int]:
    """The live processes whose parent is ``pid`` (and whose command line holds ``marker``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            if marker is None or marker in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found
