"""The validation worker: claims queued runs, re-checks the digest, runs the validators in a
child process, and stores one result per run. It survives whatever the validators do.

The child (``validators.child``) starts with a clean environment, without the database URL,
S3 keys or API tokens, and under an address-space and a CPU-time limit
(``MODELREG_VALIDATOR_MEMORY``, ``MODELREG_VALIDATOR_CPU_SECONDS``; see ``registry.children``);
the worker also stops it after ``MODELREG_VALIDATION_TIMEOUT_SECONDS``. A breach fails the
functional check with ``resource.memory-limit``, ``resource.cpu-limit`` or
``resource.timeout``, and keeps the security report when the scan had finished.

A worker runs up to ``MODELREG_VALIDATION_CONCURRENCY`` runs at once, each in its own child
under its own limits, so the children may reserve together up to that many times
``MODELREG_VALIDATOR_MEMORY``; the default concurrency (``registry.settings``) is lowered so
that this fits in the machine's memory, and a worker told more says so when it starts. One
thread claims (one claim poll per worker, however many slots are free), and one thread per
run waits for its child. Several workers, on one host or many, share the queue: the database
settles each claim (``ValidationService.claim``).

A worker killed outright (SIGKILL, the OOM killer) takes its children with it: a child dies
as soon as its parent does, so no orphan keeps validating. The runs' leases then expire and
another worker takes them over; the next worker on the same host also removes the scratch
directories (copies of the artifacts) that the dead one left.

A worker told to stop (SIGTERM, Ctrl-C: the ``stop`` event of :meth:`run_forever`) does not
wait for its runs: it stops their children and puts the runs back in the queue at once, the
attempt not counted, for another worker or its own next start. A run can take up to
``MODELREG_VALIDATION_TIMEOUT_SECONDS``, far longer than a supervisor waits before SIGKILL;
that would lose the work anyway and leave the run until its lease expired.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from registry.children import (
    Child,
    Exit,
    Limits,
    available_memory,
    clean_env,
    limited_argv,
    limited_env,
    spawn,
)
from registry.db import DB_UNAVAILABLE_ERRORS, DatabaseOutage, db_unavailable
from registry.errors import NotFound, Unavailable
from registry.services import Registry
from registry.services.validations import ValidationJob
from registry.types import utcnow
from registry.validation_outcome import ValidationOutcome
from registry.vocabulary import CheckStatus
from validators.child import (
    MEMORY_EXIT,
    PHASE_FILE,
    SECURITY_FILE,
    entry_name,
    memory_finding,
    mentions_memory_failure,
    run_in_child,
)

log = logging.getLogger("modelreg.worker")

STDERR_TAIL = 2000
#: Scratch directories are ``modelreg-validate_{host}_{pid}_{random}``, so that a worker can
#: tell those of dead workers on its host.
SCRATCH_PREFIX = "modelreg-validate"
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"
CHILD_LOG = "child.log"
"""The validator child's stdout and stderr, in the scratch directory."""
#: How often, in seconds, the worker looks at the child's phase file while it waits: a stat
#: and a read of a few bytes; the database is written only when the phase changed.
PHASE_POLL_SECONDS = 0.5


class LeaseLost(Exception):
    pass


class Stopped(Exception):
    """The worker is stopping: the run goes back to the queue."""


class ValidationWorker:
    def __init__(
        self,
        registry: Registry,
        *,
        worker_id: str | None = None,
        child_entry: Callable[..., None] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """``child_entry`` is what the child process runs (default ``run_in_child``): a
        module-level function, which the child imports by its module and name.
        ``concurrency``: runs at once in :meth:`run_forever` (default
        ``MODELREG_VALIDATION_CONCURRENCY``)."""
        self.registry = registry
        self.child_entry = child_entry or run_in_child
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        settings = registry.settings
        self.timeout = settings.validation_timeout_seconds
        self.poll = settings.worker_poll_seconds
        self.renew_every = max(1.0, settings.validation_lease_seconds / 3)
        self.concurrency = max(1, concurrency or settings.validation_concurrency or 1)
        self.stopping = threading.Event()
        """Set when :meth:`run_forever` is told to stop: running runs are put back."""

    def run_once(self) -> bool:
        """Validate one queued run, if there is one. True when a run was handled."""
        job = self.registry.validations.claim(self.worker_id)
        if job is None:
            return False
        self.validate(job)
        return True

    def validate(self, job: ValidationJob) -> None:
        """Run the validators on a run this worker claimed, and store its result; or put the
        run back in the queue when the worker is stopping."""
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
                return
            except Stopped:
                if self.registry.validations.release(job, self.worker_id):
                    log.info("validation %s: back in the queue (the worker stops)", job.request_id)
                return
            except DB_UNAVAILABLE_ERRORS:
                raise  # not the artifact's fault: the run is retried when its lease expires
            except Exception as exc:  # the worker itself must survive
                log.exception("validation %s failed in the worker", job.request_id)
                outcome = _failed(job, f"worker error: {exc.__class__.__name__}: {exc}")
        outcome = outcome.timed(round(time.monotonic() - started, 3))
        stored = self.registry.validations.complete(job, self.worker_id, outcome)
        if stored is not None:
            log.info(
                "validated %s %s: security %s, functional %s",
                job.model_name,
                job.version_number,
                stored.security_scan_status,
                stored.functional_status,
            )

    def run_forever(self, stop: threading.Event) -> None:
        """Claim and validate runs, up to ``concurrency`` at once, until ``stop`` is set; then
        stop the running children and put their runs back in the queue."""
        log.info(
            "validation worker %s started: up to %d validator process(es) at once "
            "(MODELREG_VALIDATION_CONCURRENCY)%s",
            self.worker_id,
            self.concurrency,
            self._memory_note(),
        )
        remove_dead_scratch()
        outage = DatabaseOutage(
            log,
            base=self.poll,
            down="database unavailable (%s): the validation worker waits for it",
            up="database reachable again after %d failed attempt(s); the validation worker resumes",
        )
        slots = threading.BoundedSemaphore(self.concurrency)
        running: list[threading.Thread] = []
        try:
            while not stop.is_set():
                if not slots.acquire(timeout=self.poll):
                    continue  # every slot busy: look at ``stop`` again
                try:
                    job = self.registry.validations.claim(self.worker_id)
                except Exception as exc:
                    slots.release()
                    if db_unavailable(exc):
                        stop.wait(outage.failed(exc))
                        continue
                    log.exception("validation worker pass failed; retrying")
                    stop.wait(self.poll)
                    continue
                outage.succeeded()
                if job is None:
                    slots.release()
                    stop.wait(self.poll)
                    continue
                thread = threading.Thread(
                    target=self._run_slot,
                    args=(job, slots),
                    name=f"validation-{job.request_id.hex[:8]}",
                    daemon=True,
                )
                thread.start()
                running = [t for t in running if t.is_alive()] + [thread]
        finally:
            self.stopping.set()
            for thread in running:
                thread.join()
        log.info("validation worker %s stopped", self.worker_id)

    def _run_slot(self, job: ValidationJob, slots: threading.BoundedSemaphore) -> None:
        """One run, on its own thread; the slot is free again when it ends."""
        try:
            self.validate(job)
        except Exception as exc:
            if db_unavailable(exc):
                log.warning(
                    "validation %s: database unavailable (%s); the run is taken again once "
                    "its lease expires",
                    job.request_id,
                    exc,
                )
            else:
                log.exception("validation %s: the worker could not finish it", job.request_id)
        finally:
            slots.release()

    def _memory_note(self) -> str:
        """What the log says about the children's memory caps, together."""
        cap = self.registry.settings.validator_memory
        if not cap:
            return ", with no memory limit (MODELREG_VALIDATOR_MEMORY=0)"
        total = cap * self.concurrency
        note = f", each under {cap / 2**30:.1f} GiB, {total / 2**30:.1f} GiB together"
        memory = available_memory()
        if memory is not None and total > memory:
            log.warning(
                "%d validator processes at %.1f GiB each may reserve more than the %.1f GiB "
                "of memory here: lower MODELREG_VALIDATION_CONCURRENCY or "
                "MODELREG_VALIDATOR_MEMORY, or the OOM killer may pick the worker",
                self.concurrency,
                cap / 2**30,
                memory / 2**30,
            )
        return note

    # -- one run -------------------------------------------------------------------------

    def _validate(self, job: ValidationJob, tmp: Path) -> ValidationOutcome:
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
        process: dict[str, Any] = {}
        ended = self._run_child(
            job, artifact=artifact, workdir=workdir, output=output, process=process
        )
        return replace(self._judge(job, ended, output=output), process=process)

    def _judge(self, job: ValidationJob, ended: Exit | None, *, output: Path) -> ValidationOutcome:
        """The outcome of a child that ended (None: it was stopped at the timeout)."""
        breach = self._breach(job, ended, output=output)
        if breach is not None:
            return _over_limit(job, breach, security_file=output.with_name(SECURITY_FILE))
        assert ended is not None
        if ended.code != 0 or not output.is_file():
            return _failed(
                job,
                f"the validator process {_exit_text(ended.code)}. {_child_output(output)}".strip(),
                rule="validator.crash",
            )
        return _finished(job, json.loads(output.read_text()), worker=self.worker_id)

    def _breach(
        self, job: ValidationJob, ended: Exit | None, *, output: Path
    ) -> dict[str, Any] | None:
        """The finding of a child that broke a resource limit, or None."""
        settings = self.registry.settings
        location = job.source_path
        if ended is None:
            return _finding(
                "resource.timeout",
                f"the validators did not finish within {self.timeout} s "
                "(MODELREG_VALIDATION_TIMEOUT_SECONDS); the run was stopped",
                location,
            )
        cpu_limit = settings.validator_cpu_seconds
        if ended.code == -signal.SIGXCPU or (
            ended.code == -signal.SIGKILL and cpu_limit and ended.cpu_seconds >= cpu_limit
        ):
            return _finding(
                "resource.cpu-limit",
                f"the validators used {ended.cpu_seconds:.1f} s of CPU and reached the limit of "
                f"{cpu_limit} s (MODELREG_VALIDATOR_CPU_SECONDS); the process "
                f"{_exit_text(ended.code)}",
                location,
            )
        memory = settings.validator_memory
        if ended.code == 0 or not memory:
            return None
        said = _child_output(output)
        if ended.code in (MEMORY_EXIT, -signal.SIGKILL) or (
            ended.code < 0 and mentions_memory_failure(said)
        ):
            how = (
                "ran out of memory"
                if ended.code == MEMORY_EXIT
                else f"{_exit_text(ended.code)} (out of memory)"
            )
            finding = memory_finding(memory, location=location, detail=f"the process {how}")
            if said:
                finding["message"] += f". {said}"
            return finding
        return None

    def _fetch(self, job: ValidationJob, dest: Path) -> str:
        """Copy the artifact from the store, hashing it: the digest it really has now."""
        digest = hashlib.sha256()
        with dest.open("wb") as fh:
            for chunk in self.registry.store.open_range(job.source_path):
                if self.stopping.is_set():
                    raise Stopped
                digest.update(chunk)
                fh.write(chunk)
        return digest.hexdigest()

    def _run_child(
        self,
        job: ValidationJob,
        *,
        artifact: Path,
        workdir: Path,
        output: Path,
        process: dict[str, Any],
    ) -> Exit | None:
        """Run the validators in a fresh process; renew the lease while they work.

        The process runs under the memory and CPU limits, with a clean environment (see
        ``registry.children``), and dies with this one. How it ended, or None on timeout;
        ``process`` gets its pid and when it started and ended. Raises :class:`Stopped`,
        the process stopped, when the worker stops.
        """
        settings = self.registry.settings
        memory = settings.validator_memory or None
        job_file = output.with_name("job.json")
        job_file.write_text(
            json.dumps(
                {
                    "parent": os.getpid(),
                    "entry": entry_name(self.child_entry),
                    "kwargs": {
                        "artifact": str(artifact),
                        "workdir": str(workdir),
                        "output": str(output),
                        "fmt": job.format,
                        "parameters": job.parameters,
                        "baseline_p95_ms": job.baseline_p95_ms,
                        "baseline_noisy": job.baseline_noisy,
                        "memory_limit": memory,
                    },
                },
                default=str,
            )
        )
        limits = Limits(
            memory_bytes=memory,
            cpu_seconds=settings.validator_cpu_seconds or None,
            parent=os.getpid(),
        )
        argv = limited_argv("validators.child", [str(job_file)], limits)
        env = limited_env(clean_env(), limits)
        if self.stopping.is_set():
            raise Stopped
        process["startedAt"] = utcnow().isoformat()
        child = Child(spawn(argv, env=env, output=output.with_name(CHILD_LOG)))
        process["pid"] = child.pid
        phases = _PhaseReporter(self, job, output.with_name(PHASE_FILE))
        deadline = time.monotonic() + self.timeout
        renew_at = time.monotonic() + self.renew_every
        try:
            while True:
                now = time.monotonic()
                left = max(0.0, min(deadline, renew_at) - now)
                ended = child.wait(timeout=min(PHASE_POLL_SECONDS, left))
                if ended is not None:
                    return ended
                if self.stopping.is_set():
                    raise Stopped
                phases.check()
                now = time.monotonic()
                if now >= deadline:
                    return None
                if now >= renew_at:
                    if not self.registry.validations.renew(job, self.worker_id):
                        raise LeaseLost
                    renew_at = now + self.renew_every
        finally:
            if child.exit is None:
                child.kill()
                child.wait()
            child.close()
            process["endedAt"] = utcnow().isoformat()


class _PhaseReporter:
    """Passes the child's phase (its ``PHASE_FILE``) on to the run's row when it changes."""

    def __init__(self, worker: ValidationWorker, job: ValidationJob, path: Path) -> None:
        self.worker, self.job, self.path = worker, job, path
        self.reported: str | None = None

    def check(self) -> None:
        try:
            phase = self.path.read_text(encoding="utf-8", errors="replace").strip()[:20]
        except OSError:
            return  # not written yet
        if not phase or phase == self.reported:
            return
        self.reported = phase
        if not self.worker.registry.validations.set_phase(self.job, self.worker.worker_id, phase):
            raise LeaseLost


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


def _finding(rule: str, message: str, location: str) -> dict[str, Any]:
    return {"severity": "HIGH", "ruleId": rule, "message": message, "location": location}


def _finished(job: ValidationJob, report: dict[str, Any], *, worker: str) -> ValidationOutcome:
    """The outcome of a run the validators finished, from the report the child wrote
    (``validators.run.validate_artifact``'s)."""
    return ValidationOutcome(
        security=CheckStatus(report["securityStatus"]),
        functional=CheckStatus(report["functionalStatus"]),
        sha256=job.sha256,
        benchmark=report.get("benchmark"),
        security_report=report["security"],
        functional_report=report["functional"],
        timings=report.get("timings", {}),
        attempt=job.attempts,
        worker=worker,
    )


def _failed(
    job: ValidationJob,
    reason: str,
    *,
    rule: str = "validator.error",
    finding: dict[str, Any] | None = None,
) -> ValidationOutcome:
    """A run that could not validate the artifact; ``finding`` (default: one made of
    ``rule`` and ``reason``) says why."""
    return ValidationOutcome.failed(
        reason,
        sha256=job.sha256,
        findings=(finding or _finding(rule, reason, job.source_path),),
        attempt=job.attempts,
    )


def _over_limit(
    job: ValidationJob, finding: dict[str, Any], *, security_file: Path
) -> ValidationOutcome:
    """A run that broke a resource limit: the functional check fails with ``finding``; the
    security report stays when the scan had finished (else the security result fails too)."""
    outcome = replace(
        _failed(job, finding["message"], finding=finding),
        functional_report={"status": CheckStatus.FAILED, "findings": [finding]},
    )
    try:
        security = json.loads(security_file.read_text())
    except (OSError, ValueError):
        return outcome
    passed = security.get("status") == CheckStatus.PASSED
    return replace(
        outcome,
        security=CheckStatus.PASSED if passed else CheckStatus.FAILED,
        security_report=security,
    )


def _exit_text(code: int) -> str:
    if code < 0:
        return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _child_output(output: Path) -> str:
    """The end of what the child said: its Python traceback, else its stderr."""
    for path in (output.with_suffix(".err"), output.with_name(CHILD_LOG)):
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            return text[-STDERR_TAIL:]
    return ""


def start_worker_thread(registry: Registry) -> tuple[threading.Thread, threading.Event]:
    """The worker inside ``modelreg serve``: a daemon thread, stopped through the event."""
    stop = threading.Event()
    worker = ValidationWorker(registry)
    thread = threading.Thread(
        target=worker.run_forever, args=(stop,), name="validation-worker", daemon=True
    )
    thread.start()
    return thread, stop
