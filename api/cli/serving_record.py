"""What ``modelreg serve`` leaves behind once its port is bound: the CLI's credentials file
(this server's URL, and on the first start the admin key) and ``<data dir>/serve.json``, the
address it really listens on, for the commands that need it (``prometheus-targets --api``).

Nothing is written before the bind: a start that fails on a taken port leaves the previous
file as it was, and no admin key is created that nobody could read.
"""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.context import write_credentials
from api.cli.output import out

if TYPE_CHECKING:
    from registry.services.keys import IssuedKey
    from registry.settings import Settings

RECORD_NAME = "serve.json"


def announce_credentials(settings: Settings, issued: IssuedKey | None) -> None:
    """Point the credentials file at this server; with a new admin key, save and print it."""
    path = settings.credentials_file
    if issued is not None:
        write_credentials(path, url=settings.client_url, token=issued.token)
        out.print(
            f"[bold green]Created the admin API key[/], saved for the CLI in {path} "
            "(mode 0600) and printed only this once:",
            highlight=False,
        )
        out.print(f"  {issued.token}", highlight=False, soft_wrap=True)
        return
    token = _saved_token(path)
    if token is not None:
        write_credentials(path, url=settings.client_url, token=token)


def _saved_token(path: Path) -> str | None:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text())
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    return parser.get("default", "token", fallback=None) or None


def record_serving(settings: Settings) -> None:
    path = settings.data_dir / RECORD_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"url": settings.client_url, "pid": os.getpid()}))
    os.replace(tmp, path)


def forget_serving(settings: Settings) -> None:
    path = settings.data_dir / RECORD_NAME
    if _recorded_pid(path) == os.getpid():
        path.unlink(missing_ok=True)


def serving_url(settings: Settings) -> str | None:
    """The URL of the ``modelreg serve`` running on this data folder, if one is."""
    path = settings.data_dir / RECORD_NAME
    pid = _recorded_pid(path)
    if pid is None or not Path(f"/proc/{pid}").exists():
        return None
    try:
        url = json.loads(path.read_text()).get("url")
    except (OSError, ValueError):
        return None
    return url if isinstance(url, str) else None


def _recorded_pid(path: Path) -> int | None:
    try:
        pid = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None
