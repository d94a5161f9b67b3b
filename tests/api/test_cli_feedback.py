"""``modelreg feedback …`` as a user types it, against the real API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.support.helpers import make_model, make_version
from tests.support.live_server import LiveServer

MODEL = "text2img"


@pytest.fixture
def cli(
    server: LiveServer,
    admin_token: str,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> CliRunner:
    monkeypatch.setenv("MODELREG_URL", server.url)
    monkeypatch.setenv("MODELREG_TOKEN", admin_token)
    monkeypatch.setenv("MODELREG_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    make_model(http, MODEL)
    make_version(http, MODEL, "1.0")
    return CliRunner()


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_submit_and_summarize(cli: CliRunner, tmp_path: Path) -> None:
    assert "kept 1, rejected 0" in run(
        cli, "feedback", "submit", MODEL, "1.0", "--rating", "5", "--comment", "crisp"
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(
            json.dumps(item)
            for item in (
                {"rating": 4},
                {"rating": 2, "comment": "blurry"},
                {"rating": 7},
                {"model": MODEL, "versionNumber": "9.9", "rating": 3},
                {"rating": 5, "details": {"prompt": "a cat"}},
            )
        )
        + "\n"
    )
    output = run(cli, "feedback", "submit", MODEL, "1.0", "--file", str(batch), code=1)
    assert "kept 3, rejected 2" in output
    assert "rating must be from 1 to 5" in output
    assert "has no version '9.9'" in output
    summary = json.loads(run(cli, "feedback", "summary", MODEL, "1.0", "--json"))
    assert summary["count"] == 4
    assert summary["distribution"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 2}
    assert summary["positiveShare"] == pytest.approx(0.75)
    table = run(cli, "feedback", "summary", MODEL, "1.0")
    assert "4 items, 4 rated, mean 4.00" in table
    assert "rated >= 4: 75.0%" in table
    assert "5★" in table
    assert "█" in table, "the histogram draws bars"
    later = run(cli, "feedback", "summary", MODEL, "1.0", "--since", "2999-01-01T00:00:00Z")
    assert "0 items" in later


def test_errors_are_readable(cli: CliRunner) -> None:
    output = run(cli, "feedback", "submit", MODEL, "7.0", "--rating", "3", code=1)
    assert "422" in output
    assert "has no version '7.0'" in output
    run(cli, "feedback", "submit", MODEL, "1.0", "--rating", "6", code=2)
    assert "give --rating" in run(cli, "feedback", "submit", MODEL, "1.0", code=1)


def test_compare_with_nothing_serving(cli: CliRunner) -> None:
    output = run(cli, "feedback", "compare", MODEL, "--env", "staging")
    assert "feedback since the beginning (all time)" in output
    answer = json.loads(run(cli, "feedback", "compare", MODEL, "--json"))
    assert answer["versions"] == []
    assert answer["environment"] == "production"
