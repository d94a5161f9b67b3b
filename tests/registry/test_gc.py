"""``modelreg gc``: orphaned artifact objects go, anything the database references stays.

Every test runs on both stores (a local directory, and S3 on SeaweedFS) and both databases.
"Old" is simulated by passing ``now`` two days ahead, which the store's timestamps cannot fake.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from registry.models import (
    AIModelDeployment,
    AIModelValidationResult,
    AIModelVersion,
    ArtifactUpload,
)
from registry.services import Registry
from registry.settings import Settings
from registry.storage import ArtifactStore, HashingReader
from registry.storage.local import LocalStore
from registry.types import utcnow
from tests.support.helpers import make_model, make_version, pass_validation, upload
from tests.support.s3server import SeaweedS3

pytest_plugins = ["tests.support.s3server"]

DAY = timedelta(days=1)
ORPHAN = "models/m-gone/versions/v-gone/model.onnx"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, settings: Settings) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(settings.artifact_root)
    s3: SeaweedS3 = request.getfixturevalue("seaweed")
    return s3.store(s3.new_bucket())


def put(store: ArtifactStore, key: str, data: bytes = b"orphan bytes") -> None:
    store.put(key, HashingReader([data], max_bytes=1 << 20))


def uploaded_key(http: httpx.Client, registry: Registry, model: str) -> str:
    make_model(http, model)
    make_version(http, model, "1.0")
    assert upload(http, model, "1.0", b"\x08\x01" * 64).status_code == 201
    with registry.sessions() as s:
        version = s.query(AIModelVersion).one()
        assert version.source_path is not None
        return version.source_path


def test_old_orphan_is_removed_and_a_young_one_kept(registry: Registry) -> None:
    put(registry.store, ORPHAN, b"x" * 100)
    young = registry.gc.collect(older_than=DAY, dry_run=False)
    assert (young.scanned, young.too_young, young.removed) == (1, 1, 0)
    assert registry.store.exists(ORPHAN)

    old = registry.gc.collect(older_than=DAY, dry_run=False, now=utcnow() + 2 * DAY)
    assert (old.removed, old.removed_bytes, old.keys) == (1, 100, [ORPHAN])
    assert list(registry.store.list_keys()) == []


def test_dry_run_removes_nothing(registry: Registry) -> None:
    put(registry.store, ORPHAN)
    report = registry.gc.collect(older_than=DAY, dry_run=True, now=utcnow() + 2 * DAY)
    assert report.dry_run
    assert (report.removed, report.keys) == (1, [ORPHAN])
    assert registry.store.exists(ORPHAN)


def test_objects_outside_the_artifact_prefix_are_not_touched(registry: Registry) -> None:
    put(registry.store, "backups/db.dump")
    report = registry.gc.collect(older_than=DAY, dry_run=False, now=utcnow() + 2 * DAY)
    assert report.scanned == 0
    assert registry.store.exists("backups/db.dump")


def test_referenced_artifacts_are_kept(
    http: httpx.Client, registry: Registry, admin_token: str
) -> None:
    """A version's artifact stays; so does one whose version has a deployment and a validation
    result, while an orphan beside them goes."""
    plain = uploaded_key(http, registry, "plain")
    make_model(http, "deployed")
    make_version(http, "deployed", "1.0")
    assert upload(http, "deployed", "1.0", b"\x08\x02" * 64).status_code == 201
    assert pass_validation(registry) >= 1
    with registry.sessions.begin() as s:
        version = s.query(AIModelVersion).filter(AIModelVersion.source_path != plain).one()
        deployed = version.source_path
        assert deployed is not None
        assert s.query(AIModelValidationResult).filter_by(model_version_id=version.id).count()
        s.add(
            AIModelDeployment(
                model_version_id=version.id, environment="production", status="Inactive"
            )
        )
    put(registry.store, ORPHAN)

    report = registry.gc.collect(older_than=timedelta(0), dry_run=False, now=utcnow() + 2 * DAY)
    assert report.keys == [ORPHAN]
    assert report.referenced == 2
    assert sorted(registry.store.list_keys()) == sorted([plain, deployed])


def test_an_object_of_a_live_upload_is_kept_and_of_an_expired_one_removed(
    http: httpx.Client, registry: Registry
) -> None:
    make_model(http, "m")
    version_id = uuid.UUID(make_version(http, "m", "1.0")["id"])
    live = f"models/m/versions/{version_id}/live.onnx"
    put(registry.store, live)
    now = utcnow()
    with registry.sessions.begin() as s:
        version = s.get_one(AIModelVersion, version_id)
        s.add(
            ArtifactUpload(
                model_version_id=version.id,
                token=version.id,
                object_key=live,
                started_at=now,
                expires_at=now + 3 * DAY,
            )
        )
    report = registry.gc.collect(older_than=DAY, dry_run=False, now=now + 2 * DAY)
    assert (report.referenced, report.removed) == (1, 0)
    assert registry.store.exists(live)

    report = registry.gc.collect(older_than=DAY, dry_run=False, now=now + 4 * DAY)
    assert report.keys == [live]
    assert not registry.store.exists(live)


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_env(settings: Settings, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    if not isinstance(registry.store, LocalStore):
        pytest.skip("the CLI is tested on the local store; the service on both")
    monkeypatch.setenv("MODELREG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MODELREG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MODELREG_STORAGE", "local")
    monkeypatch.setenv("MODELREG_ARTIFACT_DIR", str(settings.artifact_root))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _age(store: ArtifactStore, key: str, seconds: float) -> None:
    assert isinstance(store, LocalStore)
    then = time.time() - seconds
    os.utime(store.root / key, (then, then))


def test_cli_gc(cli_env: CliRunner, registry: Registry) -> None:
    put(registry.store, ORPHAN, b"y" * 10)
    young = "models/m-young/versions/v/model.onnx"
    put(registry.store, young)
    _age(registry.store, ORPHAN, 2 * 3600)

    dry = cli_env.invoke(app, ["gc", "--dry-run", "--older-than", "1h", "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output)
    assert report["dryRun"] is True
    assert (report["scanned"], report["removed"], report["tooYoung"]) == (2, 1, 1)
    assert report["keys"] == [ORPHAN]
    assert registry.store.exists(ORPHAN)

    table = cli_env.invoke(app, ["gc", "--older-than", "1h"])
    assert table.exit_code == 0, table.output
    assert "Garbage collection" in table.output
    assert ORPHAN in table.output
    assert not registry.store.exists(ORPHAN)
    assert registry.store.exists(young)

    default = cli_env.invoke(app, ["gc", "--json"])  # 24h: the young one stays
    assert json.loads(default.output)["removed"] == 0
    assert registry.store.exists(young)


def test_cli_gc_refuses_a_bad_duration(cli_env: CliRunner) -> None:
    result = cli_env.invoke(app, ["gc", "--older-than", "soon"])
    assert result.exit_code == 2
    assert "duration" in result.output


def test_local_listing_reports_size_and_age(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    put(store, ORPHAN, b"z" * 7)
    (info,) = store.list_objects("models/")
    assert (info.key, info.size) == (ORPHAN, 7)
    assert abs((utcnow() - info.last_modified).total_seconds()) < 60
