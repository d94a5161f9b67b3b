"""The model server's HTTP side: ``create_model_app`` builds the FastAPI app with the Open
Inference Protocol routes (health, server and model metadata, readiness, ``infer``) and
``/metrics``, over one :class:`~deployers.model_server.session.ModelServer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from deployers.model_server.limits import (
    DEFAULT_MAX_BODY_BYTES,
    BodyTooLarge,
    read_body,
    refuse_body_too_large,
)
from deployers.model_server.metrics import CountRequests
from deployers.model_server.session import ModelServer
from deployers.model_server.tensors import InferenceRequestError

__all__ = ["create_model_app"]


def create_model_app(
    *,
    model_name: str,
    version: str,
    model_path: Path,
    model_file: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """A FastAPI app serving the ONNX model at ``model_path`` (a file, or an unpacked bundle
    in which ``model_file`` names the model when it holds several) over OIP; the session is
    loaded now. Inference bodies over ``max_body_bytes`` are answered 413.
    ``app.state.model_server`` is the :class:`ModelServer`."""
    server = ModelServer(
        model_name=model_name, version=version, model_path=model_path, model_file=model_file
    )
    try:
        server_version = package_version("modelreg")
    except PackageNotFoundError:
        server_version = "unknown"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    app = FastAPI(
        title=f"modelreg model server: {model_name} {version}",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.model_server = server
    app.add_middleware(CountRequests, metrics=server.metrics)

    def answer(status: int, body: bytes) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    def refused(exc: InferenceRequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "modelreg-model-server", "version": server_version, "extensions": []}

    def model_metadata(name: str, model_version: str | None = None) -> Response:
        try:
            server.check_target(name, model_version)
        except InferenceRequestError as exc:
            return refused(exc)
        return JSONResponse(server.metadata())

    def model_ready(name: str, model_version: str | None = None) -> Response:
        try:
            server.check_target(name, model_version)
        except InferenceRequestError as exc:
            return refused(exc)
        return JSONResponse(
            {"name": name, "ready": server.ready}, status_code=200 if server.ready else 503
        )

    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        try:
            server.check_target(name, model_version)
        except InferenceRequestError as exc:
            return refused(exc)
        try:
            body = await read_body(request, limit=max_body_bytes)
        except BodyTooLarge:
            return refuse_body_too_large(max_body_bytes)
        return answer(*await run_in_threadpool(server.infer, body))

    @app.get("/v2/models/{name}")
    async def get_model(name: str) -> Response:
        return model_metadata(name)

    @app.get("/v2/models/{name}/versions/{model_version}")
    async def get_model_version(name: str, model_version: str) -> Response:
        return model_metadata(name, model_version)

    @app.get("/v2/models/{name}/ready")
    async def get_model_ready(name: str) -> Response:
        return model_ready(name)

    @app.get("/v2/models/{name}/versions/{model_version}/ready")
    async def get_model_version_ready(name: str, model_version: str) -> Response:
        return model_ready(name, model_version)

    @app.post("/v2/models/{name}/infer")
    async def post_infer(request: Request, name: str) -> Response:
        return await infer(request, name)

    @app.post("/v2/models/{name}/versions/{model_version}/infer")
    async def post_version_infer(request: Request, name: str, model_version: str) -> Response:
        return await infer(request, name, model_version)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
