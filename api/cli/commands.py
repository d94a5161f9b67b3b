"""The ``modelreg`` command tree (typer): every command but the fast path of ``scan``.

The root ``app`` below lists every top-level command in the order ``modelreg --help`` shows
them; each noun's commands live in their own module (``models``, ``versions``, ``tags``,
``validations``, ``deployments``, ``keys``, ``feedback``, ``db``), the long-running processes
in ``processes`` and the commands that need no API in ``tools``. ``output`` prints,
``context`` finds the client and the settings. ``api.cli.main`` is the entry point.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from api.cli import (
    db,
    deployments,
    feedback,
    keys,
    models,
    processes,
    tags,
    tools,
    validations,
    versions,
)
from api.cli.context import state
from api.cli.output import err

app = typer.Typer(
    help="modelreg: a model registry and deployment controller.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="MODELREG_URL", help="API base URL [default: from credentials]"),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MODELREG_TOKEN",
        help="API token [default: from credentials]",
        show_default=False,
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"modelreg {version('modelreg')}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print modelreg's version and exit.",
    ),
]


@app.callback()
def _main(url: UrlOpt = None, token: TokenOpt = None, _version: VersionOpt = False) -> None:
    state.url = url
    state.token = token


app.command()(processes.serve)
app.command()(validations.validate)
app.command()(processes.worker)
app.command()(processes.controller)
app.command()(tools.gc)
app.command("prometheus-targets")(tools.prometheus_targets)
app.command()(deployments.deploy)
app.command()(deployments.rollback)
app.command()(deployments.history)
app.command()(deployments.endpoint)
app.command(context_settings=tools.SCAN_CONTEXT, add_help_option=False)(tools.scan)
app.command("serve-model")(processes.serve_model)
app.command("fetch-artifact")(processes.fetch_artifact)
app.add_typer(db.db_app, name="db")
app.add_typer(models.models_app, name="models")
app.add_typer(versions.versions_app, name="versions")
app.add_typer(tags.tags_app, name="tags")
app.add_typer(validations.validations_app, name="validations")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(deployments.deployments_app, name="deployments")
app.add_typer(feedback.feedback_app, name="feedback")


def run() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
