"""Shared fixtures: every persistence and API test runs on SQLite and on PostgreSQL.

PostgreSQL is used when ``MODELREG_TEST_DATABASE_URL`` is set (an admin URL on a server where
the tests may create databases), or when one answers at 127.0.0.1:5432. Each test gets a
database of its own, cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

from modelreg_client import Client
from registry import migrate
from registry.services import Registry, build_registry
from registry.settings import Settings
from registry.storage import ArtifactStore
from tests.support.live_server import LiveServer

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_admin_url() -> URL | None:
    configured = os.environ.get("MODELREG_TEST_DATABASE_URL")
    url = make_url(configured or DEFAULT_PG)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            pass
    except OSError:
        if configured:
            pytest.exit(
                f"MODELREG_TEST_DATABASE_URL is set but {url.host}:{url.port} does not answer",
                returncode=3,
            )
        return None
    return url


@pytest.fixture(autouse=True)
def _fresh_test_clock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Modules that drive the controller with a fake clock (``T0 + seconds``) also call code
    that reads the wall clock (a rollback checks the old servers' scale-down time against
    now), so their ``T0`` must be near now when each test starts, not when the module was
    imported: in a full run a module may run many minutes after its import."""
    if isinstance(getattr(request.module, "T0", None), datetime):
        monkeypatch.setattr(request.module, "T0", datetime.now(UTC).replace(microsecond=0))


PG_ADMIN = _pg_admin_url()
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


class PgDatabases:
    """Creates per-test databases from one migrated template; drops them all at the end."""

    def __init__(self, admin: URL) -> None:
        self.admin = admin
        self.engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        self.template = f"modelreg_tpl_{RUN_ID}"
        self.count = 0
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        migrate.upgrade(self.url(self.template))

    def url(self, name: str) -> str:
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def new(self) -> tuple[str, str]:
        self.count += 1
        name = f"modelreg_t_{RUN_ID}_{self.count}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name, self.url(name)

    def new_empty(self) -> tuple[str, str]:
        self.count += 1
        name = f"modelreg_t_{RUN_ID}_{self.count}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return name, self.url(name)

    def drop(self, name: str) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self.drop(self.template)
        self.engine.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases | None]:
    if PG_ADMIN is None:
        yield None
        return
    dbs = PgDatabases(PG_ADMIN)
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_databases: PgDatabases | None,
) -> Iterator[str]:
    """A freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "modelreg.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if pg_databases is None:
        pytest.skip("no PostgreSQL: set MODELREG_TEST_DATABASE_URL or run one on 127.0.0.1:5432")
    name, url = pg_databases.new()
    yield url
    pg_databases.drop(name)


@pytest.fixture
def empty_pg_url(pg_databases: PgDatabases | None) -> Iterator[str]:
    """An empty PostgreSQL database, not migrated."""
    if pg_databases is None:
        pytest.skip("no PostgreSQL: set MODELREG_TEST_DATABASE_URL or run one on 127.0.0.1:5432")
    name, url = pg_databases.new_empty()
    yield url
    pg_databases.drop(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage="local",
        credentials_file=tmp_path / "credentials",
        max_artifact_bytes=64 * 1024 * 1024,
    )


@pytest.fixture
def store(settings: Settings) -> ArtifactStore | None:
    """The artifact store the registry uses; S3 test modules override this."""
    return None


@pytest.fixture
def registry(settings: Settings, store: ArtifactStore | None) -> Iterator[Registry]:
    reg = build_registry(settings, store=store)
    yield reg
    reg.close()


@pytest.fixture
def admin_token(registry: Registry) -> str:
    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    return issued.token


@pytest.fixture
def server(registry: Registry) -> Iterator[LiveServer]:
    with LiveServer(registry) as live:
        yield live


@pytest.fixture
def client(server: LiveServer, admin_token: str) -> Iterator[Client]:
    with Client(server.url, admin_token) as c:
        yield c


@pytest.fixture
def http(server: LiveServer, admin_token: str) -> Iterator[httpx.Client]:
    """A raw HTTP client with the admin key, for checking status codes and headers."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    ) as c:
        yield c
