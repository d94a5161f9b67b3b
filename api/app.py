"""The FastAPI application factory. Nothing happens at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api import metrics
from api.limits import BodyLimitMiddleware, NulMiddleware
from api.problems import COMMON_ERRORS, install_problem_handlers, problem_responses
from api.routes import (
    deployments,
    endpoints,
    feedback,
    health,
    keys,
    models,
    validations,
    versions,
)
from registry.services import Registry, build_registry
from registry.settings import Settings

API_PREFIX = "/api/v1"
MAX_CONCURRENT_UPLOADS = 16


class App(FastAPI):
    """FastAPI, with the resolve fast path in front of everything (FastAPI's own per-request
    work, every middleware, the router): see ``api.routes.endpoints.ResolveFastPath``."""

    fast_path: endpoints.ResolveFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and await fast.serve(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, registry: Registry | None = None, fast_resolve: bool = True
) -> App:
    """The API. ``fast_resolve=False`` leaves endpoint resolution to its route alone (the
    tests compare the two)."""
    settings = settings or Settings()
    registry = registry or build_registry(settings)
    upload_executor = ThreadPoolExecutor(MAX_CONCURRENT_UPLOADS, thread_name_prefix="upload")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything allocated while starting up lives as long as the process: keep it out of
        # the collector's full passes, which otherwise stall every request for tens of ms.
        gc.freeze()
        yield
        upload_executor.shutdown(wait=False, cancel_futures=True)
        registry.close()

    app = App(
        title="modelreg",
        version="0.1.0",
        summary="Model registry and deployment controller",
        description="Register models, upload versions, and move them through their lifecycle. "
        "Every route under /api/v1 needs `Authorization: Bearer <apiKey>.<secret>`. "
        "Errors are application/problem+json.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.settings = settings
    app.state.upload_executor = upload_executor
    app.state.metrics_database = metrics.scrape_registry(registry)
    app.state.metrics_processes = metrics.process_metrics()
    app.state.readiness = health.ReadinessLog()
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_json_body_bytes)
    app.add_middleware(NulMiddleware)
    if fast_resolve:
        app.fast_path = endpoints.ResolveFastPath(prefix=API_PREFIX, registry=registry)
    # Outside the exception handlers: it sees the status the client gets, 4xx/5xx included.
    app.add_middleware(metrics.MetricsMiddleware, routes=app)
    if settings.trusted_proxies:
        # Outermost: every layer (the failed-auth throttle above all) sees the client a
        # trusted proxy names, and X-Forwarded-For from anyone else is ignored.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.include_router(health.router)
    for router in (
        endpoints.router,  # first: the hot path, matched before every other route
        models.router,
        versions.router,
        validations.router,
        keys.router,
        deployments.router,
        feedback.router,
    ):
        app.include_router(router, prefix=API_PREFIX, responses=problem_responses(*COMMON_ERRORS))
    # Last: scrapes are rare, API requests should not try its pattern first. It needs no key
    # (Prometheus scrapes it) and exposes no secret; see api/metrics.py.
    app.include_router(metrics.router)
    _problem_only_errors(app)
    return app


def _problem_only_errors(app: FastAPI) -> None:
    """Error responses are problem+json only (FastAPI would also list application/json)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    for code, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if code[0] in "45" and "application/problem+json" in content:
                            content.pop("application/json", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
