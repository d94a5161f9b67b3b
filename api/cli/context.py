"""Where a command's client and settings come from: --url/--token, the environment, the
credentials file ``modelreg serve`` writes, and the MODELREG_* settings."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.output import fail

if TYPE_CHECKING:
    from api.client import Client
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

    from api.client import ChecksumMismatch, Client, ModelregError

    client = Client.from_config(state.url, state.token)
    try:
        yield client
    except ModelregError as exc:
        extra = {
            k: v
            for k, v in exc.problem.items()
            if k not in ("type", "title", "status", "detail", "instance")
        }
        hint = f"\n  {json.dumps(extra)}" if extra else ""
        fail(f"{exc.status} {exc.title}: {exc.detail}{hint}")
    except ChecksumMismatch as exc:
        fail(str(exc))
    except httpx.TransportError as exc:
        fail(
            f"cannot reach modelreg at {client.base_url}: {exc}. Is `modelreg serve` running?",
            code=2,
        )
    finally:
        client.close()


@contextmanager
def problems_in_one_line() -> Iterator[None]:
    """Inside :func:`open_client`, for commands whose 422s (a filter, an ``orderBy``, a tag key
    or value) say all in their detail, the filter's position included: such a problem prints
    as its status, title and detail on one line, without the extra members that repeat it.
    Any other error is left to :func:`open_client`."""
    from api.client import ModelregError

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
