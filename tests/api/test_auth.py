"""API keys: every route needs one, scopes are enforced, secrets are hashed, actions audited."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, select, update

from registry.auth import hash_secret
from registry.errors import Conflict, Unauthorized
from registry.models import APIClient, UsageLog, User
from registry.services import Registry
from registry.types import utcnow
from tests.support.helpers import assert_problem, make_model, make_version
from tests.support.live_server import LiveServer

ANY_ID = "00000000-0000-4000-8000-000000000000"

ROUTES = [
    pytest.param("GET", "/api/v1/models", "models:read", id="list-models"),
    pytest.param("POST", "/api/v1/models", "models:write", id="create-model"),
    pytest.param("GET", "/api/v1/models/m", "models:read", id="show-model"),
    pytest.param("PATCH", "/api/v1/models/m", "models:write", id="patch-model"),
    pytest.param("GET", "/api/v1/models/m/versions", "models:read", id="list-versions"),
    pytest.param("POST", "/api/v1/models/m/versions", "models:write", id="create-version"),
    pytest.param("GET", "/api/v1/models/m/versions/1", "models:read", id="show-version"),
    pytest.param("PATCH", "/api/v1/models/m/versions/1", "models:write", id="patch-version"),
    pytest.param("PUT", "/api/v1/models/m/versions/1/artifact", "models:write", id="upload"),
    pytest.param("GET", "/api/v1/models/m/versions/1/artifact", "models:read", id="download"),
    pytest.param(
        "POST", "/api/v1/models/m/versions/1/transitions", "models:write", id="transition"
    ),
    pytest.param(
        "POST", "/api/v1/models/m/versions/1/validations", "models:write", id="request-validation"
    ),
    pytest.param(
        "GET", "/api/v1/models/m/versions/1/validations", "models:read", id="list-validations"
    ),
    pytest.param("GET", f"/api/v1/validations/{ANY_ID}", "models:read", id="show-validation"),
    pytest.param("GET", "/api/v1/keys", "admin", id="list-keys"),
    pytest.param("POST", "/api/v1/keys", "admin", id="create-key"),
    pytest.param("POST", "/api/v1/keys/mr_x/revoke", "admin", id="revoke-key"),
    pytest.param("GET", "/api/v1/models/m/endpoint", "models:read", id="resolve-endpoint"),
    pytest.param("GET", "/api/v1/deployments", "models:read", id="list-deployments"),
    pytest.param("POST", "/api/v1/deployments", "deployments:write", id="deploy"),
    pytest.param("GET", f"/api/v1/deployments/{ANY_ID}", "models:read", id="show-deployment"),
    pytest.param(
        "GET", f"/api/v1/deployments/{ANY_ID}/events", "models:read", id="deployment-events"
    ),
    *[
        pytest.param(
            "POST", f"/api/v1/deployments/{ANY_ID}/{action}", "deployments:write", id=action
        )
        for action in ("promote", "pause", "resume", "abort", "undeploy")
    ],
    pytest.param("POST", "/api/v1/models/m/rollback", "deployments:write", id="rollback"),
    pytest.param("GET", "/api/v1/models/m/history", "models:read", id="history"),
    pytest.param("DELETE", "/api/v1/models/m", "models:write", id="delete-model"),
    pytest.param("POST", "/api/v1/feedback", "feedback:write", id="submit-feedback"),
    pytest.param("GET", "/api/v1/models/m/versions/1/feedback", "models:read", id="list-feedback"),
    pytest.param(
        "GET",
        "/api/v1/models/m/versions/1/feedback/summary",
        "models:read",
        id="feedback-summary",
    ),
    pytest.param("GET", "/api/v1/models/m/feedback/compare", "models:read", id="compare-feedback"),
    pytest.param("PUT", "/api/v1/models/m/tags/k", "models:write", id="set-model-tag"),
    pytest.param("DELETE", "/api/v1/models/m/tags/k", "models:write", id="rm-model-tag"),
    pytest.param("PUT", "/api/v1/models/m/versions/1/tags/k", "models:write", id="set-tag"),
    pytest.param("DELETE", "/api/v1/models/m/versions/1/tags/k", "models:write", id="rm-tag"),
]


def _key(http: httpx.Client, *scopes: str, name: str = "k") -> str:
    response = http.post("/api/v1/keys", json={"name": name, "scopes": list(scopes)})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def test_every_api_route_is_in_the_matrix(server: LiveServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    ops = {
        (m.upper(), p) for p, item in spec["paths"].items() for m in item if p.startswith("/api/")
    }
    covered = {(p.values[0], p.values[1]) for p in ROUTES}
    normalized = {
        (
            m,
            p.replace("{name}", "m")
            .replace("{version}", "1")
            .replace("{api_key}", "mr_x")
            .replace("{validation_id}", ANY_ID)
            .replace("{deployment_id}", ANY_ID)
            .replace("{action}", "abort")
            .replace("{key}", "k"),
        )
        for m, p in ops
    }
    assert normalized <= covered


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_auth_matrix(
    server: LiveServer, http: httpx.Client, method: str, path: str, scope: str
) -> None:
    make_model(http, "m")
    make_version(http, "m", "1")
    wrong = "feedback:write" if scope != "feedback:write" else "models:read"
    right_token = _key(http, scope, name="right")
    wrong_token = _key(http, wrong, name="wrong")
    revoked_token = _key(http, scope, name="revoked")
    http.post(f"/api/v1/keys/{revoked_token.split('.')[0]}/revoke")
    api_key = right_token.split(".")[0]
    cases = {
        "no token": {},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "unknown key": {"Authorization": f"Bearer mr_{'Z' * 20}.{'a' * 43}"},
        "wrong secret": {"Authorization": f"Bearer {api_key}.{'b' * 43}"},
        "revoked": {"Authorization": f"Bearer {revoked_token}"},
    }
    for label, headers in cases.items():
        response = httpx.request(method, server.url + path, headers=headers)
        assert response.status_code == 401, (label, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"].startswith("application/problem+json")
    response = httpx.request(
        method, server.url + path, headers={"Authorization": f"Bearer {wrong_token}"}
    )
    problem = assert_problem(response, 403, scope)
    assert problem["requiredScope"] == scope
    response = httpx.request(
        method, server.url + path, headers={"Authorization": f"Bearer {right_token}"}
    )
    assert response.status_code not in (401, 403), response.text


def test_probes_and_docs_need_no_key(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "store": "ok"}}
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_secrets_are_stored_hashed_and_shown_once(http: httpx.Client, registry: Registry) -> None:
    created = http.post("/api/v1/keys", json={"name": "ci", "scopes": ["models:read"]}).json()
    api_key, secret = created["token"].split(".")
    assert created["apiKey"] == api_key
    with registry.sessions() as s:
        row = s.scalar(select(APIClient).where(APIClient.api_key == api_key))
        assert row is not None
        assert secret not in row.secret_hash
        assert row.secret_hash == hash_secret(secret)
        logs = " ".join(str(d) for d in s.scalars(select(UsageLog.details)))
    assert secret not in logs
    listed = http.get("/api/v1/keys").text
    assert secret not in listed
    assert "secretHash" not in listed
    assert "token" not in listed


def test_key_for_a_service_account_and_revocation(
    server: LiveServer, http: httpx.Client, registry: Registry
) -> None:
    created = http.post(
        "/api/v1/keys",
        json={"name": "trainer", "scopes": ["models:write"], "user": "trainer@example.com"},
    ).json()
    assert created["userEmail"] == "trainer@example.com"
    headers = {"Authorization": f"Bearer {created['token']}"}
    response = httpx.post(
        f"{server.url}/api/v1/models",
        headers=headers,
        json={"name": "svc", "taskType": "TextGeneration", "provider": "p"},
    )
    assert response.status_code == 201
    with registry.sessions() as s:
        row = s.scalar(select(UsageLog).where(UsageLog.action_type == "model_created"))
        assert row is not None
        assert str(row.api_client_id) == created["id"]
        assert str(row.user_id) == created["userId"]
    revoked = http.post(f"/api/v1/keys/{created['apiKey']}/revoke").json()
    assert revoked["isActive"] is False
    assert httpx.get(f"{server.url}/api/v1/models", headers=headers).status_code == 401
    assert_problem(http.post("/api/v1/keys/mr_nope_nope/revoke"), 404)
    assert_problem(http.post("/api/v1/keys/mr_nope/revoke"), 422, "too short")
    assert_problem(http.post("/api/v1/keys", json={"name": "x", "scopes": ["root"]}), 422)
    assert_problem(http.post("/api/v1/keys", json={"name": "x", "scopes": []}), 422)
    actions = [r.details for r in registry_rows(registry, "api_key_revoked")]
    assert actions
    assert actions[0] is not None
    assert actions[0]["apiKey"] == created["apiKey"]


def registry_rows(registry: Registry, action: str) -> list[UsageLog]:
    with registry.sessions() as s:
        return list(s.scalars(select(UsageLog).where(UsageLog.action_type == action)))


def test_bootstrap_happens_once(registry: Registry) -> None:
    first = registry.keys.bootstrap_admin()
    assert first is not None
    assert registry.keys.bootstrap_admin() is None
    principal = registry.keys.authenticate(first.token)
    assert principal.allows("models:write")
    assert principal.allows("admin")


def test_verified_keys_are_cached_and_revocation_clears_the_cache(registry: Registry) -> None:

    from registry.services.keys import KeyService

    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(registry.engine, "before_cursor_execute", count)
    try:
        registry.keys.authenticate(issued.token)
        looked_up = len(statements)
        assert looked_up >= 1
        for _ in range(5):
            registry.keys.authenticate(issued.token)
        assert len(statements) == looked_up  # served from the cache
    finally:
        event.remove(registry.engine, "before_cursor_execute", count)

    # Another replica revokes: this one trusts its cache until it expires, then refuses.
    short = KeyService(registry.sessions, cache_seconds=0.3)
    short.authenticate(issued.token)
    other_replica = KeyService(registry.sessions)
    admin = other_replica.authenticate(issued.token)  # now cached in that replica too
    registry.keys.create(admin, name="spare-admin", scopes=["admin"])  # not the last admin
    other_replica.revoke(admin, issued.info.api_key)
    short.authenticate(issued.token)  # still cached here
    time.sleep(0.4)
    with pytest.raises(Unauthorized):
        short.authenticate(issued.token)
    # The process that revoked it refuses at once, although it had the key cached.
    with pytest.raises(Unauthorized):
        other_replica.authenticate(issued.token)


def test_revoking_the_last_active_admin_key_is_409(
    http: httpx.Client, registry: Registry, admin_token: str
) -> None:
    api_key = admin_token.split(".")[0]
    body = assert_problem(http.post(f"/api/v1/keys/{api_key}/revoke"), 409, "last active admin")
    assert body["apiKey"] == api_key
    assert http.get("/api/v1/models").status_code == 200  # still in
    # An admin key of a deleted user does not count: it cannot sign in.
    ghost = http.post(
        "/api/v1/keys", json={"name": "ghost", "scopes": ["admin"], "user": "ghost@example.com"}
    ).json()
    with registry.sessions.begin() as s:
        user = s.get_one(User, uuid.UUID(ghost["userId"]))
        user.deleted_at = utcnow()
    assert_problem(http.post(f"/api/v1/keys/{api_key}/revoke"), 409)
    # With a second admin key, the first may go; then the second is the last.
    spare = http.post("/api/v1/keys", json={"name": "spare", "scopes": ["admin"]}).json()
    assert http.post(f"/api/v1/keys/{api_key}/revoke").json()["isActive"] is False
    headers = {"Authorization": f"Bearer {spare['token']}"}
    with httpx.Client(base_url=str(http.base_url), headers=headers, timeout=30) as second:
        assert_problem(second.post(f"/api/v1/keys/{spare['apiKey']}/revoke"), 409)
        assert second.post(f"/api/v1/keys/{api_key}/revoke").status_code == 200  # already gone
    assert [r.details["apiKey"] for r in registry_rows(registry, "api_key_revoked")] == [api_key]


def test_two_revocations_of_the_last_two_admin_keys_cannot_both_win(registry: Registry) -> None:
    """Both revocations are held at their write until the other has reached it too (or 3 s
    passed, which is what happens when the other waits on a lock): without the lock both
    counted one other admin key and both revoked."""
    first = registry.keys.bootstrap_admin()
    assert first is not None
    admin = registry.keys.authenticate(first.token)
    second = registry.keys.create(admin, name="second-admin", scopes=["admin"])
    together = threading.Barrier(2, timeout=3)

    def hold(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("UPDATE api_client SET is_active"):
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait()

    def revoke(api_key: str) -> str:
        try:
            registry.keys.revoke(admin, api_key)
        except Conflict:
            return "refused"
        return "revoked"

    event.listen(registry.engine, "before_cursor_execute", hold)
    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(revoke, [first.info.api_key, second.info.api_key]))
    finally:
        event.remove(registry.engine, "before_cursor_execute", hold)
    assert sorted(outcomes) == ["refused", "revoked"]
    active = [k for k in registry.keys.list() if k.is_active and "admin" in k.scopes]
    assert len(active) == 1


def test_db_admin_key_mints_a_working_admin_key_and_audits_it(
    registry: Registry, tmp_path: Path
) -> None:
    """The operator lost every key (here: the only one is revoked behind the API's back)."""
    issued = registry.keys.bootstrap_admin()
    assert issued is not None
    with registry.sessions.begin() as s:
        s.execute(update(APIClient).values(is_active=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        MODELREG_DATABASE_URL=registry.settings.database_url,
        MODELREG_DATA_DIR=str(tmp_path / "cli"),
        HOME=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "db", "admin-key", "--name", "break-glass"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    token = next(w for w in done.stdout.split() if w.startswith("mr_") and "." in w)
    principal = registry.keys.authenticate(token)
    assert principal.allows("admin")
    assert principal.key_name == "break-glass"
    (row,) = registry_rows(registry, "api_key_created")[1:]
    assert row.details is not None
    assert row.details["apiKey"] == token.split(".")[0]
    assert row.details["via"] == "modelreg db admin-key"
    assert token.split(".")[1] not in str(row.details)
    with registry.sessions() as s:
        stored = s.scalar(select(APIClient).where(APIClient.api_key == token.split(".")[0]))
        assert stored is not None
        assert stored.secret_hash == hash_secret(token.split(".")[1])
