"""The local deployer's state folder: the files, not the deployer, are the state.

Every workload (the replicas and version the last ``apply`` asked for) is recorded in a JSON
file under ``workloads/``, every instance (one replica's server process) under
``instances/``; every instance writes its output to ``logs/``. Artifacts copied for servers
that cannot read the store themselves are kept in ``artifacts/``, and the servers are listed
for Prometheus in ``prometheus-targets.json``. Records are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployers.base import Target, TemporaryError, Workload
from registry.errors import RegistryError
from registry.vocabulary import ArtifactFormat

if TYPE_CHECKING:
    from registry.storage import ArtifactStore

__all__ = ["InstanceRecord", "StateFolder", "WorkloadRecord"]

_log = logging.getLogger("modelreg.deployers.local")


@dataclass(frozen=True)
class WorkloadRecord:
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
        return self.version_format == ArtifactFormat.API


@dataclass(frozen=True)
class InstanceRecord:
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


def write_json(path: Path, data: Mapping[str, Any]) -> None:
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


def read_json_list(path: Path) -> list[Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def read_json(path: Path) -> dict[str, Any] | None:
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


class StateFolder:
    """The records, logs and artifact copies under one folder; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._workloads_dir = root / "workloads"
        self._instances_dir = root / "instances"
        self._logs_dir = root / "logs"
        for folder in (self._workloads_dir, self._instances_dir, self._logs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # -- workloads -------------------------------------------------------------------------

    def read_workloads(self) -> list[WorkloadRecord]:
        found = []
        for path in sorted(self._workloads_dir.glob("*.json")):
            data = read_json(path)
            if data is not None:
                found.append(WorkloadRecord(**data))
        return found

    def write_workload(self, record: WorkloadRecord) -> None:
        """Record what ``apply`` asked of the deployment; the file is rewritten only when that
        changed."""
        path = self._workload_path(record.deployment_id)
        if read_json(path) != asdict(record):
            write_json(path, asdict(record))

    def forget_workload(self, deployment_id: str) -> None:
        self._workload_path(deployment_id).unlink(missing_ok=True)

    def _workload_path(self, deployment_id: str) -> Path:
        return self._workloads_dir / f"{deployment_id}.json"

    # -- instances -------------------------------------------------------------------------

    def read_instances(self) -> list[InstanceRecord]:
        found = []
        for path in sorted(self._instances_dir.glob("*.json")):
            data = read_json(path)
            if data is not None:
                found.append(InstanceRecord(**data))
        return found

    def save(self, record: InstanceRecord) -> None:
        write_json(self._instance_path(record.deployment_id, record.replica), asdict(record))

    def reread(self, record: InstanceRecord) -> InstanceRecord:
        """The record as saved now (an exit code may have been added since)."""
        data = read_json(self._instance_path(record.deployment_id, record.replica))
        if data is None or data.get("pid") != record.pid:
            return record
        return InstanceRecord(**data)

    def is_recorded(self, record: InstanceRecord) -> bool:
        return self._instance_path(record.deployment_id, record.replica).exists()

    def forget(self, record: InstanceRecord) -> None:
        self._instance_path(record.deployment_id, record.replica).unlink(missing_ok=True)

    def _instance_path(self, deployment_id: str, replica: int) -> Path:
        return self._instances_dir / f"{deployment_id}-{replica}.json"

    def log_path(self, deployment_id: str, replica: int) -> Path:
        """Where the server of one replica writes its output, run after run."""
        return self._logs_dir / f"{deployment_id}-{replica}.log"

    # -- Prometheus ------------------------------------------------------------------------

    def prometheus_targets(self) -> list[dict[str, Any]]:
        """Prometheus ``file_sd`` groups: one per recorded server, labelled with its
        environment and deployment (the servers' own samples carry model and version)."""
        groups = []
        for record in self.read_instances():
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
        """Rewrite ``prometheus-targets.json`` when the servers changed; point a
        ``file_sd_configs`` entry at it (see docs/metrics.md)."""
        path = self.targets_path
        groups = self.prometheus_targets()
        current = read_json_list(path)
        if current != groups:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(groups, indent=1))
            os.replace(tmp, path)

    @property
    def targets_path(self) -> Path:
        return self.root / "prometheus-targets.json"

    # -- artifacts -------------------------------------------------------------------------

    def copy_artifact(self, store: ArtifactStore, *, target: Target, workload: Workload) -> Path:
        """A local copy of the version's artifact, from ``store``: ``<sha256>.onnx`` once
        its digest is verified (kept for restarts and replicas). A copy whose digest differs
        is handed over as ``<sha256>.mismatch``: the server refuses it with exit code 2, as it
        refuses a tampered artifact it downloads itself."""
        version = workload.version
        assert version.artifact_key is not None
        assert version.sha256 is not None
        folder = self.root / "artifacts"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{version.sha256}.onnx"
        if path.is_file():
            return path  # verified when it was copied; the server hashes it again
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{version.sha256}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in store.open_range(version.artifact_key):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != version.sha256:
                path = folder / f"{version.sha256}.mismatch"
            os.replace(tmp, path)
        except (RegistryError, OSError) as exc:
            Path(tmp).unlink(missing_ok=True)
            raise TemporaryError(
                f"cannot copy the artifact of {target.model} {version.number} "
                f"(deployment {workload.deployment_id}) from {store.describe()}: {exc}"
            ) from exc
        return path
