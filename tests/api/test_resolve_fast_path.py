"""The resolve fast path (``ResolveFastPath``) answers exactly what the route answers.

Two apps on one registry, one with the fast path and one without, get the same requests; their
answers (status, raw headers in order, body) must be the same bytes, for the answers the fast
path gives itself (200, 304) and for every error it leaves to the route (401, 403, 404, 405,
422). The metrics count a request the fast path answers under the route's template.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select

from api.app import App, create_app
from api.routes.endpoints import ResolveFastPath
from registry.metrics import HTTP_REQUESTS
from registry.models import AIModel, AIModelDeployment
from registry.services import Registry
from registry.services.routing import RouteEntry, set_routes
from tests.support.helpers import make_model, make_version

TEMPLATE = "/api/v1/models/{name}/endpoint"


def _deploy(registry: Registry, client: httpx.Client, model: str, weights: dict[str, int]) -> None:
    make_model(client, model)
    ids = {v: uuid.UUID(make_version(client, model, v)["id"]) for v in weights}
    with registry.sessions.begin() as s:
        model_id = s.scalar(select(AIModel.id).where(AIModel.name == model))
        assert model_id is not None
        deps = {
            v: AIModelDeployment(model_version_id=i, environment="production")
            for v, i in ids.items()
        }
        s.add_all(deps.values())
        s.flush()
        routes = [
            RouteEntry(
                deps[v].id, ids[v], v, f"http://10.0.0.{n}:9000", w, "stable" if n else "canary"
            )
            for n, (v, w) in enumerate(weights.items())
        ]
        set_routes(
            s,
            model_id=model_id,
            environment="production",
            routes=routes,
            deployment_id=deps[next(iter(weights))].id,
            actor="test",
            reason="test",
        )
    registry.endpoints.invalidate()


Apps = tuple[App, App, ResolveFastPath]


@pytest.fixture
def apps(registry: Registry, http: httpx.Client) -> Apps:
    # One process: no routing-generation poller, whose first read would drop the cache at a
    # moment of its own choosing (this test decides when answers are cached).
    registry.endpoints.poll_seconds = 0
    fast = create_app(registry.settings, registry=registry)
    slow = create_app(registry.settings, registry=registry, fast_resolve=False)
    _deploy(registry, http, "text2img", {"1.0": 90, "1.1": 10})
    _deploy(registry, http, "solo", {"2.0": 100})
    make_model(http, "idle")  # exists, serves nothing
    assert fast.fast_path is not None
    assert slow.fast_path is None
    return fast, slow, fast.fast_path


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def get(app: App, target: str, headers: dict[str, str]) -> Answer:
    """``GET target`` straight through the ASGI interface, as uvicorn sends it: the status,
    the headers exactly as the app sent them, and the body."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1:8000")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the app answers
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], list(start["headers"]), body


def _count(status: str) -> float:
    return HTTP_REQUESTS.labels(TEMPLATE, "GET", status)._value.get()


def test_the_fast_path_answers_what_the_route_answers(
    apps: Apps, registry: Registry, admin_token: str
) -> None:
    fast, slow, layer = apps
    admin = {"Authorization": f"Bearer {admin_token}"}
    principal = registry.keys.authenticate(admin_token)
    feedback_only = registry.keys.create(principal, name="fb", scopes=["feedback:write"]).token
    no_scope = {"Authorization": f"Bearer {feedback_only}"}
    etag = dict(get(slow, "/api/v1/models/solo/endpoint", admin)[1])[b"etag"].decode()
    # Warm the fast app: the first sight of a token and the first resolution take the route.
    for path in ("/api/v1/models/text2img/endpoint?key=a", "/api/v1/models/solo/endpoint"):
        assert get(fast, path, admin)[0] == 200
        assert get(fast, path, no_scope)[0] == 403

    served = [
        ("/api/v1/models/text2img/endpoint?environment=production&key=user-42", admin),
        ("/api/v1/models/text2img/endpoint?key=someone-else", admin),
        ("/api/v1/models/solo/endpoint", admin),
        ("/api/v1/models/solo/endpoint?key=k&environment=production&key=last-wins", admin),
        ("/api/v1/models/solo/endpoint", {**admin, "If-None-Match": etag}),
        ("/api/v1/models/solo/endpoint", {**admin, "If-None-Match": '"other"'}),
        ("/api/v1/models/solo/endpoint", {"authorization": f"bearer {admin_token}"}),
        ("/api/v1/models/solo/endpoint", {"Authorization": f"Bearer   {admin_token}  "}),
        ("/api/v1/models/solo/endpoint", {**admin, "If-None-Match": "*"}),
        ("/api/v1/models/text2img/endpoint?key=user%2042+x&environment=production", admin),
        ("/api/v1/models/text2img/endpoint?environment=moon&environment=production", admin),
        ("/api/v1/models/text2img/endpoint?other=1&key=%C3%A9", admin),
    ]
    refused = [
        ("/api/v1/models/solo/endpoint", {}),  # 401, no token
        ("/api/v1/models/solo/endpoint", {"Authorization": "Bearer mr_nope.nope"}),  # 401
        ("/api/v1/models/solo/endpoint", {"Authorization": f"Basic {admin_token}"}),  # 401
        ("/api/v1/models/solo/endpoint", no_scope),  # 403
        ("/api/v1/models/nothing-here/endpoint", admin),  # 404 no such model
        ("/api/v1/models/idle/endpoint", admin),  # 404 not deployed
        ("/api/v1/models/solo/endpoint?environment=moon", admin),  # 422
        ("/api/v1/models/solo/endpoint?key=", admin),  # 422
        ("/api/v1/models/solo/endpoint?key=" + "k" * 201, admin),  # 422
        ("/api/v1/models/-bad/endpoint", admin),  # 422 name
        ("/api/v1/models/solo/endpoint?key=a%00b", admin),  # 422 NUL
        ("/api/v1/models/solo/endpoint/", admin),  # redirect
        ("/api/v1/models/solo/endpoint", {"Authorization": "Bearer"}),  # 401, no credentials
        ("/api/v1/models/solo/endpoint", {"Authorization": f"Bearer{admin_token}"}),  # 401
    ]
    for path, headers in served + refused:
        before, counted = layer.served, {s: _count(s) for s in ("200", "304")}
        got = get(fast, path, headers)
        assert got == get(slow, path, headers), path
        if (path, headers) in served:
            assert layer.served == before + 1, f"{path} was not answered by the fast path"
            status = str(got[0])
            assert _count(status) == counted[status] + 2, "the fast and the slow answer count"
        else:
            assert layer.served == before, f"{path} should have gone on to the route"
    statuses = {get(slow, p, h)[0] for p, h in refused}
    assert statuses == {401, 403, 404, 422, 307}


def test_a_cache_miss_and_a_revoked_token_go_to_the_route(
    apps: Apps, registry: Registry, admin_token: str
) -> None:
    fast, _slow, layer = apps
    admin = {"Authorization": f"Bearer {admin_token}"}
    path = "/api/v1/models/solo/endpoint"
    assert get(fast, path, admin)[0] == 200
    before = layer.served
    assert get(fast, path, admin)[0] == 200
    assert layer.served == before + 1
    registry.endpoints.invalidate()
    assert get(fast, path, admin)[0] == 200  # a miss: resolved by the route
    assert layer.served == before + 1
    principal = registry.keys.authenticate(admin_token)
    reader = registry.keys.create(principal, name="reader", scopes=["models:read"])
    token = {"Authorization": f"Bearer {reader.token}"}
    assert get(fast, path, token)[0] == 200
    assert get(fast, path, token)[0] == 200
    assert layer.served == before + 2
    registry.keys.revoke(principal, reader.info.api_key)
    status, _headers, body = get(fast, path, token)
    assert status == 401, body
    assert layer.served == before + 2
