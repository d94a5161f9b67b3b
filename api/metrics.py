"""The API's Prometheus metrics: a request-counting ASGI middleware and ``GET /metrics``.

``MetricsMiddleware`` is a plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a
task and a stream per request). It labels each request with the *route template* the router
matched (``/api/v1/models/{name}/endpoint``), read from ``scope["route"]`` after the app has
run; a path no route matches is labelled ``<unmatched>``, so a raw path never becomes a label.
Label children are cached per (route, method, status), so a request costs one dictionary
lookup, one counter increment and one histogram observation.

``GET /metrics`` needs no API key: Prometheus scrapes it. ``MODELREG_METRICS_TOKEN`` may demand a
Bearer token of its own (see :func:`check_metrics_token`). It exposes no secret: only counts,
durations and database aggregates, labelled by route template, method, status, model,
version, environment, result and the like (low cardinality; never a user, a key, a request
id or a raw path).

Under ``modelreg serve`` (``PROMETHEUS_MULTIPROC_DIR`` set, see ``api.supervisor``) the
counters, histograms and gauges of every API process and of the validation worker live in
files there, and :func:`process_metrics` sums them: one scrape of the port, whichever process
answers it, gives the totals. The database gauges are read once, by the process that answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.errors import Unauthorized
from registry.metrics import HTTP_DURATION, HTTP_REQUESTS, METRICS, DatabaseCollector
from registry.services import Registry
from registry.services.feedback import serving_mean_ratings
from registry.settings import Settings

UNMATCHED = "<unmatched>"
#: Methods reported as themselves; any other (a client may send anything) is ``OTHER``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_CHILDREN = 10_000

_Children = tuple[Any, Any]  # (counter child, histogram child)


class MetricsMiddleware:
    """Counts every HTTP request by route template, method and status, and times it.

    ``routes`` is the app whose route table gives the templates: FastAPI (0.16x) keeps
    included routers nested, so ``scope["route"]`` is the route as its router declared it
    (``/models/{name}``, without the ``/api/v1`` prefix). The full template of each route is
    looked up once, in the app's route contexts, the first time the route answers.
    """

    def __init__(self, app: ASGIApp, *, routes: Starlette) -> None:
        self.app = app
        self._routes = routes
        # (id of the matched route or 0, method, status) -> (counter child, histogram child)
        self._children: dict[tuple[int, str, int], _Children] = {}
        self._templates: dict[int, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            key = (0 if route is None else id(route), scope["method"], status)
            children = self._children.get(key)
            if children is None:
                children = self._bind(key, route)
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

    def _bind(self, key: tuple[int, str, int], route: BaseRoute | None) -> _Children:
        _, method, status = key
        template = UNMATCHED if route is None else self._template(route)
        children = request_children(template, method, status)
        if len(self._children) >= _MAX_CHILDREN:  # odd methods: bound the cache, not the labels
            self._children.clear()
        self._children[key] = children
        return children

    def _template(self, route: BaseRoute) -> str:
        template = self._templates.get(id(route))
        if template is None:
            self._templates = route_templates(self._routes)
            template = self._templates.get(id(route)) or getattr(route, "path", "") or UNMATCHED
            self._templates[id(route)] = template
        return template


def request_children(template: str, method: str, status: int) -> _Children:
    """The request counter's and the duration histogram's children for one answer; also used
    by the resolve fast path, which answers ahead of this middleware."""
    label = method if method in METHODS else "OTHER"
    return HTTP_REQUESTS.labels(template, label, str(status)), HTTP_DURATION.labels(template, label)


def route_templates(app: Starlette) -> dict[int, str]:
    """id of each route object in ``app`` -> its full path template (prefixes included)."""
    templates: dict[int, str] = {}
    for context in iter_route_contexts(app.routes):
        path = context.path_format
        if path:
            templates.setdefault(id(context.original_route), path)
    return templates


def scrape_registry(registry: Registry) -> CollectorRegistry:
    """The database-backed gauges of this app's registry, in a registry of their own."""
    scraped = CollectorRegistry(auto_describe=True)
    scraped.register(DatabaseCollector(registry.sessions, mean_ratings=serving_mean_ratings))
    return scraped


#: prometheus_client leaves its ``__init__`` unannotated: (registry, path), registering itself.
_sum_into: Callable[[CollectorRegistry, str], Collector] = MultiProcessCollector


def process_metrics() -> CollectorRegistry:
    """What ``/metrics`` reports besides the database gauges: :data:`METRICS` of this process,
    or, with ``PROMETHEUS_MULTIPROC_DIR`` set (which prometheus_client read at import, so
    :data:`METRICS` writes there too), the sum over every process that writes there."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return METRICS
    summed = CollectorRegistry()
    _sum_into(summed, directory)
    return summed


class _Forward(Collector):
    """Exposes another registry's metrics through this one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()


def serve_metrics(registry: Registry, *, host: str, port: int) -> None:
    """Serve this process's metrics and the database gauges on ``http://host:port/metrics``
    from a daemon thread: for processes without the API (``modelreg controller``)."""
    combined = scrape_registry(registry)
    combined.register(_Forward(METRICS))
    start_http_server(port, addr=host, registry=combined)


router = APIRouter()


def check_metrics_token(request: Request) -> None:
    """With ``MODELREG_METRICS_TOKEN`` set, a scrape must send it as a Bearer token. The two are
    compared as SHA-256 digests, in constant time: neither content nor length leaks."""
    settings: Settings = request.app.state.settings
    expected = settings.metrics_token.get_secret_value()
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    digest = hashlib.sha256(given.strip().encode()).digest()
    if not hmac.compare_digest(digest, hashlib.sha256(expected.encode()).digest()) or (
        scheme.lower() != "bearer"
    ):
        raise Unauthorized(
            "/metrics needs 'Authorization: Bearer <token>' with the MODELREG_METRICS_TOKEN"
        )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """The Prometheus text exposition: the processes' metrics, then the database gauges."""
    check_metrics_token(request)
    database: CollectorRegistry = request.app.state.metrics_database
    processes: CollectorRegistry = request.app.state.metrics_processes
    # The database gauges first: a failed read counts in METRICS' collect-error counter.
    tail = generate_latest(database)
    return Response(generate_latest(processes) + tail, media_type=CONTENT_TYPE_LATEST)
