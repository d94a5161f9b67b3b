"""A refused value reads as a sentence: the server's 422 says the rule a name or version number
broke (not its regex), and the CLI names its own option (not the JSON path) with what the
server said, the valid values of an enum included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.support.helpers import assert_problem, make_model
from tests.support.live_server import LiveServer

NAME_RULE = (
    "must start with a letter or digit and contain only letters, digits, '.', '_' and '-' "
    "(at most 100 characters)"
)
VERSION_RULE = (
    "must start with a letter or digit, contain only letters, digits, spaces, '.', '_', '+' "
    "and '-', and not end with a space (at most 50 characters)"
)


@pytest.fixture
def cli(
    server: LiveServer, admin_token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CliRunner]:
    monkeypatch.setenv("MODELREG_URL", server.url)
    monkeypatch.setenv("MODELREG_TOKEN", admin_token)
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


def error_line(cli: CliRunner, *args: str) -> str:
    """The one line a refused command prints, without the ``error:`` prefix."""
    result = cli.invoke(app, list(args))
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, (result.output, result.exception)
    assert lines[0].startswith("error: "), result.output
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("method", "path", "body", "detail"),
    [
        pytest.param(
            "POST",
            "/api/v1/models",
            {"name": "bad name", "taskType": "ImageGeneration", "provider": "Internal"},
            f"name {NAME_RULE}",
            id="model-name-in-a-body",
        ),
        pytest.param("GET", "/api/v1/models/bad name", None, f"name {NAME_RULE}", id="path"),
        pytest.param(
            "GET", "/api/v1/models/bad name/endpoint", None, f"name {NAME_RULE}", id="endpoint"
        ),
        pytest.param(
            "POST",
            "/api/v1/models/text2img/versions",
            {"versionNumber": "1.0 "},
            f"versionNumber {VERSION_RULE}",
            id="version-number",
        ),
        pytest.param(
            "GET", "/api/v1/models/text2img/versions/-1", None, f"version {VERSION_RULE}", id="v"
        ),
        pytest.param(
            "POST",
            "/api/v1/keys",
            {"name": "ci", "scopes": ["models:read"], "user": "nobody"},
            "user must be an email address, such as ada@example.com",
            id="email",
        ),
    ],
)
def test_a_broken_name_rule_is_a_sentence(
    http: httpx.Client, method: str, path: str, body: object, detail: str
) -> None:
    make_model(http, "text2img")
    response = http.request(method, path, json=body)
    problem = assert_problem(response, 422)
    assert problem["detail"] == detail
    assert problem["errors"][0]["msg"] == detail.split(" ", 1)[1]
    assert "[A-Za-z" not in response.text
    assert "pattern" not in problem["detail"]


def test_the_cli_says_the_rule_for_the_argument(cli: CliRunner, http: httpx.Client) -> None:
    assert error_line(cli, "models", "create", "bad name", "--task", "ImageGeneration") == (
        f"NAME: {NAME_RULE}"
    )
    make_model(http, "text2img")
    assert error_line(cli, "versions", "create", "text2img", "1.0 ") == f"VERSION: {VERSION_RULE}"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        pytest.param(
            ("--steps", "10,500"),
            "--steps: item 2 weight must be an integer from 1 to 100",
            id="weight-out-of-range",
        ),
        pytest.param(
            ("--steps", "50,20"),
            "--steps: item 2 weight must be larger than the step before it",
            id="weights-not-rising",
        ),
        pytest.param(
            ("--replicas", "1000"), "--replicas: must be an integer from 1 to 100", id="replicas"
        ),
        pytest.param(
            ("--pause", "soon"),
            "--pause: must be a duration such as '60s', '5m' or a number of seconds, not 'soon'",
            id="pause",
        ),
        pytest.param(
            ("--strategy", "blue_green", "--preview-duration", "200h"),
            "--preview-duration: must be between 0 and 7 days",
            id="preview-duration",
        ),
        pytest.param(
            ("--params", '{"analysis": {"gates": [{"type": "magic"}]}}'),
            "--params: analysis gates item 1 type must be one of "
            "['prometheus', 'direct', 'feedback']",
            id="params",
        ),
    ],
)
def test_a_deploy_the_server_refuses_names_the_option(
    cli: CliRunner, args: tuple[str, ...], line: str
) -> None:
    assert error_line(cli, "deploy", "text2img", "1.0", "--env", "staging", *args) == line


def test_an_enum_only_the_server_checks_names_the_option_and_its_values(cli: CliRunner) -> None:
    assert error_line(cli, "models", "create", "m", "--task", "Drawing") == (
        "--task: Input should be 'ImageGeneration', 'TextGeneration', 'ImageTransformation', "
        "'StyleTransfer' or 'ContentSafety'"
    )
    assert error_line(cli, "deployments", "list", "--env", "moon") == (
        "--env: Input should be 'staging', 'production' or 'testing'"
    )


def test_strategy_params_name_params_and_other_errors_keep_their_status(cli: CliRunner) -> None:
    line = error_line(
        cli, "deploy", "text2img", "1.0", "--params", '{"bogus": 1}', "--env", "staging"
    )
    assert line == (
        "--params: unknown field(s) ['bogus'] for canary; known: ['allowSignatureChange', "
        "'analysis', 'maxHold', 'onHoldTimeout', 'replicas', 'resources', 'scaleDownDelay', "
        "'steps']"
    )
    assert error_line(cli, "models", "show", "nope").startswith("404 Not found: ")
