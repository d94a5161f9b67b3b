"""The local deployer: one ``modelreg serve-model`` process per replica, on a loopback port.

Every instance is recorded in a JSON file under ``state_dir`` (``instances/``), every workload
(the replicas and version the last ``apply`` asked for) in another (``workloads/``), and every
instance writes its output to ``logs/``. The files, not this object, are the state: a new
:class:`LocalDeployer` on the same ``state_dir`` (a restarted controller) adopts the servers
still running instead of starting duplicates. Servers run in sessions of their own, so they
outlive a controller that is killed.

A recorded instance is alive when its pid exists, is not a zombie, and started at the time
recorded (field 22 of ``/proc/<pid>/stat``): a pid that now belongs to another process is
neither adopted nor signalled. Linux only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from deployers.base import (
    Instance,
    OwnedWorkload,
    PermanentError,
    Target,
    TemporaryError,
    Workload,
    WorkloadStatus,
    check_workload,
)
from registry.children import (
    Limits,
    clean_env,
    limited_argv,
    limited_env,
    looks_secret,
    parse_memory,
)
from registry.children import spawn as spawn_child
from registry.errors import RegistryError

if TYPE_CHECKING:
    from registry.settings import Settings
    from registry.storage import ArtifactStore

__all__ = ["API_FORMAT", "LocalDeployer", "child_env"]

API_FORMAT = "API"
"""The format of a version served elsewhere: no process runs for it."""

DIGEST_MISMATCH_EXIT = 2
"""``modelreg serve-model`` exits with 2 when the artifact's SHA-256 is not the expected one."""

STOP_GRACE_SECONDS = 5.0
KILL_WAIT_SECONDS = 2.0
POLL_SECONDS = 0.05
LOG_TAIL_BYTES = 8192
REASON_MAX_CHARS = 1000

_log = logging.getLogger("modelreg.deployers.local")


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


def _server_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what a model server must not see (see :func:`child_env`)."""
    settings = {k: v for k, v in env.items() if k.startswith("MODELREG_") and not looks_secret(k)}
    return clean_env(settings, base=env)


def _memory_limit(workload: Workload) -> int | None:
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


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WorkloadRecord:
    """What the last ``apply`` asked of one deployment."""

    deployment_id: str
    model_id: str
    model: str
    environment: str
    version_id: str
    version_number: str
    version_format: str
    endpoint: str | None
    replicas: int
    role: str

    @property
    def is_api(self) -> bool:
        return self.version_format == API_FORMAT


@dataclass(frozen=True)
class _InstanceRecord:
    """One replica's server process."""

    deployment_id: str
    model_id: str
    model: str
    environment: str
    version_id: str
    version_number: str
    sha256: str
    artifact_key: str
    replica: int
    pid: int
    port: int
    url: str
    started_at: str
    proc_start: int
    """Field 22 of ``/proc/<pid>/stat`` when the process was started: tells pid reuse apart."""
    restarts: int
    last_exit_code: int | None
    """The exit code of the process ``pid``, once it is known to have exited."""
    log_path: str

    def describe(self) -> str:
        return (
            f"model server {self.model} {self.version_number} "
            f"(deployment {self.deployment_id}) pid {self.pid} on {self.url}"
        )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json_list(path: Path) -> list[Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # removed since the folder was listed
    except (OSError, ValueError) as exc:
        _log.warning("ignoring unreadable deployer record %s: %s", path, exc)
        return None
    if not isinstance(data, dict):
        _log.warning("ignoring deployer record %s: not a JSON object", path)
        return None
    return data


# --- processes ------------------------------------------------------------------------------


def _process_state(pid: int) -> tuple[str, int] | None:
    """The state letter and the start time (in clock ticks since boot) of process ``pid``, or
    ``None`` when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> int | None:
    """The exit code of ``pid`` if it is a child of this process that has exited (it is then
    reaped); ``None`` when it still runs or is not our child."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited != pid:
        return None
    return os.waitstatus_to_exitcode(status)


def _pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path) -> str:
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


# --- the deployer ---------------------------------------------------------------------------


class LocalDeployer:
    """Runs model servers as local processes; see the module docstring."""

    def __init__(
        self,
        *,
        state_dir: Path,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        ready_timeout: float = 0.5,
        max_restarts: int = 3,
        log: logging.Logger | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        """``env``: the model servers' environment, less anything secret-looking (default: a
        clean one from ``os.environ``). ``artifacts``: a store the servers cannot read
        themselves (S3: they get no credentials); the deployer then copies each artifact,
        verified, under ``state_dir/artifacts`` and gives the server that file."""
        self.state_dir = state_dir
        self._env = _server_env(os.environ if env is None else env)
        self._artifacts = artifacts
        self._python = python
        self._ready_timeout = ready_timeout
        self._max_restarts = max_restarts
        self._log = log or _log
        self._workloads_dir = state_dir / "workloads"
        self._instances_dir = state_dir / "instances"
        self._logs_dir = state_dir / "logs"
        for folder in (self._workloads_dir, self._instances_dir, self._logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._announce_adopted()
        self.write_prometheus_targets()

    # -- the interface ---------------------------------------------------------------------

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        """Every workload of ``target``: its recorded instances, which of them are alive and
        answer ``/v2/health/ready``, and a failure when the workload cannot recover alone."""
        workloads = {w.deployment_id: w for w in self._read_workloads() if self._belongs(w, target)}
        instances: dict[str, list[_InstanceRecord]] = {}
        for record in self._read_instances():
            if self._belongs(record, target):
                instances.setdefault(record.deployment_id, []).append(record)
        statuses: dict[uuid.UUID, WorkloadStatus] = {}
        with httpx.Client(timeout=self._ready_timeout, trust_env=False) as client:
            for deployment_id in sorted(workloads.keys() | instances.keys()):
                status = self._status(
                    workloads.get(deployment_id), instances.get(deployment_id, []), client=client
                )
                statuses[status.deployment_id] = status
        return statuses

    def apply(self, target: Target, workloads: Sequence[Workload]) -> None:
        """Make each workload's end state true; never waits for readiness (it waits only for
        stopped servers to exit). Raises :class:`PermanentError` for a workload that cannot
        run (before anything is changed), :class:`TemporaryError` when a process cannot be
        started."""
        for workload in workloads:
            check_workload(workload)
            _memory_limit(workload)  # a bad strategyParams.resources.limits.memory refuses too
        try:
            for workload in workloads:
                self._apply_workload(target, workload)
        finally:
            self.write_prometheus_targets()

    def owned(self) -> list[OwnedWorkload]:
        """Every workload recorded in the state folder, of any target: those with a workload
        record and those with only instance records (a crash between the two writes)."""
        workloads = {w.deployment_id: w for w in self._read_workloads()}
        instances: dict[str, list[_InstanceRecord]] = {}
        for record in self._read_instances():
            instances.setdefault(record.deployment_id, []).append(record)
        found = []
        for deployment_id in sorted(workloads.keys() | instances.keys()):
            workload = workloads.get(deployment_id)
            records = instances.get(deployment_id, [])
            first: _WorkloadRecord | _InstanceRecord = workload or records[0]
            try:
                parsed, model_id = uuid.UUID(deployment_id), uuid.UUID(first.model_id)
            except ValueError:
                self._log.warning("ignoring the unreadable records of deployment %r", deployment_id)
                continue
            found.append(
                OwnedWorkload(
                    deployment_id=parsed,
                    target=Target(
                        kind="local",
                        model=first.model,
                        model_id=model_id,
                        environment=first.environment,
                    ),
                    version_number=first.version_number,
                    parts=self._parts(workload, records),
                )
            )
        return found

    def remove(self, workload: OwnedWorkload) -> None:
        """Stop the workload's servers (SIGTERM, then SIGKILL) and delete its records."""
        deployment_id = str(workload.deployment_id)
        try:
            self._stop(
                [r for r in self._read_instances() if r.deployment_id == deployment_id],
                quiet=True,
            )
            self._workload_path(deployment_id).unlink(missing_ok=True)
        finally:
            self.write_prometheus_targets()

    def _parts(self, workload: _WorkloadRecord | None, records: Sequence[_InstanceRecord]) -> str:
        if workload is not None and workload.is_api and not records:
            return f"the record of an API workload ({workload.endpoint}; no process)"
        pids = [r.pid for r in records if self._refresh(r)]
        exited = len(records) - len(pids)
        parts = []
        if pids:
            many = "es" if len(pids) > 1 else ""
            listed = ", ".join(map(str, pids))
            parts.append(f"{len(pids)} model-server process{many} (pid{many[1:]} {listed})")
        if exited:
            parts.append(f"the records of {exited} exited one(s)")
        return " and ".join(parts) or "a workload record without servers"

    # -- Prometheus ------------------------------------------------------------------------

    def prometheus_targets(self) -> list[dict[str, Any]]:
        """Prometheus ``file_sd`` groups: one per recorded server, labelled with its
        environment and deployment (the servers' own samples carry model and version)."""
        groups = []
        for record in self._read_instances():
            groups.append(
                {
                    "targets": [f"127.0.0.1:{record.port}"],
                    "labels": {
                        "job": "modelreg-model-server",
                        "environment": record.environment,
                        "deployment_id": record.deployment_id,
                    },
                }
            )
        return groups

    def write_prometheus_targets(self) -> None:
        """Rewrite ``prometheus-targets.json`` in the state folder when the servers changed;
        point a ``file_sd_configs`` entry at it (see docs/metrics.md)."""
        path = self.targets_path
        groups = self.prometheus_targets()
        current = _read_json_list(path)
        if current != groups:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(groups, indent=1))
            os.replace(tmp, path)

    @property
    def targets_path(self) -> Path:
        return self.state_dir / "prometheus-targets.json"

    # -- applying --------------------------------------------------------------------------

    def _apply_workload(self, target: Target, workload: Workload) -> None:
        deployment_id = str(workload.deployment_id)
        records = [r for r in self._read_instances() if r.deployment_id == deployment_id]
        if workload.replicas == 0:
            self._stop(records)
            self._workload_path(deployment_id).unlink(missing_ok=True)
            return
        version = workload.version
        record = _WorkloadRecord(
            deployment_id=deployment_id,
            model_id=str(target.model_id),
            model=target.model,
            environment=target.environment,
            version_id=str(version.id),
            version_number=version.number,
            version_format=version.format,
            endpoint=version.endpoint,
            replicas=workload.replicas,
            role=workload.role,
        )
        path = self._workload_path(deployment_id)
        if _read_json(path) != asdict(record):
            _write_json(path, asdict(record))
        keep = {
            r.replica: r
            for r in records
            if not record.is_api
            and r.version_id == record.version_id
            and r.replica < workload.replicas
        }
        self._stop([r for r in records if keep.get(r.replica) is not r])
        if record.is_api:
            return
        alive = {replica: self._refresh(r) for replica, r in keep.items()}
        keep = {replica: self._reread(r) for replica, r in keep.items()}  # with exit codes
        current = [keep[replica] for replica in sorted(keep)]
        if self._failure(current, alive=alive) is not None:
            return  # a digest mismatch or a crash loop: left down until the version changes
        for replica in range(workload.replicas):
            previous = keep.get(replica)
            if previous is None:
                self._start(target, workload, replica=replica)
            elif not alive[replica]:
                self._start(target, workload, replica=replica, previous=previous)

    def _start(
        self,
        target: Target,
        workload: Workload,
        *,
        replica: int,
        previous: _InstanceRecord | None = None,
    ) -> _InstanceRecord:
        version = workload.version
        assert version.artifact_key is not None
        assert version.sha256 is not None
        deployment_id = str(workload.deployment_id)
        port = _pick_free_port()
        memory = _memory_limit(workload)
        source = ["--artifact-key", version.artifact_key]
        if self._artifacts is not None:
            source = ["--artifact", str(self._copy_artifact(target, workload))]
        limits = Limits(memory_bytes=memory)
        command = limited_argv(
            "api.cli",
            [
                "serve-model",
                "--model",
                target.model,
                "--version",
                version.number,
                "--port",
                str(port),
                *source,
                "--sha256",
                version.sha256,
                *(["--model-file", version.model_file] if version.model_file else []),
            ],
            limits,
            python=self._python,
        )
        log_path = self._logs_dir / f"{deployment_id}-{replica}.log"
        started_at = datetime.now(UTC)
        try:
            with log_path.open("a") as out:
                out.write(f"--- {started_at.isoformat()} {shlex.join(command)}\n")
            # A session of its own (start_new_session): it outlives a killed controller.
            env = limited_env(self._env, limits)
            pid = spawn_child(command, env=env, output=log_path, setsid=True, mode=0o644)
        except OSError as exc:
            raise TemporaryError(
                f"cannot start the model server for {target.model} {version.number} "
                f"(deployment {deployment_id}): {exc}"
            ) from exc
        state = _process_state(pid)
        record = _InstanceRecord(
            deployment_id=deployment_id,
            model_id=str(target.model_id),
            model=target.model,
            environment=target.environment,
            version_id=str(version.id),
            version_number=version.number,
            sha256=version.sha256,
            artifact_key=version.artifact_key,
            replica=replica,
            pid=pid,
            port=port,
            url=f"http://127.0.0.1:{port}",
            started_at=started_at.isoformat(),
            proc_start=state[1] if state is not None else 0,
            restarts=0 if previous is None else previous.restarts + 1,
            last_exit_code=None,
            log_path=str(log_path),
        )
        self._save(record)
        if previous is None:
            self._log.info("started %s", record.describe())
        else:
            self._log.warning(
                "restarted %s (restart %d; the previous pid %d %s)",
                record.describe(),
                record.restarts,
                previous.pid,
                _exit_text(previous.last_exit_code),
            )
        return record

    def _copy_artifact(self, target: Target, workload: Workload) -> Path:
        """A local copy of the version's artifact, from ``artifacts``: ``<sha256>.onnx`` once
        its digest is verified (kept for restarts and replicas). A copy whose digest differs
        is handed over as ``<sha256>.mismatch``: the server refuses it with exit code 2, as it
        refuses a tampered artifact it downloads itself."""
        version = workload.version
        assert self._artifacts is not None
        assert version.artifact_key is not None
        assert version.sha256 is not None
        folder = self.state_dir / "artifacts"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{version.sha256}.onnx"
        if path.is_file():
            return path  # verified when it was copied; the server hashes it again
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{version.sha256}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._artifacts.open_range(version.artifact_key):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != version.sha256:
                path = folder / f"{version.sha256}.mismatch"
            os.replace(tmp, path)
        except (RegistryError, OSError) as exc:
            Path(tmp).unlink(missing_ok=True)
            raise TemporaryError(
                f"cannot copy the artifact of {target.model} {version.number} "
                f"(deployment {workload.deployment_id}) from {self._artifacts.describe()}: {exc}"
            ) from exc
        return path

    def _stop(self, records: Sequence[_InstanceRecord], *, quiet: bool = False) -> None:
        """SIGTERM the live ones, SIGKILL those still running after the grace period, and
        forget all of them. ``quiet``: the caller says in one line what was stopped, so the
        ordinary line per server is a debug one (trouble is still a warning)."""
        done = self._log.debug if quiet else self._log.info
        running = [r for r in records if self._refresh(r)]
        was_running = {r.pid for r in running}
        for record in running:
            _signal(record.pid, signal.SIGTERM)
        running = self._wait_exited(running, timeout=STOP_GRACE_SECONDS)
        for record in running:
            self._log.warning("%s ignored SIGTERM: killing it", record.describe())
            _signal(record.pid, signal.SIGKILL)
        running = self._wait_exited(running, timeout=KILL_WAIT_SECONDS)
        for record in records:
            self._instance_path(record.deployment_id, record.replica).unlink(missing_ok=True)
            if any(r is record for r in running):
                self._log.error("could not stop %s: forgetting it anyway", record.describe())
            elif record.pid in was_running:
                done("stopped %s", record.describe())
            else:
                done("forgot the exited %s", record.describe())

    def _wait_exited(
        self, records: Sequence[_InstanceRecord], *, timeout: float
    ) -> list[_InstanceRecord]:
        deadline = time.monotonic() + timeout
        running = list(records)
        while running and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            running = [r for r in running if self._refresh(r, stopping=True)]
        return running

    # -- observing -------------------------------------------------------------------------

    def _status(
        self,
        workload: _WorkloadRecord | None,
        records: Sequence[_InstanceRecord],
        *,
        client: httpx.Client,
    ) -> WorkloadStatus:
        if workload is None:  # instances without a workload record: report what runs
            first = min(records, key=lambda r: r.replica)
            deployment_id, version_id, replicas = first.deployment_id, first.version_id, None
        else:
            deployment_id, version_id = workload.deployment_id, workload.version_id
            replicas = workload.replicas
        if workload is not None and workload.is_api:
            return WorkloadStatus(
                deployment_id=uuid.UUID(deployment_id),
                version_id=uuid.UUID(version_id),
                replicas=workload.replicas,
                ready_replicas=workload.replicas,
                url=workload.endpoint,
            )
        current = sorted(
            (r for r in records if r.version_id == version_id), key=lambda r: r.replica
        )
        alive = {r.replica: self._refresh(r) for r in current}
        current = [self._reread(r) for r in current]
        instances = tuple(
            Instance(
                url=r.url,
                ready=alive[r.replica] and self._answers_ready(r, client=client),
                pid=r.pid,
                port=r.port,
                started_at=datetime.fromisoformat(r.started_at),
                name=f"{r.model}-{r.version_number}-{r.replica}",
            )
            for r in current
        )
        ready = [i for i in instances if i.ready]
        url = ready[0].url if ready else (instances[0].url if instances else None)
        return WorkloadStatus(
            deployment_id=uuid.UUID(deployment_id),
            version_id=uuid.UUID(version_id),
            replicas=len(current) if replicas is None else replicas,
            ready_replicas=len(ready),
            url=url,
            instances=instances,
            failure=self._failure(current, alive=alive),
            restarts=sum(r.restarts for r in current),
        )

    def _answers_ready(self, record: _InstanceRecord, *, client: httpx.Client) -> bool:
        try:
            answer = client.get(f"{record.url}/v2/health/ready")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _failure(
        self, records: Iterable[_InstanceRecord], *, alive: Mapping[int, bool]
    ) -> str | None:
        """Why the workload cannot become ready by itself, or ``None``: an instance refused
        its artifact (exit code 2), or crashed more than ``max_restarts`` times."""
        for record in records:
            if alive[record.replica]:
                continue
            record = self._reread(record)
            code = record.last_exit_code
            if code == DIGEST_MISMATCH_EXIT:
                return f"model server exited with code {code}: {_log_tail(Path(record.log_path))}"
            if record.restarts >= self._max_restarts:
                return (
                    f"model server {_exit_text(code)}, crash {record.restarts + 1} "
                    f"(more than max_restarts={self._max_restarts}): "
                    f"{_log_tail(Path(record.log_path))}"
                )
        return None

    # -- records ---------------------------------------------------------------------------

    def _refresh(self, record: _InstanceRecord, *, stopping: bool = False) -> bool:
        """Whether the instance's process is alive. A child that has exited is reaped here and
        its exit code saved in its record (a warning, unless ``stopping``: we signalled it)."""
        state = _process_state(record.pid)
        if state is None or state[1] != record.proc_start:
            return False  # gone, or the pid now belongs to another process
        code = _reap(record.pid)
        if code is not None:
            (self._log.debug if stopping else self._log.warning)(
                "%s %s", record.describe(), _exit_text(code)
            )
            if self._instance_path(record.deployment_id, record.replica).exists():
                self._save(replace(self._reread(record), last_exit_code=code))
            return False
        return state[0] != "Z"

    def _reread(self, record: _InstanceRecord) -> _InstanceRecord:
        """The record as saved now (``_refresh`` may have added an exit code)."""
        data = _read_json(self._instance_path(record.deployment_id, record.replica))
        if data is None or data.get("pid") != record.pid:
            return record
        return _InstanceRecord(**data)

    def _save(self, record: _InstanceRecord) -> None:
        _write_json(self._instance_path(record.deployment_id, record.replica), asdict(record))

    def _workload_path(self, deployment_id: str) -> Path:
        return self._workloads_dir / f"{deployment_id}.json"

    def _instance_path(self, deployment_id: str, replica: int) -> Path:
        return self._instances_dir / f"{deployment_id}-{replica}.json"

    def _read_workloads(self) -> list[_WorkloadRecord]:
        found = []
        for path in sorted(self._workloads_dir.glob("*.json")):
            data = _read_json(path)
            if data is not None:
                found.append(_WorkloadRecord(**data))
        return found

    def _read_instances(self) -> list[_InstanceRecord]:
        found = []
        for path in sorted(self._instances_dir.glob("*.json")):
            data = _read_json(path)
            if data is not None:
                found.append(_InstanceRecord(**data))
        return found

    @staticmethod
    def _belongs(record: _WorkloadRecord | _InstanceRecord, target: Target) -> bool:
        return record.model_id == str(target.model_id) and record.environment == target.environment

    def _announce_adopted(self) -> None:
        for record in self._read_instances():
            if self._refresh(record):
                self._log.info("adopted %s", record.describe())


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, signum)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown)"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
