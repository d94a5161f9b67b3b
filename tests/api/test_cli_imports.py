"""The CLI's client commands and the client load nothing of the server: no FastAPI, Starlette,
SQLAlchemy, pydantic-settings, no ``registry`` module, no ``api.schemas`` or ``api.app``; the
client not even pydantic. Each case runs in a fresh interpreter, which then lists what it
imported.

(Typer itself imports pydantic to coerce a command's parameters, so a CLI command that runs
loads pydantic, though none of our schemas.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.helpers import make_model, make_version
from tests.support.live_server import LiveServer

SERVER_PACKAGES = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "pydantic_settings",
    "registry",
)
SERVER_MODULES = ("api.schemas", "api.app", "api.deps", "api.routes", "api.server")

#: Runs ``modelreg ARGS`` in this interpreter, then writes the exit code and sys.modules to OUT.
RUN_CLI = """
import json, sys
sys.argv = ["modelreg", *sys.argv[1:]]
from api.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
with open(OUT, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""

IMPORT_CLIENT = """
import json, sys
import modelreg_client
from modelreg_client import AsyncResolver, Client, Resolver
from modelreg_client import picking, schemas, vocabulary
with open(OUT, "w") as fh:
    json.dump({"code": 0, "modules": sorted(sys.modules)}, fh)
"""


def server_modules(modules: list[str]) -> list[str]:
    return [
        m for m in modules if m.split(".")[0] in SERVER_PACKAGES or m.startswith(SERVER_MODULES)
    ]


def run(code: str, *args: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = tmp_path / "modules.json"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    full_env.update(MODELREG_CREDENTIALS_FILE=str(tmp_path / "no-credentials"), **(env or {}))
    done = subprocess.run(
        [sys.executable, "-c", f"OUT = {str(out)!r}\n{code}", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.exists(), done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    result.update(stdout=done.stdout, stderr=done.stderr)
    return result


def test_help_loads_nothing_of_the_server(tmp_path: Path) -> None:
    result = run(RUN_CLI, "--help", tmp_path=tmp_path)
    assert result["code"] == 0, result["stderr"]
    assert "models" in result["stdout"]
    assert server_modules(result["modules"]) == []
    assert "httpx" not in result["modules"]  # not even the client's HTTP library, for --help


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("models", "list"), id="models-list"),
        pytest.param(("models", "list", "--json"), id="models-list-json"),
        pytest.param(("versions", "list", "text2img"), id="versions-list"),
        pytest.param(("versions", "show", "text2img", "1.0"), id="versions-show"),
        pytest.param(("endpoint", "text2img"), id="endpoint-404"),
    ],
)
def test_client_commands_load_nothing_of_the_server(
    args: tuple[str, ...], server: LiveServer, http: httpx.Client, admin_token: str, tmp_path: Path
) -> None:
    make_model(http, "text2img")
    make_version(http, "text2img", "1.0")
    env = {"MODELREG_URL": server.url, "MODELREG_TOKEN": admin_token}
    result = run(RUN_CLI, *args, tmp_path=tmp_path, env=env)
    if args[0] == "endpoint":
        assert result["code"] == 1  # nothing serves it: the server's 404, as one line
        assert "nothing serves it" in result["stderr"]
    else:
        assert result["code"] == 0, result["stderr"]
        assert "text2img" in result["stdout"]
    assert "httpx" in result["modules"]  # it did talk to the server
    assert server_modules(result["modules"]) == []


def test_the_client_loads_nothing_of_the_server(tmp_path: Path) -> None:
    result = run(IMPORT_CLIENT, tmp_path=tmp_path)
    assert server_modules(result["modules"]) == []
    assert not [m for m in result["modules"] if m.split(".")[0] in ("pydantic", "typer", "api")]
