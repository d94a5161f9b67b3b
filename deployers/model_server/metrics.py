"""A model server's Prometheus metrics, in a registry of its own (``GET /metrics``), and the
ASGI middleware that counts every HTTP request by route template (never the raw path).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS", "CountRequests", "ServerMetrics"]

#: Inference latency buckets, in seconds: 0.5 ms to 10 s.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServerMetrics:
    """The metrics of one model server, labelled with its model and version."""

    def __init__(self, *, model: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._labels = (model, version)
        self.requests = Counter(
            "modelreg_model_server_requests",
            "HTTP requests, by route template and status code.",
            ["model", "version", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "modelreg_model_server_inference_errors",
            "Inference runs that onnxruntime failed.",
            ["model", "version"],
            registry=self.registry,
        ).labels(model, version)
        self.duration = Histogram(
            "modelreg_model_server_inference_duration_seconds",
            "Time onnxruntime took to run one inference request.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(model, version)
        self.ready = Gauge(
            "modelreg_model_server_ready",
            "1 while the model is loaded and served, else 0.",
            ["model", "version"],
            registry=self.registry,
        ).labels(model, version)
        self._children: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int) -> None:
        child = self._children.get((route, status))
        if child is None:
            child = self.requests.labels(*self._labels, route, str(status))
            self._children[(route, status)] = child
        child.inc()


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class CountRequests:
    """ASGI middleware: counts every HTTP request by route template (never the raw path)."""

    def __init__(
        self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]], *, metrics: ServerMetrics
    ) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counted(message: _Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.count_request(route, status)
