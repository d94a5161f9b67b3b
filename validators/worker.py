"""The validation worker: claims queued runs, re-checks the digest, runs the validators in a
child process, and stores one result per run. It survives whatever the validators do.

A worker killed outright (SIGKILL, the OOM killer) takes its child with it: the child dies
as soon as its parent does, so no orphan keeps validating. The run's lease then expires and
another worker takes the run over; the next worker on the same host also removes the scratch
directory (a copy of the artifact) that the dead one left.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry.db import DB_UNAVAILABLE_ERRORS, DatabaseOutage, db_unavailable
from registry.errors import NotFound, Unavailable
from registry.services import Registry
from registry.services.validations import ValidationJob

log = logging.getLogger("modelreg.worker")
_SPAWN = multiprocessing.get_context("spawn")

STDERR_TAIL = 2000
#: Scratch directories are ``modelreg-validate_{host}_{pid}_{random}``, so that a worker can
#: tell those of dead workers on its host.
SCRATCH_PREFIX = "modelreg-validate"
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"
PR_SET_PDEATHSIG = 1


class LeaseLost(Exception):
    pass


class ValidationWorker:
    def __init__(
        self,
        registry: Registry,
        *,
        worker_id: str | None = None,
        child_entry: Callable[..., None] | None = None,
    ) -> None:
        """``child_entry`` is what the child process runs (default ``run_in_child``)."""
        self.registry = registry
        self.child_entry = child_entry or run_in_child
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        settings = registry.settings
        self.timeout = settings.validation_timeout_seconds
        self.poll = settings.worker_poll_seconds
        self.renew_every = max(1.0, settings.validation_lease_seconds / 3)

    def run_once(self) -> bool:
        """Validate one queued run, if there is one. True when a run was handled."""
        job = self.registry.validations.claim(self.worker_id)
        if job is None:
            return False
        log.info(
            "validating %s %s (sha256 %s, attempt %d)",
            job.model_name,
            job.version_number,
            job.sha256[:12],
            job.attempts,
        )
        started = time.monotonic()
        scratch = f"{SCRATCH_PREFIX}_{_HOST}_{os.getpid()}_"
        with tempfile.TemporaryDirectory(prefix=scratch, ignore_cleanup_errors=True) as tmp:
            try:
                outcome = self._validate(job, Path(tmp))
            except LeaseLost:
                log.warning("validation %s: lost the lease; another worker has it", job.request_id)
                return True
            except DB_UNAVAILABLE_ERRORS:
                raise  # not the artifact's fault: the run is retried when its lease expires
            except Exception as exc:  # the worker itself must survive
                log.exception("validation %s failed in the worker", job.request_id)
                outcome = _failed(job, f"worker error: {exc.__class__.__name__}: {exc}")
        outcome["results"]["durationSeconds"] = round(time.monotonic() - started, 3)
        stored = self.registry.validations.complete(job, self.worker_id, **outcome)
        if stored is not None:
            log.info(
                "validated %s %s: security %s, functional %s",
                job.model_name,
                job.version_number,
                stored.security_scan_status,
                stored.functional_status,
            )
        return True

    def run_forever(self, stop: threading.Event) -> None:
        log.info("validation worker %s started", self.worker_id)
        remove_dead_scratch()
        outage = DatabaseOutage(
            log,
            base=self.poll,
            down="database unavailable (%s): the validation worker waits for it",
            up="database reachable again after %d failed attempt(s); the validation worker resumes",
        )
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:
                worked = False
                if db_unavailable(exc):
                    stop.wait(outage.failed(exc))
                    continue
                log.exception("validation worker pass failed; retrying")
            else:
                outage.succeeded()
            if not worked:
                stop.wait(self.poll)
        log.info("validation worker %s stopped", self.worker_id)

    # -- one run -------------------------------------------------------------------------

    def _validate(self, job: ValidationJob, tmp: Path) -> dict[str, Any]:
        artifact = tmp / "artifact" / (job.source_path.rsplit("/", 1)[-1] or "artifact")
        artifact.parent.mkdir(mode=0o700)
        try:
            digest = self._fetch(job, artifact)
        except NotFound as exc:
            return _failed(
                job,
                f"the artifact is missing from the store: {exc.detail}",
                rule="artifact.missing",
            )
        except Unavailable as exc:
            return _failed(
                job,
                f"the artifact store could not be read: {exc.detail}; "
                "request the validation again once the store is back",
                rule="artifact.unavailable",
            )
        if digest != job.sha256:
            return _failed(
                job,
                f"artifact digest mismatch: the registry recorded {job.sha256}, "
                f"the store holds {digest}; refused to validate",
                rule="artifact.digest-mismatch",
            )
        output = tmp / "result.json"
        workdir = tmp / "work"
        workdir.mkdir(mode=0o700)
        code = self._run_child(job, artifact=artifact, workdir=workdir, output=output)
        if code is None:
            return _failed(
                job,
                f"the validators did not finish within {self.timeout} s; the run was stopped",
                rule="validator.timeout",
            )
        error = output.with_suffix(".err")
        if code != 0 or not output.is_file():
            how = (
                f"was killed by signal {signal.Signals(-code).name}"
                if code < 0
                else f"exited with code {code}"
            )
            detail = error.read_text()[-STDERR_TAIL:] if error.is_file() else ""
            return _failed(
                job, f"the validator process {how}. {detail}".strip(), rule="validator.crash"
            )
        report = json.loads(output.read_text())
        return {
            "security": report["securityStatus"],
            "functional": report["functionalStatus"],
            "benchmark": report.get("benchmark"),
            "results": {
                "sha256": job.sha256,
                "security": report["security"],
                "functional": report["functional"],
                "timings": report.get("timings", {}),
                "attempt": job.attempts,
                "worker": self.worker_id,
            },
        }

    def _fetch(self, job: ValidationJob, dest: Path) -> str:
        """Copy the artifact from the store, hashing it: the digest it really has now."""
        digest = hashlib.sha256()
        with dest.open("wb") as fh:
            for chunk in self.registry.store.open_range(job.source_path):
                digest.update(chunk)
                fh.write(chunk)
        return digest.hexdigest()

    def _run_child(
        self, job: ValidationJob, *, artifact: Path, workdir: Path, output: Path
    ) -> int | None:
        """Run the validators in a fresh process; renew the lease while they work.

        The exit code (negative: killed by that signal), or None on timeout.
        """
        child = _SPAWN.Process(
            target=_child_main,
            args=(self.child_entry, os.getpid()),
            kwargs={
                "artifact": artifact,
                "workdir": workdir,
                "output": output,
                "fmt": job.format,
                "parameters": job.parameters,
                "baseline_p95_ms": job.baseline_p95_ms,
            },
            name=f"validate-{job.request_id}",
            daemon=True,
        )
        child.start()
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                child.join(timeout=min(self.renew_every, max(0.0, deadline - time.monotonic())))
                if child.exitcode is not None:
                    return child.exitcode
                if time.monotonic() >= deadline:
                    return None
                if not self.registry.validations.renew(job, self.worker_id):
                    raise LeaseLost
        finally:
            if child.exitcode is None:
                child.kill()
                child.join()
            child.close()


def _child_main(entry: Callable[..., None], parent: int, **kwargs: Any) -> None:
    """What the child process runs: ``entry``, for as long as the worker that started it lives."""
    _die_with_parent(parent)
    entry(**kwargs)


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends, SIGKILL included: an orphan must not go on
    validating (its result would go nowhere) nor hold the CPU and memory it took.

    On Linux the kernel sends SIGKILL (PR_SET_PDEATHSIG); everywhere, a thread also watches
    for the process being handed to another parent.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below is enough
    if os.getppid() != parent:  # the worker died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def remove_dead_scratch(root: Path | None = None) -> int:
    """Remove the scratch directories that workers on this host left when they were killed.

    A directory is removed only when the process that made it is gone. Returns how many.
    """
    base = Path(root or tempfile.gettempdir())
    removed = 0
    for path in base.glob(f"{SCRATCH_PREFIX}_{_HOST}_*_*"):
        pid_text = path.name.split("_", 3)[2]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _process_exists(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            log.info("removed %s, left by a worker that was killed", path)
            removed += 1
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def run_in_child(**kwargs: Any) -> None:
    """The child's entry point: the report goes to ``output``, a Python error to ``.err``."""
    output: Path = kwargs.pop("output")
    try:
        from validators.run import validate_artifact

        report = validate_artifact(kwargs.pop("artifact"), **kwargs)
        output.write_text(json.dumps(report, default=str))
    except BaseException:
        import traceback

        output.with_suffix(".err").write_text(traceback.format_exc())
        raise


def _failed(job: ValidationJob, reason: str, *, rule: str = "validator.error") -> dict[str, Any]:
    finding = {"severity": "HIGH", "ruleId": rule, "message": reason, "location": job.source_path}
    return {
        "security": "Failed",
        "functional": "Failed",
        "benchmark": None,
        "results": {
            "sha256": job.sha256,
            "error": reason,
            "findings": [finding],
            "attempt": job.attempts,
        },
    }


def start_worker_thread(registry: Registry) -> tuple[threading.Thread, threading.Event]:
    """The worker inside ``modelreg serve``: a daemon thread, stopped through the event."""
    stop = threading.Event()
    worker = ValidationWorker(registry)
    thread = threading.Thread(
        target=worker.run_forever, args=(stop,), name="validation-worker", daemon=True
    )
    thread.start()
    return thread, stop
