"""The one place where configuration is read: ``MODELREG_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.children import available_cores, available_memory, parse_memory

GiB = 1024**3
MiB = 1024**2


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelreg"


def default_validation_concurrency(memory_cap: int) -> int:
    """One validator child per core this process may run on, but no more children than fit,
    each at its memory cap (``memory_cap`` bytes, 0: none), in the memory this process may
    use; at least one."""
    cores = available_cores()
    if memory_cap <= 0:
        return cores
    memory = available_memory()
    if memory is None:
        return cores
    return max(1, min(cores, memory // memory_cap))


class Settings(BaseSettings):
    """Every setting modelreg reads. ``MODELREG_DATABASE_URL`` sets ``database_url``, and so on."""

    model_config = SettingsConfigDict(env_prefix="MODELREG_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    """SQLAlchemy URL. Empty means an SQLite file in ``data_dir``.
    For PostgreSQL name the driver: ``postgresql+psycopg://user@host/db``."""

    storage: Literal["local", "s3"] = "local"
    artifact_dir: Path | None = None
    """Root of the local artifact store. Empty means ``data_dir/artifacts``."""

    s3_endpoint: str = "127.0.0.1:9000"
    """host:port of the S3 service (no scheme; ``s3_secure`` picks https)."""
    s3_bucket: str = "modelreg"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = True
    s3_region: str | None = None
    s3_part_size: int = 16 * MiB
    s3_create_bucket: bool = True

    max_artifact_bytes: int = 20 * GiB
    max_json_body_bytes: int = Field(default=4 * MiB, ge=1024)
    """The largest JSON request body (every request but an artifact upload); larger gets 413."""
    feedback_writers: int = Field(default=2, ge=1, le=64)
    """Feedback batches one API process writes at once (each in a thread); more wait their
    turn. It bounds what a flood of feedback takes from endpoint resolution in the same
    process (they share its interpreter lock): more writers, more feedback throughput under
    load, and slower resolution."""
    upload_lease_seconds: int = 120
    """How long an upload's claim on a version lives without a heartbeat."""
    upload_idle_timeout: float = Field(default=30.0, gt=0)
    """Seconds an artifact upload may go without receiving a byte; then it ends with 408 and
    nothing of it is kept (a stalled client does not hold an upload thread)."""
    uploads_per_key: int = Field(default=4, ge=1)
    """Concurrent artifact uploads one key's user may have (counted in the database's upload
    leases, so across replicas); beyond that 429."""
    validations_per_key: int = Field(default=20, ge=1)
    """Validation runs one key's user may have queued or running; a request beyond that is
    429. Uploads' runs count, but an upload is never refused for it."""

    worker_enabled: bool = True
    """Run the validation worker inside ``modelreg serve``."""
    validation_timeout_seconds: int = 900
    """A validation still running after this is killed and recorded as Failed."""
    validation_lease_seconds: int = 60
    worker_poll_seconds: float = 1.0
    validator_memory: int = Field(default=4 * GiB, ge=0)
    """The validator child's address-space limit (``RLIMIT_AS``), in bytes or as ``"4Gi"``,
    ``"512Mi"``; 0: none. A model that needs more fails with ``resource.memory-limit``."""
    validator_cpu_seconds: int = Field(default=1800, ge=0)
    """The validator child's CPU-time limit (``RLIMIT_CPU``, all threads together); 0: none.
    A run that uses more fails with ``resource.cpu-limit``."""
    validation_concurrency: int | None = None
    """Validator children one worker runs at once, each under ``validator_memory``. Empty: the
    cores this process may run on, fewer if that many children at their memory limit would
    not fit in the machine's (or the cgroup's) memory (``default_validation_concurrency``)."""

    auth_cache_seconds: float = 5.0
    """How long a verified API token is trusted without a database lookup. A revocation takes
    effect at once in the process that revoked it, and within this time in the others."""
    auth_failure_limit: int = Field(default=10, ge=1)
    """Failed authentications allowed per API key, and per client address, within
    ``auth_failure_window_seconds``; beyond them the API answers 429 until the window passes."""
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)
    auth_failure_address_limit: int = Field(default=100, ge=1)
    """The same budget for one client address. It is larger because an address is often
    shared (a NAT, a proxy) by clients with good keys."""
    trusted_proxies: str = ""
    """Comma-separated addresses or networks (``10.0.0.0/8``; ``*`` for any) of the reverse
    proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed. Empty (the
    default): none, and the client address is the peer of the TCP connection. The failed-auth
    throttle counts per client address, so a header believed from anyone else would let a
    caller pick a fresh address for every guess."""
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    """``modelreg serve`` closes a connection whose request line and headers have not all
    arrived this long after its first byte (or after the connection was opened): a client that
    sends nothing, or its headers a byte at a time, holds no server slot for longer."""
    keep_alive_seconds: int = Field(default=5, ge=1)
    """An idle kept-alive connection is closed after this many seconds without a new request."""
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """The largest request line plus headers ``modelreg serve`` reads; larger gets 431 (400
    when the HTTP parser itself gives up first) and the connection is closed."""
    max_connections: int = Field(default=2048, ge=1)
    """Open connections (and running requests) ``modelreg serve`` accepts at once; a request
    beyond them gets 503 at once instead of a queue that grows without bound."""
    metrics_token: SecretStr = SecretStr("")
    """When set, ``GET /metrics`` demands ``Authorization: Bearer <this token>`` (401
    otherwise). Empty (the default): ``/metrics`` is open, for a Prometheus on a private
    network."""

    controller_enabled: bool = True
    """Run the rollout controller inside ``modelreg serve``."""
    controller_interval_seconds: float = 2.0
    """How often the controller passes over every deployment."""
    controller_lease_seconds: float = 15.0
    """Leader election: a controller that stops renewing its lease loses it after this."""
    controller_metrics_port: int = 9464
    """The controller (``modelreg controller``, and the controller process of ``modelreg
    serve``) serves its Prometheus metrics on this port; 0: none. A port already taken is
    logged, and the controller runs without."""
    prometheus_url: str = ""
    """Prometheus's HTTP API (``http://prometheus:9090``) for the analysis gates of type
    ``prometheus``. Empty: such gates report an error, which holds the step."""
    server_state_dir: Path | None = None
    """Where the local deployer records its model-server processes. Empty: ``data_dir/servers``."""

    kube_enabled: bool = False
    """Accept deployments with ``target: kubernetes`` and run the Kubernetes deployer in the
    controller (needs the ``kubernetes`` extra and a kubeconfig or in-cluster account)."""
    kube_namespace: str = "modelreg-models"
    """Namespace the Kubernetes deployer creates model-server Deployments and Services in."""
    kube_image: str = "ghcr.io/modelreg/modelreg:0.1.0"
    """Image of the model servers (and of their fetch-artifact initContainer)."""
    kube_image_pull_secrets: list[str] = Field(default_factory=list)
    kube_router: Literal["none", "gateway-api", "istio"] = "none"
    """Also write the traffic split into the cluster: an HTTPRoute or a VirtualService."""
    kube_gateway_name: str = "modelreg"
    """gateway-api: the Gateway (in ``kube_namespace``) the HTTPRoutes attach to."""
    kube_artifact_secret: str = ""
    """Secret (in ``kube_namespace``) with MODELREG_S3_ACCESS_KEY / MODELREG_S3_SECRET_KEY for
    the fetch-artifact initContainer."""
    kube_progress_deadline_seconds: int = 600
    kube_context: str | None = None
    """kubeconfig context; empty: in-cluster config, else the current context."""

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    """URL the CLI credentials file points at. Empty means http://{host}:{port}."""

    auto_migrate: bool | None = None
    """Apply migrations when ``modelreg serve`` starts. Default: only for SQLite."""
    bootstrap_admin: bool = True
    """Create an admin key on first start when no API key exists."""
    credentials_file: Path = Field(
        default_factory=lambda: Path.home() / ".config" / "modelreg" / "credentials"
    )

    log_level: str = "INFO"

    @field_validator("validator_memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: object) -> object:
        if value in (0, "0"):
            return 0
        return parse_memory(value) if isinstance(value, str) else value

    @field_validator("validation_concurrency", mode="after")
    @classmethod
    def _check_concurrency(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(
                f"MODELREG_VALIDATION_CONCURRENCY must be at least 1 (validator children at "
                f"once per worker), not {value}; leave it unset for one per core"
            )
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'modelreg.db'}"
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        if self.server_state_dir is None:
            self.server_state_dir = self.data_dir / "servers"
        if self.validation_concurrency is None:
            self.validation_concurrency = default_validation_concurrency(self.validator_memory)
        if self.s3_part_size < 5 * MiB:
            raise ValueError("MODELREG_S3_PART_SIZE must be at least 5 MiB (the S3 minimum)")
        return self

    @property
    def client_url(self) -> str:
        """Where a client on this machine reaches the API: ``public_url``, or host and port."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def artifact_root(self) -> Path:
        assert self.artifact_dir is not None
        return self.artifact_dir
