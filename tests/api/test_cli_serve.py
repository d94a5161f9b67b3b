"""``modelreg serve`` and the credentials file it leaves for the CLI: written only once the
port is really bound, and pointed at the URL of the latest start."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from tests.support.ports import free_port
from tests.support.serve_process import modelreg, serve, stop, wait_ready


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(HOME=str(home), MODELREG_DATA_DIR=str(home / "data"), COLUMNS="200")
    env["MODELREG_CREDENTIALS_FILE"] = str(home / "credentials")
    env["MODELREG_CONTROLLER_ENABLED"] = "false"
    env["MODELREG_WORKER_ENABLED"] = "false"
    return env


def _saved(home: Path) -> dict[str, str]:
    lines = (home / "credentials").read_text().splitlines()
    return dict(line.split(" = ", 1) for line in lines if " = " in line)


def test_a_failed_bind_leaves_no_credentials_and_the_next_start_saves_its_own_url(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        failed = serve(env, busy)
        output = "".join(failed.communicate(timeout=60))
    assert failed.returncode == 3, output
    assert not (tmp_path / "credentials").exists(), "nothing written for a port not ours"
    assert "mr_" not in output, "no admin key is created by a start that failed"

    port = free_port()
    proc = serve(env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        saved = _saved(tmp_path)
        assert saved["url"] == f"http://127.0.0.1:{port}"
        assert stat.S_IMODE((tmp_path / "credentials").stat().st_mode) == 0o600
        listed = modelreg("models", "list", env=env)
        assert listed.returncode == 0, listed.stderr
    finally:
        output = "".join(stop(proc))
    said = [line for line in output.splitlines() if "admin API key" in line]
    assert len(said) == 1, output
    assert str(tmp_path / "credentials") in said[0], "one line says where the key was saved"
    assert "never stored" not in output
    assert output.count(saved["token"]) == 1


def test_every_start_points_the_credentials_at_its_own_url(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = free_port()
    proc = serve(env, first)
    try:
        wait_ready(f"http://127.0.0.1:{first}", proc)
        token = _saved(tmp_path)["token"]
    finally:
        stop(proc)
    second = free_port()
    proc = serve(env, second)
    try:
        wait_ready(f"http://127.0.0.1:{second}", proc)
        assert _saved(tmp_path) == {"url": f"http://127.0.0.1:{second}", "token": token}
        recorded = modelreg("prometheus-targets", "--api", env=env)
        assert recorded.returncode == 0, recorded.stderr
        assert f'"127.0.0.1:{second}"' in recorded.stdout, "the API's real address"
        assert "modelreg-controller" not in recorded.stdout, "this serve runs no controller"
    finally:
        output = "".join(stop(proc))
    assert "mr_" not in output
    assert not (tmp_path / "data" / "serve.json").exists(), "a clean stop forgets its address"
