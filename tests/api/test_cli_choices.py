"""The CLI's word-valued options: any case, and a refusal that names the option and its
choices before any request is sent (the URL below answers nothing)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from api.cli import app
from api.cli.choices import one_of
from registry.vocabulary import ArtifactFormat, Environment, Strategy


@pytest.mark.parametrize(
    ("words", "typed", "spelled"),
    [
        (ArtifactFormat, "pytorch", "PyTorch"),
        (ArtifactFormat, "tensorflow savedmodel", "TensorFlow SavedModel"),
        (ArtifactFormat, "SAFETENSORS", "SafeTensors"),
        (Strategy, "Blue-Green", "blue_green"),
        (Environment, "PRODUCTION", "production"),
    ],
)
def test_a_word_in_any_case_becomes_the_api_spelling(words: type, typed: str, spelled: str) -> None:
    assert one_of(words)(typed) == spelled


def test_a_word_that_is_none_of_them_is_a_usage_error_listing_them() -> None:
    with pytest.raises(typer.BadParameter, match="canary, blue_green, rolling_update"):
        one_of(Strategy)("linear")


@pytest.mark.parametrize(
    ("args", "option", "choice"),
    [
        (["deploy", "m", "1.0", "--strategy", "linear"], "--strategy", "blue_green"),
        (["deploy", "m", "1.0", "--env", "prod"], "--env", "production"),
        (["deploy", "m", "1.0", "--target", "k8s"], "--target", "kubernetes"),
        (["versions", "create", "m", "1.0", "--format", "tflite"], "--format", "SafeTensors"),
        (["versions", "transition", "m", "1.0", "live"], "status", "Production"),
    ],
)
def test_the_cli_refuses_a_bad_word_naming_the_option(
    args: list[str], option: str, choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELREG_URL", "http://127.0.0.1:9")  # nothing may be asked
    monkeypatch.setenv("MODELREG_TOKEN", "mr_x")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert choice in result.output
    assert "cannot reach" not in result.output


def test_versions_upload_help_lists_the_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    shown = CliRunner().invoke(app, ["versions", "upload", "--help"]).output
    for fmt in ArtifactFormat:
        assert fmt.value in shown
