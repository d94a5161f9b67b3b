"""The real app under uvicorn, in process, for tests that talk to it over HTTP."""

from __future__ import annotations

import threading
import time

import uvicorn

from api.app import create_app
from api.server import uvicorn_config
from registry.services import Registry
from tests.support.ports import free_port


class LiveServer:
    """The real app under uvicorn, on a free loopback port, in a background thread."""

    def __init__(self, registry: Registry) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(registry.settings, registry=registry)
        # The configuration `modelreg serve` runs with (header and keep-alive limits, proxy
        # headers left to the app), so that tests see what production sees.
        settings = registry.settings.model_copy(
            update={"host": "127.0.0.1", "port": self.port, "log_level": "WARNING"}
        )
        config = uvicorn_config(app, settings)
        config.lifespan = "off"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
