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
from sqlalchemy import text as sql

from registry.db import create_db_engine
from tests.conftest import LiveServer


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
