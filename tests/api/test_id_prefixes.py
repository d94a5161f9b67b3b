"""Ids as people type them: a unique prefix of at least 8 characters works wherever an id is
taken, resolved by the server (so every client gets it), on both databases; and the CLI's lists
show the prefix each command accepts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from api.cli import app
from registry.models import AIModelDeployment, APIClient, ValidationRequest
from registry.services import Registry
from tests.support.helpers import assert_problem, make_model, make_version
from tests.support.live_server import LiveServer

#: Two ids that share their first 8 hex digits (and 9: the dash is not a digit), and one alone.
TWIN_A = uuid.UUID("abcdef01-0000-4000-8000-000000000001")
TWIN_B = uuid.UUID("abcdef01-1111-4000-8000-000000000002")
SINGLE = uuid.UUID("12345678-9abc-4def-8000-000000000003")


@pytest.fixture
def rows(http: httpx.Client, registry: Registry) -> None:
    """Three deployments and three validation runs with the ids above."""
    make_model(http, "text2img")
    version_id = uuid.UUID(make_version(http, "text2img", "1.0")["id"])
    with registry.sessions.begin() as s:
        for dep_id in (TWIN_A, TWIN_B, SINGLE):
            s.add(
                AIModelDeployment(
                    id=dep_id,
                    model_version_id=version_id,
                    environment="staging",
                    status="Inactive",
                    deployment_strategy="canary",
                    strategy_params={},
                )
            )
            s.add(ValidationRequest(id=dep_id, model_version_id=version_id, sha256="0" * 64))


@pytest.fixture
def cli(
    server: LiveServer, admin_token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CliRunner]:
    monkeypatch.setenv("MODELREG_URL", server.url)
    monkeypatch.setenv("MODELREG_TOKEN", admin_token)
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


@pytest.mark.usefixtures("rows")
@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/api/v1/deployments/{}", id="deployment"),
        pytest.param("/api/v1/deployments/{}/events", id="deployment-events"),
        pytest.param("/api/v1/validations/{}", id="validation"),
    ],
)
def test_a_prefix_reads_like_the_full_id(http: httpx.Client, path: str) -> None:
    for given in ("12345678", "12345678-9a", "1234567", "abcdef01", "ffffffff", "xyz12345"):
        response = http.get(path.format(given))
        if given.startswith("12345678"):
            assert response.status_code == 200, response.text
            assert str(SINGLE) in response.text or response.json() == []
        elif given == "1234567":
            body = assert_problem(response, 422, "too short", "first 8")
            assert body["minLength"] == 8
        elif given == "abcdef01":
            body = assert_problem(response, 409, "several", "give more characters")
            assert body["candidates"] == [str(TWIN_A), str(TWIN_B)]
        elif given == "ffffffff":
            assert_problem(response, 404, "ffffffff")
        else:
            assert_problem(response, 422, "is not a", "hex digits")
    assert http.get(path.format("abcdef01-1")).status_code == 200  # one more digit settles it


@pytest.mark.usefixtures("rows")
def test_a_prefix_steers_a_deployment(http: httpx.Client) -> None:
    # Resolved, then refused for what the deployment is: not a 404 or a 422 about the id.
    assert_problem(http.post("/api/v1/deployments/12345678/abort"), 409, "Inactive")
    assert_problem(http.post("/api/v1/deployments/abcdef01/abort"), 409, "several")
    assert_problem(http.post("/api/v1/deployments/abcdef0/abort"), 422, "too short")
    assert_problem(http.post("/api/v1/deployments/00000000/abort"), 404)


def test_a_key_is_revoked_by_a_prefix_and_no_wildcard_widens_it(
    http: httpx.Client, registry: Registry
) -> None:
    for name in ("one", "two", "three"):
        assert http.post("/api/v1/keys", json={"name": name, "scopes": ["models:read"]}).is_success
    with registry.sessions.begin() as s:
        for name, api_key in (("one", "mr_shared_00000000001"), ("two", "mr_shared_00000000002")):
            s.execute(update(APIClient).where(APIClient.name == name).values(api_key=api_key))
    third = next(k for k in http.get("/api/v1/keys").json() if k["name"] == "three")["apiKey"]

    body = assert_problem(http.post("/api/v1/keys/mr_shared/revoke"), 409, "several")
    assert body["candidates"] == ["mr_shared_00000000001", "mr_shared_00000000002"]
    assert_problem(http.post("/api/v1/keys/mr_share/revoke"), 409, "several")
    assert_problem(http.post("/api/v1/keys/mr_shar/revoke"), 422, "too short")
    assert_problem(http.post("/api/v1/keys/mr_%hared/revoke"), 404)  # not a LIKE pattern
    assert_problem(http.post("/api/v1/keys/mr______/revoke"), 404)
    revoked = http.post("/api/v1/keys/mr_shared_00000000002/revoke")
    assert revoked.json()["isActive"] is False
    assert http.post(f"/api/v1/keys/{third[:8]}/revoke").json()["apiKey"] == third


@pytest.mark.usefixtures("rows")
def test_the_cli_lists_the_prefixes_it_accepts(cli: CliRunner) -> None:
    listed = run(cli, "deployments", "list")
    # The twins need a 10th character to be told apart; the page shows all ids at that length.
    for shown in ("abcdef01-0", "abcdef01-1", "12345678-9"):
        assert f" {shown} " in listed, listed
        assert str(SINGLE) not in listed
        full = run(cli, "deployments", "show", shown, "--json")
        assert full.count(shown) >= 1
        assert '"id"' in full
    assert str(SINGLE) in run(cli, "deployments", "list", "--json")
    assert str(SINGLE) in run(cli, "deployments", "show", "12345678")
    assert "0 event(s)" in run(cli, "deployments", "events", "12345678")
    assert "Inactive" in run(cli, "deployments", "abort", "12345678", code=1)

    ambiguous = run(cli, "deployments", "show", "abcdef01", code=1)
    assert "409" in ambiguous
    assert str(TWIN_A) in ambiguous
    assert str(TWIN_B) in ambiguous
    assert "too short" in run(cli, "deployments", "show", "abcdef0", code=1)
    assert "404" in run(cli, "deployments", "show", "ffffffff", code=1)

    runs = run(cli, "validations", "list", "text2img", "1.0")
    assert " abcdef01-0 " in runs
    assert str(TWIN_A) not in runs
    assert str(SINGLE) in run(cli, "validations", "show", "12345678")
    assert str(TWIN_B) in run(cli, "validations", "list", "text2img", "1.0", "--json")


def test_the_cli_revokes_a_key_by_the_prefix_it_lists(cli: CliRunner) -> None:
    created = run(cli, "keys", "create", "--name", "ci", "--scope", "models:read")
    api_key = next(w for w in created.split() if w.startswith("mr_") and "." in w).split(".")[0]
    listed = run(cli, "keys", "list")
    assert f" {api_key[:8]} " in listed
    assert api_key not in listed
    assert api_key in run(cli, "keys", "list", "--json")
    assert f"revoked key {api_key}" in run(cli, "keys", "revoke", api_key[:8])
