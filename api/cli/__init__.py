"""The ``modelreg`` command line: the server, the database, and a client for the API.

The commands are a typer app, ``api.cli.commands``. Commands import what they need inside
their bodies, so that the command line starts fast: ``modelreg scan`` runs without loading the
registry (tests/validators/security/test_scan_cli.py), and the client commands run without
loading any of the server (tests/api/test_cli_imports.py): they need the client,
``modelreg_client`` (httpx and the standard library), whose vocabulary's members are the option
defaults.

``modelreg scan FILE`` does not load typer at all. It is the command a pipeline runs once per
file, so its start-up is its cost: typer coerces every parameter through pydantic, which alone
takes longer to import than the scan of a small file. ``main`` hands ``scan`` straight to its
parser (``api.cli.scan``, standard library only); the typer command of the same name, for
``modelreg --help`` and ``modelreg --url … scan``, hands its arguments to the same parser.
This module imports nothing but ``sys``; ``from api.cli import app`` still gives the typer app.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    if sys.argv[1:2] == ["scan"]:
        from api.cli.scan import run

        sys.exit(run(sys.argv[2:]))
    from api.cli.commands import run as run_commands

    run_commands()


def __getattr__(name: str) -> Any:
    if name == "app":
        from api.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
