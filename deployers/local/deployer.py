"""The local deployer itself: it supervises one ``modelreg serve-model`` process per replica,
starting, restarting (up to ``max_restarts``) and stopping them, and tells their health from
their process and their ``/v2/health/ready``. What it knows lives in its
:class:`~deployers.local.state.StateFolder`.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from deployers.base import (
    Instance,
    OwnedWorkload,
    Target,
    TemporaryError,
    Workload,
    WorkloadStatus,
    check_workload,
)
from deployers.local.processes import (
    DIGEST_MISMATCH_EXIT,
    describe_exit,
    pick_free_port,
    read_log_tail,
    read_memory_limit,
    read_process_state,
    reap,
    send_signal,
    server_env,
)
from deployers.local.state import InstanceRecord, StateFolder, WorkloadRecord
from registry.children import Limits, limited_argv, limited_env
from registry.children import spawn as spawn_child
from registry.vocabulary import DeploymentTarget

if TYPE_CHECKING:
    from registry.storage import ArtifactStore

__all__ = ["LocalDeployer"]

STOP_GRACE_SECONDS = 5.0
KILL_WAIT_SECONDS = 2.0
POLL_SECONDS = 0.05

_log = logging.getLogger("modelreg.deployers.local")


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
        self._env = server_env(os.environ if env is None else env)
        self._artifacts = artifacts
        self._python = python
        self._ready_timeout = ready_timeout
        self._max_restarts = max_restarts
        self._log = log or _log
        self._state = StateFolder(state_dir)
        # Built once: building one (the CA bundle's load) per observe() was most of a pass's
        # time on a loaded machine, once per target in every pass.
        self._tls = ssl.create_default_context()
        self._announce_adopted()
        self.write_prometheus_targets()

    # -- the interface ---------------------------------------------------------------------

    def observe(self, target: Target) -> dict[uuid.UUID, WorkloadStatus]:
        """Every workload of ``target``: its recorded instances, which of them are alive and
        answer ``/v2/health/ready``, and a failure when the workload cannot recover alone."""
        workloads = {
            w.deployment_id: w for w in self._state.read_workloads() if self._belongs(w, target)
        }
        instances: dict[str, list[InstanceRecord]] = {}
        for record in self._state.read_instances():
            if self._belongs(record, target):
                instances.setdefault(record.deployment_id, []).append(record)
        statuses: dict[uuid.UUID, WorkloadStatus] = {}
        with httpx.Client(timeout=self._ready_timeout, trust_env=False, verify=self._tls) as client:
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
            read_memory_limit(workload)  # a bad strategyParams.resources.limits.memory refuses too
        try:
            for workload in workloads:
                self._apply_workload(target, workload)
        finally:
            self.write_prometheus_targets()

    def owned(self) -> list[OwnedWorkload]:
        """Every workload recorded in the state folder, of any target: those with a workload
        record and those with only instance records (a crash between the two writes)."""
        workloads = {w.deployment_id: w for w in self._state.read_workloads()}
        instances: dict[str, list[InstanceRecord]] = {}
        for record in self._state.read_instances():
            instances.setdefault(record.deployment_id, []).append(record)
        found = []
        for deployment_id in sorted(workloads.keys() | instances.keys()):
            workload = workloads.get(deployment_id)
            records = instances.get(deployment_id, [])
            first: WorkloadRecord | InstanceRecord = workload or records[0]
            try:
                parsed, model_id = uuid.UUID(deployment_id), uuid.UUID(first.model_id)
            except ValueError:
                self._log.warning("ignoring the unreadable records of deployment %r", deployment_id)
                continue
            found.append(
                OwnedWorkload(
                    deployment_id=parsed,
                    target=Target(
                        kind=DeploymentTarget.LOCAL,
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
                [r for r in self._state.read_instances() if r.deployment_id == deployment_id],
                quiet=True,
            )
            self._state.forget_workload(deployment_id)
        finally:
            self.write_prometheus_targets()

    def _parts(self, workload: WorkloadRecord | None, records: Sequence[InstanceRecord]) -> str:
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
        return self._state.prometheus_targets()

    def write_prometheus_targets(self) -> None:
        """Rewrite ``prometheus-targets.json`` in the state folder when the servers changed;
        point a ``file_sd_configs`` entry at it (see docs/metrics.md)."""
        self._state.write_prometheus_targets()

    @property
    def targets_path(self) -> Path:
        return self._state.targets_path

    # -- applying --------------------------------------------------------------------------

    def _apply_workload(self, target: Target, workload: Workload) -> None:
        deployment_id = str(workload.deployment_id)
        records = [r for r in self._state.read_instances() if r.deployment_id == deployment_id]
        if workload.replicas == 0:
            self._stop(records)
            self._state.forget_workload(deployment_id)
            return
        version = workload.version
        record = WorkloadRecord(
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
        self._state.write_workload(record)
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
        keep = {replica: self._state.reread(r) for replica, r in keep.items()}  # with exit codes
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
        previous: InstanceRecord | None = None,
    ) -> InstanceRecord:
        version = workload.version
        assert version.artifact_key is not None
        assert version.sha256 is not None
        deployment_id = str(workload.deployment_id)
        port = pick_free_port()
        memory = read_memory_limit(workload)
        source = ["--artifact-key", version.artifact_key]
        if self._artifacts is not None:
            copy = self._state.copy_artifact(self._artifacts, target=target, workload=workload)
            source = ["--artifact", str(copy)]
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
        log_path = self._state.log_path(deployment_id, replica)
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
        state = read_process_state(pid)
        record = InstanceRecord(
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
        self._state.save(record)
        if previous is None:
            self._log.info("started %s", record.describe())
        else:
            self._log.warning(
                "restarted %s (restart %d; the previous pid %d %s)",
                record.describe(),
                record.restarts,
                previous.pid,
                describe_exit(previous.last_exit_code),
            )
        return record

    def _stop(self, records: Sequence[InstanceRecord], *, quiet: bool = False) -> None:
        """SIGTERM the live ones, SIGKILL those still running after the grace period, and
        forget all of them. ``quiet``: the caller says in one line what was stopped, so the
        ordinary line per server is a debug one (trouble is still a warning)."""
        done = self._log.debug if quiet else self._log.info
        running = [r for r in records if self._refresh(r)]
        was_running = {r.pid for r in running}
        for record in running:
            send_signal(record.pid, signal.SIGTERM)
        running = self._wait_exited(running, timeout=STOP_GRACE_SECONDS)
        for record in running:
            self._log.warning("%s ignored SIGTERM: killing it", record.describe())
            send_signal(record.pid, signal.SIGKILL)
        running = self._wait_exited(running, timeout=KILL_WAIT_SECONDS)
        for record in records:
            self._state.forget(record)
            if any(r is record for r in running):
                self._log.error("could not stop %s: forgetting it anyway", record.describe())
            elif record.pid in was_running:
                done("stopped %s", record.describe())
            else:
                done("forgot the exited %s", record.describe())

    def _wait_exited(
        self, records: Sequence[InstanceRecord], *, timeout: float
    ) -> list[InstanceRecord]:
        deadline = time.monotonic() + timeout
        running = list(records)
        while running and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            running = [r for r in running if self._refresh(r, stopping=True)]
        return running

    # -- observing -------------------------------------------------------------------------

    def _status(
        self,
        workload: WorkloadRecord | None,
        records: Sequence[InstanceRecord],
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
        current = [self._state.reread(r) for r in current]
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

    def _answers_ready(self, record: InstanceRecord, *, client: httpx.Client) -> bool:
        try:
            answer = client.get(f"{record.url}/v2/health/ready")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _failure(
        self, records: Iterable[InstanceRecord], *, alive: Mapping[int, bool]
    ) -> str | None:
        """Why the workload cannot become ready by itself, or ``None``: an instance refused
        its artifact (exit code 2), or crashed more than ``max_restarts`` times."""
        for record in records:
            if alive[record.replica]:
                continue
            record = self._state.reread(record)
            code = record.last_exit_code
            log_path = Path(record.log_path)
            if code == DIGEST_MISMATCH_EXIT:
                return f"model server exited with code {code}: {read_log_tail(log_path)}"
            if record.restarts >= self._max_restarts:
                return (
                    f"model server {describe_exit(code)}, crash {record.restarts + 1} "
                    f"(more than max_restarts={self._max_restarts}): "
                    f"{read_log_tail(log_path)}"
                )
        return None

    # -- records ---------------------------------------------------------------------------

    def _refresh(self, record: InstanceRecord, *, stopping: bool = False) -> bool:
        """Whether the instance's process is alive. A child that has exited is reaped here and
        its exit code saved in its record (a warning, unless ``stopping``: we signalled it)."""
        state = read_process_state(record.pid)
        if state is None or state[1] != record.proc_start:
            return False  # gone, or the pid now belongs to another process
        code = reap(record.pid)
        if code is not None:
            (self._log.debug if stopping else self._log.warning)(
                "%s %s", record.describe(), describe_exit(code)
            )
            if self._state.is_recorded(record):
                self._state.save(replace(self._state.reread(record), last_exit_code=code))
            return False
        return state[0] != "Z"

    @staticmethod
    def _belongs(record: WorkloadRecord | InstanceRecord, target: Target) -> bool:
        return record.model_id == str(target.model_id) and record.environment == target.environment

    def running(self) -> list[InstanceRecord]:
        """The recorded instances whose process is alive."""
        return [record for record in self._state.read_instances() if self._refresh(record)]

    def _announce_adopted(self) -> None:
        for record in self.running():
            self._log.info("adopted %s", record.describe())
