"""A live modelreg for end-to-end tests: ``modelreg serve`` as a real process on the embedded
defaults, with an authenticated client and helpers to deploy, wait and resolve."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.ports import free_port

T = TypeVar("T")
TERMINAL = ("Active", "RolledBack", "Failed")


class Modelreg:
    """One ``modelreg serve`` process and an authenticated client for it."""

    def __init__(
        self, home: Path, *, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
        self.env.update(
            HOME=str(home),
            MODELREG_DATA_DIR=str(home / "data"),
            MODELREG_CREDENTIALS_FILE=str(home / "credentials"),
            MODELREG_CONTROLLER_INTERVAL_SECONDS="0.5",
            MODELREG_WORKER_POLL_SECONDS="0.2",
            MODELREG_CONTROLLER_LEASE_SECONDS="3",
            # serve's controller serves its metrics on a port of its own: one per test
            MODELREG_CONTROLLER_METRICS_PORT=str(free_port()),
            MODELREG_LOG_LEVEL="INFO",
        )
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: httpx.Client | None = None
        self.token = ""

    def start(self) -> Modelreg:
        log = (self.home / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"modelreg serve exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"modelreg serve did not start:\n{self.log()}")
            time.sleep(0.1)
        token = (self.home / "credentials").read_text().split("token = ")[1].strip()
        self.token = token
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        return self

    def log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease release; model servers keep running."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.http is not None:
            self.http.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.http is not None:
            self.http.close()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``modelreg ARGS`` to the end, with this server's settings."""
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(
        self, *args: str, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``modelreg ARGS`` (``worker``, say) with this server's settings, plus ``env``,
        in a process group of its own; its output goes to ``home/log``."""
        with (self.home / log).open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "api.cli", *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def server_pids(self) -> dict[str, int]:
        """Live model-server processes the local deployer recorded: instance file → pid."""
        pids = {}
        for record in (self.home / "data" / "servers" / "instances").glob("*.json"):
            try:
                pid = int(json.loads(record.read_text())["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if Path(f"/proc/{pid}").exists():
                pids[record.name] = pid
        return pids

    def kill_servers(self) -> None:
        for pid in self.server_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- the API --------------------------------------------------------------------------

    @property
    def api(self) -> httpx.Client:
        assert self.http is not None
        return self.http

    def new_version(self, model: str, number: str) -> dict[str, Any]:
        """Version ``number`` of ``model`` (created too, if need be), with no artifact yet."""
        api = self.api
        if api.get(f"/api/v1/models/{model}").status_code == 404:
            created = api.post(
                "/api/v1/models",
                json={"name": model, "taskType": "ImageGeneration", "provider": "Internal"},
            )
            assert created.status_code == 201, created.text
        made = api.post(f"/api/v1/models/{model}/versions", json={"versionNumber": number})
        assert made.status_code == 201, made.text
        result: dict[str, Any] = made.json()
        return result

    def version(self, model: str, number: str, artifact: bytes) -> None:
        self.new_version(model, number)
        put = self.api.put(
            f"/api/v1/models/{model}/versions/{number}/artifact",
            content=artifact,
            params={"filename": "model.onnx"},
        )
        assert put.status_code == 201, put.text

    def validated(self, model: str, number: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            runs = self.api.get(f"/api/v1/models/{model}/versions/{number}/validations").json()
            return runs[0] if runs and runs[0]["status"] == "Done" else None

        return wait_for(done, what=f"validation of {model} {number}", timeout=120)

    def deploy(self, model: str, number: str, **body: Any) -> dict[str, Any]:
        response = self.api.post(
            "/api/v1/deployments",
            json={"model": model, "versionNumber": number, "environment": "production", **body},
        )
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    def deployment(self, dep_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api.get(f"/api/v1/deployments/{dep_id}").json()
        return result

    def until_status(self, dep_id: str, *statuses: str, timeout: float = 90) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            dep = self.deployment(dep_id)
            if dep["status"] in statuses:
                return dep
            return None

        try:
            return wait_for(reached, what=f"deployment {dep_id} {statuses}", timeout=timeout)
        except AssertionError:
            raise AssertionError(
                f"{self.deployment(dep_id)}\n{self.events(dep_id)}\n{self.log()}"
            ) from None

    def events(self, dep_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api.get(f"/api/v1/deployments/{dep_id}/events").json()
        return result

    def resolve(
        self, model: str, *, key: str | None = None, environment: str = "production"
    ) -> dict[str, Any] | None:
        params = {"environment": environment, **({"key": key} if key else {})}
        response = self.api.get(f"/api/v1/models/{model}/endpoint", params=params)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def weights(self, model: str, environment: str = "production") -> dict[str, int]:
        answer = self.resolve(model, environment=environment)
        if answer is None:
            return {}
        return {e["versionNumber"]: e["weight"] for e in answer["endpoints"]}

    def until_weights(
        self,
        model: str,
        expected: dict[str, int],
        *,
        environment: str = "production",
        timeout: float = 90,
    ) -> None:
        wait_for(
            lambda: self.weights(model, environment) == expected or None,
            what=f"weights {expected}",
            timeout=timeout,
        )

    def settled_weights(
        self, model: str, expected: dict[str, int], *, environment: str = "production"
    ) -> None:
        """The weights resolution gives once the controller's last write reaches the API. The
        controller is a process of its own, so the API sees its writes through the routing
        generation poll (0.25 s, docs/api.md), not at once; 10 s allows for a loaded machine."""
        self.until_weights(model, expected, environment=environment, timeout=10)


def wait_for(check: Callable[[], T | None], *, what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def infer(url: str, model: str) -> float:
    """What the model at ``url`` adds to zero."""
    response = httpx.post(
        f"{url}/v2/models/{model}/infer",
        json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    value: float = response.json()["outputs"][0]["data"][0]
    return value
