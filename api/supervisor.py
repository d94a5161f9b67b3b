"""``modelreg serve``'s child processes: the API processes, the validation worker and the
controller, each a process of its own, so that nothing competes with the API for its GIL.

- Each child is ``python -m registry.children --parent PID -- MODULE ARGS``: it dies
  (``PR_SET_PDEATHSIG``) when ``modelreg serve`` dies, even by SIGKILL, so none is orphaned.
- Each runs in a process group of its own: a Ctrl-C in the terminal reaches ``serve`` alone,
  which stops the children by pid (SIGTERM, then SIGKILL after ``STOP_SECONDS``), and waits.
- A child that exits while ``serve`` runs is logged, the others are stopped, and ``serve``
  exits 1: a supervisor above it (systemd, a container runtime) decides whether to restart,
  rather than one that hides a crash loop.
- Each gets :func:`child_environment`: what a Python process needs, the ``MODELREG_*``
  settings, and (for the controller) the Kubernetes client's variables; nothing else.
- The API processes and the validation worker share a private :func:`metrics_directory`
  (``PROMETHEUS_MULTIPROC_DIR``): each writes its counters, histograms and gauges to files of
  its own there, and whichever API process answers ``GET /metrics`` sums them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.children import Child, Limits, clean_env, limited_argv

log = logging.getLogger("modelreg.serve")

STOP_SECONDS = 20.0
"""How long a child has to stop after SIGTERM before it is killed."""
#: What the Kubernetes client reads (the controller's Kubernetes deployer), and TLS roots.
KUBE_NAMES = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
TLS_NAMES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
#: Where prometheus_client keeps a process's metrics when they are summed across processes. It
#: reads the variable once, at import: it must be in a child's environment from its start.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def child_environment(
    overrides: Mapping[str, str], *, extra_names: Iterable[str] = ()
) -> dict[str, str]:
    """``registry.children.clean_env`` plus every ``MODELREG_*`` variable (the children read
    their settings from it, the database URL and the store's keys included), TLS roots,
    ``extra_names`` when set, then ``overrides``."""
    env = clean_env()
    for name, value in os.environ.items():
        if name.startswith("MODELREG_") or name in TLS_NAMES or name in extra_names:
            env[name] = value
    env.update(overrides)
    return env


_METRICS_PREFIX = "modelreg-metrics-"


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """A new, empty directory only this user can read (0700, from ``mkdtemp``), for the
    children's ``PROMETHEUS_MULTIPROC_DIR``; removed, with every process's files, on exit. A
    fresh one per ``serve``: no file of an earlier run (or of a reused pid) is ever summed.
    The directories a SIGKILLed ``serve`` left behind are removed first."""
    _remove_stale_metrics(Path(tempfile.gettempdir()))
    directory = Path(tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _remove_stale_metrics(parent: Path) -> None:
    """Remove this user's metrics directories whose ``serve`` (the pid in the name) is gone."""
    for directory in parent.glob(f"{_METRICS_PREFIX}*-*"):
        pid = directory.name[len(_METRICS_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError, ValueError):
            if directory.stat().st_uid != os.getuid() or _running(int(pid)):
                continue
            shutil.rmtree(directory)
            log.info("removed %s, left by a serve that is gone", directory)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def forget_metrics(directory: Path, pid: int) -> None:
    """Drop the live gauges of ``pid``, which exited, from the sum. Its counters and histograms
    stay: a total must not go down because the process that counted is gone."""
    from prometheus_client import multiprocess

    # prometheus_client leaves it unannotated; this is its signature (pid, path).
    mark_dead: Callable[[int, str], None] = multiprocess.mark_process_dead
    mark_dead(pid, str(directory))


#: Signals a child must not inherit as ignored (Python ignores SIGPIPE).
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM)


@dataclass
class Running:
    name: str
    process: Child


class Supervisor:
    """Starts children, watches them, and stops them all."""

    def __init__(self) -> None:
        self.children: list[Running] = []

    def start(self, name: str, module: str, args: Sequence[str], *, env: Mapping[str, str]) -> None:
        """Start ``python -m module args``, dying with this process. It inherits the
        inheritable descriptors (the API's listening socket), stdout and stderr."""
        argv = limited_argv(module, args, Limits(parent=os.getpid()))
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(env),
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
            setpgroup=0,
            setsigdef=_RESET_SIGNALS,
        )
        self.children.append(Running(name, Child(pid)))
        log.info("started the %s (pid %d)", name, pid)

    def watch(self, stop: threading.Event) -> Running | None:
        """Until ``stop`` is set (None) or a child exits (that child)."""
        while not stop.wait(0.25):
            for child in self.children:
                if child.process.poll() is not None:
                    return child
        return None

    def stop_all(self) -> None:
        """SIGTERM to every child still running, then wait; SIGKILL what outlives
        ``STOP_SECONDS``. Each stop is logged with the exit code."""
        running = [c for c in self.children if c.process.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in running:
            pid = child.process.pid
            ended = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            if ended is None:
                child.process.kill()
                ended = child.process.wait()
                log.warning(
                    "the %s (pid %d) did not stop in %gs: killed", child.name, pid, STOP_SECONDS
                )
            code = ended.code if ended is not None else -1
            log.info("stopped the %s (pid %d, exit code %d)", child.name, pid, code)
        self.children.clear()


def stop_on_signals() -> threading.Event:
    """An event that SIGINT (Ctrl-C) and SIGTERM set, instead of raising or killing."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop
