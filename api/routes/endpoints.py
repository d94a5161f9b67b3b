"""/api/v1/models/{name}/endpoint: which endpoint should serve this request. The hot path.

The answer comes from ``registry.services.endpoints`` with its JSON already serialized; the
route only splices in the pick. Three things keep a request short (numbers in
docs/benchmarks.md, "Endpoint resolution"):

* The route and its auth dependency are ``async``, so that a request whose answer and token are
  both cached never leaves the event loop. A hop to the thread pool costs more than the whole
  answer, and under load the pool's threads fight for the GIL.
* Auth is still ``api.deps.require(Scope.MODELS_READ)``, the one check every route uses. Only
  *where* it runs is decided here: on the event loop when this process verified the same token
  recently (``KeyService`` then answers from its cache, without I/O), in the thread pool
  otherwise (a first sight, an unknown or a wrong token: these may query the database, and must
  not block the loop).
* What must leave the loop (that token check, and a cache miss: the first request after a
  route change) runs once per token, or per model and environment, at a time: the requests
  that arrive meanwhile wait for its answer instead of each taking a thread. It runs on a few
  threads of its own (``_HOT_THREADS``), not in the thread pool that the synchronous routes
  share: under mixed load that pool is full of feedback and upload requests, and a resolution
  queued behind them waited for seconds ("Mixed load" in docs/benchmarks.md).
* ``EndpointRoute`` reads the four parameters itself instead of FastAPI's generic dependency
  and validation machinery (which cost more than the rest of the request). The route is still
  declared with ordinary FastAPI annotations, so the OpenAPI document is the same, and it
  applies the same checks with the same 401/403/422 problem answers.
* In front of all that, ``ResolveFastPath`` (the first thing the app does with a request)
  answers a request whose token and answer are both cached without FastAPI, its middleware
  or the router at all; every other request goes on to the route
  (tests/api/test_resolve_fast_path.py checks that both give the same bytes).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import Field

from api.deps import _bearer, get_registry, require
from api.metrics import request_children
from api.schemas import MODEL_NAME_PATTERN, Environment, ModelName, OutBody, RouteRole
from api.streaming import if_none_match_matches
from registry import vocabulary
from registry.auth import Principal, Scope
from registry.metrics import ENDPOINT_RESOLUTIONS
from registry.models import ENVIRONMENTS
from registry.services import Registry
from registry.services.endpoints import EndpointSet

_check_read = require(Scope.MODELS_READ)
#: Tokens this process verified recently are re-checked on the event loop for this share of
#: ``auth_cache_seconds`` after their last check in the thread pool (the key cache keeps a
#: verified token for at least that long, unless it is revoked here, which only costs one
#: database lookup on the loop).
_ON_LOOP_SHARE = 0.5
_MAX_WARM = 10_000


#: Threads for what the hot path must do off the event loop (see the module docstring).
_HOT_THREADS = 4
_FAILED = object()
T = TypeVar("T")
#: (event loop, the calls running by key, the threads' limiter)
_Hot = tuple[asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[Any]], anyio.CapacityLimiter]


async def off_loop_once(request: Request, key: Hashable, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a thread of the hot path's own; a caller that comes while a call with
    the same ``key`` runs waits for that call's result instead. If that call fails, each
    waiter makes its own (so that each gets, and counts, its own error)."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    hot: _Hot | None = getattr(state, "endpoint_hot", None)
    if hot is None or hot[0] is not loop:  # one per event loop (tests run several)
        hot = state.endpoint_hot = (loop, {}, anyio.CapacityLimiter(_HOT_THREADS))
    _, running, limiter = hot
    shared = running.get(key)
    if shared is not None:
        # shield: a caller that goes away must not cancel the call the others wait for.
        result = await asyncio.shield(shared)
        if result is not _FAILED:
            return cast(T, result)
    mine: asyncio.Future[Any] = loop.create_future()
    running[key] = mine
    outcome: Any = _FAILED
    try:
        outcome = await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=limiter)
    finally:
        if running.get(key) is mine:
            del running[key]
        mine.set_result(outcome)
    return cast(T, outcome)


async def read_scope(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """``require(Scope.MODELS_READ)``, run on the event loop when that costs no I/O."""
    if credentials is None:
        return _check_read(request, credentials)  # raises 401, no I/O
    state = request.app.state
    warm: dict[str, float] | None = getattr(state, "endpoint_warm_tokens", None)
    if warm is None:
        warm = state.endpoint_warm_tokens = {}
    fingerprint = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    now = time.monotonic()
    if warm.get(fingerprint, 0.0) > now:
        try:
            return _check_read(request, credentials)
        except Exception:
            warm.pop(fingerprint, None)  # revoked (or lost its scope): back to the thread pool
            raise
    warm.pop(fingerprint, None)
    principal: Principal = await off_loop_once(
        request, ("token", fingerprint), _check_read, request, credentials
    )
    request.state.principal = principal
    if len(warm) >= _MAX_WARM:
        warm.clear()
    registry: Registry = request.app.state.registry
    warm[fingerprint] = now + registry.keys.cache_seconds * _ON_LOOP_SHARE
    return principal


Reader = Annotated[Principal, Depends(read_scope)]
Reg = Annotated[Registry, Depends(get_registry)]

JSON = "application/json"
KEY_MAX = 200


class Endpoint(OutBody):
    version_number: str
    model_version_id: str
    deployment_id: str
    url: str
    weight: int = Field(ge=0, le=100)
    role: RouteRole


class SelectedEndpoint(OutBody):
    version_number: str
    model_version_id: str
    url: str


class EndpointAnswer(OutBody):
    model: str
    environment: str
    generation: int = Field(description="The routing generation this answer was read at")
    endpoints: list[Endpoint] = Field(
        description="Every endpoint of the model in the environment, in the sticky-pick order: "
        "role canary, active, stable, preview, then by version number"
    )
    selected: SelectedEndpoint | None = Field(
        description="A weighted pick among the endpoints with weight > 0 (sticky with `key`); "
        "null only when every endpoint has weight 0"
    )


_RESOLUTION_COUNTERS: dict[tuple[str, str, bool], Any] = {}


def count_resolution(model: str, environment: str, *, hit: bool) -> None:
    """``modelreg_endpoint_resolutions_total{model,environment,cache}``, one dict lookup a
    request. Only answered resolutions count: a name that resolved exists, so clients cannot
    mint label values with made-up names (those 404s count by route template only)."""
    key = (model, environment, hit)
    child = _RESOLUTION_COUNTERS.get(key)
    if child is None:
        if len(_RESOLUTION_COUNTERS) >= _MAX_WARM:  # bounds the cache, not the labels
            _RESOLUTION_COUNTERS.clear()
        child = ENDPOINT_RESOLUTIONS.labels(model, environment, "hit" if hit else "miss")
        _RESOLUTION_COUNTERS[key] = child
    child.inc()


class EndpointRoute(APIRoute):
    """Serves ``resolve_endpoint`` without FastAPI's per-request dependency solving."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return handle_resolve


_NAME = re.compile(MODEL_NAME_PATTERN)


async def handle_resolve(request: Request) -> Response:
    """What FastAPI would do for ``resolve_endpoint``'s signature, written out: auth first
    (so an anonymous caller learns nothing), then the path and query checks."""
    principal = await read_scope(request, await _bearer(request))
    name: str = request.path_params["name"]
    query = request.query_params
    environment = query.get("environment", vocabulary.Environment.PRODUCTION.value)
    key = query.get("key")
    errors: list[dict[str, Any]] = []
    if not _NAME.match(name):
        msg = f"String should match pattern '{MODEL_NAME_PATTERN}'"
        errors.append(
            {
                "loc": ("path", "name"),
                "msg": msg,
                "type": "string_pattern_mismatch",
                "ctx": {"pattern": MODEL_NAME_PATTERN},
            }
        )
    if environment not in ENVIRONMENTS:
        msg = "Input should be " + ", ".join(repr(e) for e in ENVIRONMENTS)
        errors.append({"loc": ("query", "environment"), "msg": msg, "type": "literal_error"})
    if key is not None and not 1 <= len(key) <= KEY_MAX:
        msg = f"String should have 1 to {KEY_MAX} characters"
        errors.append({"loc": ("query", "key"), "msg": msg, "type": "string_length"})
    if errors:
        raise RequestValidationError(errors)
    return await resolve_endpoint(
        name, principal, request.app.state.registry, request, environment=environment, key=key
    )


router = APIRouter(prefix="/models", tags=["endpoints"], route_class=EndpointRoute)


@router.get(
    "/{name}/endpoint",
    response_model=EndpointAnswer,
    summary="Resolve the endpoint that serves a model now",
    description="The weighted set of endpoints serving the model in the environment (for "
    "example 90/10 during a canary) and one weighted pick. With `key` (a user id, a session "
    "id) the pick is sticky: the same key gets the same endpoint while the set is unchanged, "
    "and a key on a rollout's candidate stays on it as the candidate's weight grows. "
    "`ETag` identifies the set (not the pick); `If-None-Match` gives 304. "
    "404 when the model does not exist, or when nothing serves it in the environment.",
    responses={304: {"description": "The endpoint set has not changed since that ETag"}},
)
async def resolve_endpoint(
    name: ModelName,
    _: Reader,
    reg: Reg,
    request: Request,
    environment: Annotated[
        Environment, Query(description="Deployment environment")
    ] = vocabulary.Environment.PRODUCTION.value,
    key: Annotated[
        str | None,
        Query(min_length=1, max_length=KEY_MAX, description="Makes the pick sticky to this key"),
    ] = None,
) -> Response:
    answer = reg.endpoints.cached(name, environment)
    if answer is None:
        answer = await off_loop_once(
            request, ("resolve", name, environment), reg.endpoints.resolve, name, environment
        )
        count_resolution(name, environment, hit=False)
    else:
        count_resolution(name, environment, hit=True)
    return respond(request, answer, key)


def respond(request: Request, answer: EndpointSet, key: str | None) -> Response:
    """The answer (200, or 304 for a matching ``If-None-Match``): the route's and the fast
    path's."""
    headers = {"ETag": answer.etag, "Cache-Control": "no-cache"}
    if if_none_match_matches(request.headers.get("if-none-match"), answer.etag):
        return Response(status_code=304, headers=headers)
    return Response(answer.body(key), media_type=JSON, headers=headers)


class ResolveFastPath:
    """What the app does first with every request (``api.app.App``): it answers
    ``resolve_endpoint`` itself when it can do so without I/O (a bearer token this process
    verified within ``auth_cache_seconds`` that holds the ``models:read`` scope, valid
    parameters, and a cached answer), ahead of FastAPI, all its middleware and the router, and
    sends what the route would send, byte for byte.

    Anything else (no token, an unknown or a wrong one, a missing scope, a parameter the route
    would refuse, a NUL character, a cache miss) goes on to the app, untouched: the errors, the
    failed-auth throttle and the miss are the route's own. It reads the query string and the
    headers as Starlette and ``HTTPBearer`` read them, and it counts what it answers in the
    request metrics under the route's template, as ``MetricsMiddleware`` counts the rest.
    There is no audit on this read.
    """

    def __init__(self, *, prefix: str, registry: Registry) -> None:
        self.registry = registry
        self.path = re.compile("^" + re.escape(prefix + router.prefix) + "/([^/]+)/endpoint$")
        route = next(r for r in router.routes if getattr(r, "name", "") == "resolve_endpoint")
        self.template = prefix + cast(APIRoute, route).path  # the router's prefix included
        self._metrics: dict[int, tuple[Any, Any]] = {}  # status -> (counter, histogram) child
        self.served = 0  # answered here (the rest went on to the app); read by the tests

    async def serve(self, scope: Any, send: Any) -> bool:
        """Answer the request if it can; False leaves it to the app (nothing was sent)."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return False
        matched = self.path.match(scope["path"])
        if matched is None:
            return False
        started = time.perf_counter()
        answer = self._answer(scope, matched.group(1))
        if answer is None:
            return False
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.served += 1
        children = self._metrics.get(status)
        if children is None:
            children = self._metrics[status] = request_children(self.template, "GET", status)
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
        return True

    def _answer(self, scope: Any, name: str) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        query: bytes = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query or not _NAME.match(name):
            return None
        # As Starlette's QueryParams: the last of repeated parameters wins.
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
        environment = params.get("environment", vocabulary.Environment.PRODUCTION.value)
        key = params.get("key")
        if environment not in ENVIRONMENTS or (key is not None and not 1 <= len(key) <= KEY_MAX):
            return None
        authorization = if_none_match = None
        for header, value in scope["headers"]:  # as Starlette's Headers.get: the first one
            if header == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif header == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")  # as HTTPBearer reads it
        credentials = credentials.strip()
        if not scheme or not credentials or scheme.lower() != "bearer":
            return None
        principal = self.registry.keys.cached(credentials)
        if principal is None or not principal.allows(Scope.MODELS_READ):
            return None
        answer = self.registry.endpoints.cached(name, environment)
        if answer is None:
            return None
        count_resolution(name, environment, hit=True)
        headers = [(b"etag", answer.etag.encode("latin-1")), (b"cache-control", b"no-cache")]
        if if_none_match_matches(if_none_match, answer.etag):
            return 304, headers, b""
        body = answer.body(key)
        headers.append((b"content-length", str(len(body)).encode("latin-1")))
        headers.append((b"content-type", b"application/json"))
        return 200, headers, body
