"""Where a command's client and settings come from: --url/--token, the environment, the
credentials file ``modelreg serve`` writes, and the MODELREG_* settings."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.cli.output import fail

if TYPE_CHECKING:
    from modelreg_client.client import Client
    from registry.settings import Settings


class _State:
    url: str | None = None
    token: str | None = None


state = _State()
"""--url and --token, as the root callback saw them."""


@contextmanager
def open_client() -> Iterator[Client]:
    """A client from --url/--token, the environment or the credentials file; errors made
    readable."""
    import httpx

    from modelreg_client.client import ChecksumMismatch, Client, ModelregError

    client = Client.from_config(state.url, state.token)
    try:
        yield client
    except ModelregError as exc:
        fail(describe_problem(exc.status, exc.problem))
    except ChecksumMismatch as exc:
        fail(str(exc))
    except httpx.TransportError as exc:
        fail(
            f"cannot reach modelreg at {client.base_url}: {exc}. Is `modelreg serve` running?",
            code=2,
        )
    finally:
        client.close()


#: Body and query fields whose command parameter has another name; any other field is the
#: parameter of its snake_case name (``previewDuration`` → ``--preview-duration``).
FIELD_PARAMS = {
    "deploymentStrategy": "strategy",
    "environment": "env",
    "format": "fmt",
    "releaseNotes": "notes",
    "scopes": "scope",
    "strategyParams": "params",
    "taskType": "task",
    "versionNumber": "version",
}


def describe_problem(status: int, problem: dict[str, Any]) -> str:
    """The line an error answer prints. A 422 whose ``errors`` name fields the running
    command took from its own options says so: ``--steps: item 2 weight must be …``;
    anything else prints the status, title, detail and the extra members."""
    errors = problem.get("errors") if status == 422 else None
    if isinstance(errors, list) and errors:
        lines = [_describe_field(e) for e in errors if isinstance(e, dict)]
        if lines and all(lines):
            return "; ".join(line for line in lines if line)
    extra = {
        k: v
        for k, v in problem.items()
        if k not in ("type", "title", "status", "detail", "instance")
    }
    hint = f"\n  {json.dumps(extra)}" if extra else ""
    return f"{status} {problem.get('title', '')}: {problem.get('detail', '')}{hint}"


def _describe_field(error: dict[str, Any]) -> str | None:
    """``--option: msg`` for one of a 422's ``errors``, naming the deepest field of its
    ``loc`` that the running command has a parameter for; None when it has none."""
    ctx = _current_context()
    loc = [str(part) for part in error.get("loc") or ()]
    if ctx is None or not loc:
        return None
    fields = loc[1:] if loc[0] in ("body", "query", "path") else loc
    params = {p.name: p for p in ctx.command.params}
    for depth in range(len(fields) - 1, -1, -1):
        field = fields[depth]
        param = params.get(FIELD_PARAMS.get(field, _snake(field)))
        if param is None:
            continue
        if param.param_type_name == "option":
            label = param.opts[0]
        else:  # an argument: as its usage line spells it
            label = param.metavar or param.name.upper()
        below = " ".join(f"item {int(f) + 1}" if f.isdigit() else f for f in fields[depth + 1 :])
        return f"{label}: {below + ' ' if below else ''}{error.get('msg', '')}"
    return None


def _current_context() -> Any:
    """The running command's click context. Typer ≥ 0.16 runs on its own copy of click
    (``typer._click``), older ones on click itself."""
    import importlib

    for name in ("typer._click.globals", "click.globals"):
        try:
            ctx = importlib.import_module(name).get_current_context(silent=True)
        except ImportError:
            continue
        if ctx is not None:
            return ctx
    return None


def _snake(field: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in field)


@contextmanager
def problems_in_one_line() -> Iterator[None]:
    """Inside :func:`open_client`, for commands whose 422s (a filter, an ``orderBy``, a tag key
    or value) say all in their detail, the filter's position included: such a problem prints
    as its status, title and detail on one line, without the extra members that repeat it.
    Any other error is left to :func:`open_client`."""
    from modelreg_client.client import ModelregError

    try:
        yield
    except ModelregError as exc:
        if exc.status != 422 or "errors" in exc.problem:
            raise
        fail(f"{exc.status} {exc.title}: {exc.detail}")


def load_settings() -> Settings:
    from pydantic import ValidationError

    from registry.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        fail(f"invalid MODELREG_* setting:\n{exc}")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def write_credentials(path: Path, *, url: str, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"[default]\nurl = {url}\ntoken = {token}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
