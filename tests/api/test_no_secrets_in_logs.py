"""No log record ever contains an API secret, nor its SHA-256 (which is what the database keeps).

Every record at DEBUG is captured, the live server's access log included, while a key is
created, used with its right and a wrong secret, and revoked.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import httpx
import pytest
import urllib3
from pydantic import SecretStr
from sqlalchemy import text as sql

from registry.db import create_db_engine
from registry.services import build_registry
from registry.settings import Settings
from registry.storage.s3 import S3Store
from tests.support.live_server import LiveServer
from tests.support.ports import free_port


def test_the_logs_never_contain_a_secret(
    server: LiveServer, admin_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addHandler(caplog.handler)
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
        ) as admin:
            created = admin.post("/api/v1/keys", json={"name": "ci", "scopes": ["models:read"]})
            assert created.status_code == 201, created.text
            token: str = created.json()["token"]
            api_key, secret = token.split(".")
            wrong = f"{api_key}.{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
            with httpx.Client(base_url=server.url, timeout=30) as anyone:
                for attempt in (token, wrong, token, f"{token}x"):
                    anyone.get("/api/v1/models", headers={"Authorization": f"Bearer {attempt}"})
            assert admin.post(f"/api/v1/keys/{api_key}/revoke").status_code == 200
            httpx.get(
                f"{server.url}/api/v1/models",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
    finally:
        for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).removeHandler(caplog.handler)

    forbidden = {
        "secret": secret,
        "sha256(secret)": hashlib.sha256(secret.encode()).hexdigest(),
        "sha256(token)": hashlib.sha256(token.encode()).hexdigest(),
        "admin secret": admin_token.split(".")[1],
        "sha256(admin secret)": hashlib.sha256(admin_token.split(".")[1].encode()).hexdigest(),
    }
    assert caplog.records, "nothing was logged: the capture is not working"
    for record in caplog.records:
        texts = [str(record.msg), record.getMessage(), repr(record.args)]
        for what, value in forbidden.items():
            for text in texts:
                assert value not in text, f"{what} in a {record.name} log record: {text[:300]}"


def test_sql_logging_never_shows_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Even with SQLAlchemy's statement logging on, bound values (a secret hash) are hidden."""
    secret_hash = "sha256$" + hashlib.sha256(b"not-a-real-secret").hexdigest()
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    engine.echo = True
    try:
        with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"), engine.begin() as conn:
            conn.execute(sql("CREATE TABLE t (h TEXT)"))
            conn.execute(sql("INSERT INTO t (h) VALUES (:h)"), {"h": secret_hash})
    finally:
        engine.dispose()
    logged = " ".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "INSERT INTO t" in logged, "the statement itself is logged"
    assert secret_hash not in logged


def test_outage_and_metrics_logs_never_contain_a_credential(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """What failed goes to the log (readiness, 503s), the S3 secret key and the metrics token
    never do."""
    s3_secret = "s3-secret-key-9d1c"
    metrics_token = "metrics-token-77ab"
    store = S3Store(
        endpoint=f"127.0.0.1:{free_port()}",  # nothing listens: every call fails
        bucket="artifacts",
        access_key="access",
        secret_key=s3_secret,
        secure=False,
        http_client=urllib3.PoolManager(retries=False, timeout=5),
    )
    guarded = settings.model_copy(update={"metrics_token": SecretStr(metrics_token)})
    registry = build_registry(guarded, store=store)
    caplog.set_level(logging.DEBUG)
    try:
        issued = registry.keys.bootstrap_admin()
        assert issued is not None
        with LiveServer(registry) as server:
            assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 503
            admin = {"Authorization": f"Bearer {issued.token}"}
            with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
                assert http.post("/api/v1/models", json=MODEL).status_code == 201
                assert http.post("/api/v1/models/m/versions", json={"versionNumber": "1"})
                put = http.put("/api/v1/models/m/versions/1/artifact", content=b"x")
                assert put.status_code == 503, put.text
            for token in (metrics_token, metrics_token[:-1]):
                httpx.get(
                    f"{server.url}/metrics",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
    finally:
        registry.close()
    texts = [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any("unavailable" in t for t in texts), "the outage is logged"
    for secret in (s3_secret, metrics_token, metrics_token[:-1]):
        assert not [t for t in texts if secret in t], secret


MODEL = {"name": "m", "taskType": "ImageGeneration", "provider": "Internal"}
