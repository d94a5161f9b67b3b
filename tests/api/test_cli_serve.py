"""``modelreg serve`` and the credentials file it leaves for the CLI: written only once the
port is really bound, and pointed at the URL of the latest start."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(HOME=str(home), MODELREG_DATA_DIR=str(home / "data"), COLUMNS="200")
    env["MODELREG_CREDENTIALS_FILE"] = str(home / "credentials")
    env["MODELREG_CONTROLLER_ENABLED"] = "false"
    env["MODELREG_WORKER_ENABLED"] = "false"
    return env


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _until_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("modelreg serve did not become ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


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
        failed = _serve(env, busy)
        output = failed.communicate(timeout=60)[0]
    assert failed.returncode == 3, output
    assert not (tmp_path / "credentials").exists(), "nothing written for a port not ours"
    assert "mr_" not in output, "no admin key is created by a start that failed"

    port = free_port()
    proc = _serve(env, port)
    try:
        _until_ready(proc, port)
        saved = _saved(tmp_path)
        assert saved["url"] == f"http://127.0.0.1:{port}"
        assert stat.S_IMODE((tmp_path / "credentials").stat().st_mode) == 0o600
        listed = subprocess.run(
            [sys.executable, "-m", "api.cli", "models", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        output = _stop(proc)
    said = [line for line in output.splitlines() if "admin API key" in line]
    assert len(said) == 1, output
    assert str(tmp_path / "credentials") in said[0], "one line says where the key was saved"
    assert "never stored" not in output
    assert output.count(saved["token"]) == 1


def test_every_start_points_the_credentials_at_its_own_url(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = free_port()
    proc = _serve(env, first)
    try:
        _until_ready(proc, first)
        token = _saved(tmp_path)["token"]
    finally:
        _stop(proc)
    second = free_port()
    proc = _serve(env, second)
    try:
        _until_ready(proc, second)
        assert _saved(tmp_path) == {"url": f"http://127.0.0.1:{second}", "token": token}
        recorded = subprocess.run(
            [sys.executable, "-m", "api.cli", "prometheus-targets", "--api"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert f'"127.0.0.1:{second}"' in recorded.stdout, "the API's real address"
    finally:
        output = _stop(proc)
    assert "mr_" not in output
    assert not (tmp_path / "data" / "serve.json").exists(), "a clean stop forgets its address"
