"""``modelreg tags set|rm`` and the tags, ``--filter`` and ``--order-by`` of the model and version
commands, as a user types them, against the real API (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import Result
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
    for version in ("1.0", "1.1", "2.0"):
        make_version(http, MODEL, version, format="API", parameters={"endpoint": "http://x"})
    return CliRunner()


def invoke(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    return invoke(cli, *args, code=code).output


def one_error_line(cli: CliRunner, *args: str) -> str:
    """The command fails with exit 1 and exactly one line on stderr, no traceback."""
    result = invoke(cli, *args, code=1)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_set_and_rm_on_a_model_and_on_a_version(cli: CliRunner, http: httpx.Client) -> None:
    said = run(cli, "tags", "set", MODEL, "stage", "candidate")
    assert "tagged text2img: stage=candidate" in said
    run(cli, "tags", "set", MODEL, "team/vision", "imaging")  # '/' in a key
    run(cli, "tags", "set", MODEL, "stage", "prod")  # replaces
    assert http.get(f"/api/v1/models/{MODEL}").json()["tags"] == {
        "stage": "prod",
        "team/vision": "imaging",
    }
    said = run(cli, "tags", "set", MODEL, "stage", "candidate", "--version", "1.1")
    assert "tagged text2img 1.1: stage=candidate" in said
    assert http.get(f"/api/v1/models/{MODEL}/versions/1.1").json()["tags"] == {"stage": "candidate"}
    assert http.get(f"/api/v1/models/{MODEL}/versions/1.0").json()["tags"] == {}
    tagged = json.loads(run(cli, "tags", "set", MODEL, "k", "v", "--version", "1.1", "--json"))
    assert tagged["versionNumber"] == "1.1"
    assert tagged["tags"] == {"k": "v", "stage": "candidate"}

    assert "removed tag stage from text2img 1.1" in run(
        cli, "tags", "rm", MODEL, "stage", "--version", "1.1"
    )
    assert http.get(f"/api/v1/models/{MODEL}/versions/1.1").json()["tags"] == {"k": "v"}
    assert "removed tag team/vision from text2img" in run(cli, "tags", "rm", MODEL, "team/vision")
    assert http.get(f"/api/v1/models/{MODEL}").json()["tags"] == {"stage": "prod"}


def test_a_dot_key_is_a_tag_not_a_path_to_the_model(cli: CliRunner, http: httpx.Client) -> None:
    """Keys "." and ".." are valid; sent unquoted, a URL resolves them away (DELETE
    …/tags/.. would be DELETE of the model)."""
    run(cli, "tags", "set", MODEL, "..", "up")
    run(cli, "tags", "set", MODEL, ".", "here", "--version", "1.0")
    assert http.get(f"/api/v1/models/{MODEL}").json()["tags"] == {"..": "up"}
    assert http.get(f"/api/v1/models/{MODEL}/versions/1.0").json()["tags"] == {".": "here"}
    run(cli, "tags", "rm", MODEL, "..")
    run(cli, "tags", "rm", MODEL, ".", "--version", "1.0")
    model = http.get(f"/api/v1/models/{MODEL}")
    assert model.status_code == 200
    assert model.json()["tags"] == {}
    assert http.get(f"/api/v1/models/{MODEL}/versions/1.0").json()["tags"] == {}


def test_tags_are_shown_by_show_list_and_json(cli: CliRunner) -> None:
    run(cli, "tags", "set", MODEL, "stage", "candidate")
    run(cli, "tags", "set", MODEL, "owner", "[/] bob")  # markup-looking text is shown as is
    run(cli, "tags", "set", MODEL, "stage", "candidate", "--version", "1.1")

    shown = run(cli, "models", "show", MODEL)
    assert "owner=[/] bob" in shown
    assert "stage=candidate" in shown
    assert "stage=candidate" in run(cli, "versions", "show", MODEL, "1.1")
    assert json.loads(run(cli, "models", "show", MODEL, "--json"))["tags"] == {
        "owner": "[/] bob",
        "stage": "candidate",
    }
    assert json.loads(run(cli, "versions", "show", MODEL, "1.1", "--json"))["tags"] == {
        "stage": "candidate"
    }

    listed = run(cli, "models", "list")
    assert "┃ tags" in listed
    assert "owner=[/] bob, stage=candidate" in listed
    versions = run(cli, "versions", "list", MODEL)
    (row,) = [line for line in versions.splitlines() if "│ 1.1 " in line]
    assert "stage=candidate" in row
    (models,) = json.loads(run(cli, "models", "list", "--json"))
    assert models["tags"] == {"owner": "[/] bob", "stage": "candidate"}
    by_version = {
        v["versionNumber"]: v["tags"]
        for v in json.loads(run(cli, "versions", "list", MODEL, "--json"))
    }
    assert by_version == {"2.0": {}, "1.1": {"stage": "candidate"}, "1.0": {}}


def test_in_80_columns_tags_are_lines_below_an_unchanged_table(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    before = run(cli, "versions", "list", MODEL)
    assert "tags" not in before  # nothing is added while no row has tags
    run(cli, "tags", "set", MODEL, "stage", "candidate", "--version", "1.1")
    run(cli, "tags", "set", MODEL, "note", "x" * 100, "--version", "1.0")
    after = run(cli, "versions", "list", MODEL)
    table, tags = after.split("\ntags\n")
    assert table + "\n" == before  # no column got narrower
    assert all(len(line) <= 80 for line in table.splitlines())
    assert tags.splitlines() == [
        "  1.1  stage=candidate",
        f"  1.0  note={'x' * 23}…",  # a list cuts long values; show has them whole
    ]
    monkeypatch.setenv("COLUMNS", "200")
    assert f"note={'x' * 100}" in run(cli, "versions", "show", MODEL, "1.0")


def test_filter_and_order_by_on_both_lists(cli: CliRunner, http: httpx.Client) -> None:
    make_model(http, "upscaler", taskType="ImageTransformation")
    make_model(http, "zeta")
    run(cli, "tags", "set", MODEL, "stage", "candidate")
    run(cli, "tags", "set", "zeta", "stage", "candidate")
    run(cli, "tags", "set", "upscaler", "stage", "prod")
    for version in ("1.0", "2.0"):
        run(cli, "tags", "set", MODEL, "stage", "candidate", "--version", version)

    def names(*args: str) -> list[str]:
        return [m["name"] for m in json.loads(run(cli, "models", "list", *args, "--json"))]

    def versions(*args: str) -> list[str]:
        listed = json.loads(run(cli, "versions", "list", MODEL, *args, "--json"))
        return [v["versionNumber"] for v in listed]

    candidate = "tag.stage = 'candidate'"
    assert names("--filter", candidate) == ["text2img", "zeta"]
    assert names("--filter", candidate, "--order-by", "name desc") == ["zeta", "text2img"]
    assert names("--filter", "tag.stage = 'prod' OR task = ImageGeneration") == [
        "text2img",
        "upscaler",
        "zeta",
    ]
    assert versions("--filter", candidate) == ["2.0", "1.0"]  # newest first
    assert versions("--filter", candidate, "--order-by", "version asc") == ["1.0", "2.0"]
    assert versions("--order-by", "version desc") == ["2.0", "1.1", "1.0"]
    assert versions("--filter", f"{candidate} AND status = 'Production'") == []
    table = run(cli, "versions", "list", MODEL, "--filter", candidate)
    assert "│ 1.1 " not in table
    assert "│ 2.0 " in table


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ["versions", "list", MODEL, "--filter", "tag.stage = 'candidate' AND stauts = x"],
            ("422 Invalid filter", "unknown field 'stauts'", "at position 28"),
            id="unknown-version-field",
        ),
        pytest.param(
            ["models", "list", "--filter", "(tag.stage = 'x'"],
            ("422 Invalid filter", "expected ')'", "at position 16"),
            id="unclosed-parenthesis",
        ),
        pytest.param(
            ["models", "list", "--filter", "status = 'Staged'"],
            ("the fields of models are", "at position 0"),
            id="a-versions-field-on-models",
        ),
        pytest.param(
            ["models", "list", "--order-by", "size"],
            ("422", "orderBy", "'size' is not"),
            id="bad-order",
        ),
        pytest.param(
            ["tags", "set", "nope", "stage", "x"],
            ("404", "no model named 'nope'"),
            id="unknown-model",
        ),
        pytest.param(
            ["tags", "set", MODEL, "stage", "x", "--version", "9.9"],
            ("404", "no version '9.9'"),
            id="unknown-version",
        ),
        pytest.param(
            ["tags", "rm", MODEL, "stage"], ("404", "has no tag 'stage'"), id="no-such-tag"
        ),
        pytest.param(
            ["tags", "set", MODEL, "a b", "x"], ("422", "a tag key is 1 to 63"), id="bad-key"
        ),
        pytest.param(
            ["tags", "set", MODEL, "k", "v" * 5001],
            ("422", "at most 5000 characters"),
            id="long-value",
        ),
        pytest.param(
            ["versions", "list", "nope", "--filter", "status = Staged"],
            ("404", "no model named 'nope'"),
            id="unknown-model-filtered",
        ),
    ],
)
def test_errors_are_one_line(cli: CliRunner, args: list[str], fragments: tuple[str, ...]) -> None:
    line = one_error_line(cli, *args)
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line
