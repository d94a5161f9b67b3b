"""``modelreg serve-model`` as a real process, on a free port, with its output captured."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_env() -> dict[str, str]:
    """This environment without MODELREG_* settings: the test names the ones it wants."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}


class ServerProcess:
    """``python -m api.cli serve-model ...`` on a free port; output captured to a file."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"server-{self.port}.log"
        command = [sys.executable, "-m", "api.cli", "serve-model"]
        command += ["--model", "m", "--version", "1", "--port", str(self.port), *args]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**clean_env(), "COLUMNS": "400", **(env or {})},
                cwd=Path(__file__).resolve().parents[2],
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"the server exited early:\n{self.output()}")
                try:
                    if client.get(f"{self.url}/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"the server did not become ready:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
