"""GET /api/v1/models/{name}/endpoint: the weighted endpoint set, the pick, and the cache."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from registry.models import AIModel, AIModelDeployment
from registry.services import Registry, build_registry
from registry.services.endpoints import EndpointService, EndpointSet, key_point
from registry.services.routing import RouteEntry, set_routes
from tests.support.helpers import assert_problem, make_model, make_version
from tests.support.live_server import LiveServer

PATH = "/api/v1/models/text2img/endpoint"


@dataclass
class Fleet:
    """A model with three versions, each deployed (to production) at its own URL."""

    model_id: uuid.UUID
    deployments: dict[str, AIModelDeployment]

    def entry(self, version: str, weight: int, role: str) -> RouteEntry:
        dep = self.deployments[version]
        return RouteEntry(
            deployment_id=dep.id,
            model_version_id=dep.model_version_id,
            version_number=version,
            url=f"http://127.0.0.1:91{version.replace('.', '')}",
            weight=weight,
            role=role,
        )


def route(
    registry: Registry, fleet: Fleet, *entries: RouteEntry, environment: str = "production"
) -> None:
    """Play the controller: write the routing set (then the API process drops its cache)."""
    with registry.sessions.begin() as s:
        set_routes(
            s,
            model_id=fleet.model_id,
            environment=environment,
            routes=list(entries),
            deployment_id=entries[0].deployment_id,
            actor="test-controller",
            reason="test",
        )


@pytest.fixture
def fleet(http: httpx.Client, registry: Registry) -> Fleet:
    make_model(http, "text2img")
    versions = {v: make_version(http, "text2img", v) for v in ("1.0", "1.1", "2.0")}
    with registry.sessions.begin() as s:
        model_id = s.scalar(select(AIModel.id).where(AIModel.name == "text2img"))
        assert model_id is not None
        deployments = {
            v: AIModelDeployment(
                model_version_id=uuid.UUID(body["id"]),
                environment="production",
                deployment_strategy="canary",
            )
            for v, body in versions.items()
        }
        s.add_all(deployments.values())
    return Fleet(model_id=model_id, deployments=deployments)


def canary(fleet: Fleet, weight: int) -> tuple[RouteEntry, ...]:
    return (fleet.entry("1.0", 100 - weight, "stable"), fleet.entry("1.1", weight, "canary"))


def test_answer_shape_and_weights(http: httpx.Client, registry: Registry, fleet: Fleet) -> None:
    route(registry, fleet, *canary(fleet, 10), fleet.entry("2.0", 0, "preview"))
    response = http.get(PATH, params={"environment": "production"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-cache"
    body = response.json()
    assert set(body) == {"model", "environment", "generation", "endpoints", "selected"}
    assert body["model"] == "text2img"
    assert body["environment"] == "production"
    assert body["generation"] >= 1
    listed = [(e["versionNumber"], e["weight"], e["role"]) for e in body["endpoints"]]
    assert listed == [("1.1", 10, "canary"), ("1.0", 90, "stable"), ("2.0", 0, "preview")]
    stable = body["endpoints"][1]
    assert stable == {
        "versionNumber": "1.0",
        "modelVersionId": str(fleet.deployments["1.0"].model_version_id),
        "deploymentId": str(fleet.deployments["1.0"].id),
        "url": "http://127.0.0.1:9110",
        "weight": 90,
        "role": "stable",
    }
    assert set(body["selected"]) == {"versionNumber", "modelVersionId", "url"}
    # production is the default environment
    assert http.get(PATH).json()["endpoints"] == body["endpoints"]


def test_picks_follow_the_weights_and_never_pick_a_preview(
    http: httpx.Client, registry: Registry, fleet: Fleet
) -> None:
    route(registry, fleet, *canary(fleet, 10), fleet.entry("2.0", 0, "preview"))
    picks = Counter(http.get(PATH).json()["selected"]["versionNumber"] for _ in range(400))
    assert set(picks) <= {"1.0", "1.1"}  # never the preview
    assert 10 <= picks["1.1"] <= 80  # ~40 expected; a loose bound, not a coin-flip test
    answer = registry.endpoints.resolve("text2img", "production")
    many = Counter(answer.pick().version_number for _ in range(20_000))  # type: ignore[union-attr]
    assert 0.08 < many["1.1"] / 20_000 < 0.12
    assert "2.0" not in many


def test_only_previews_means_no_pick(http: httpx.Client, registry: Registry, fleet: Fleet) -> None:
    route(registry, fleet, fleet.entry("2.0", 0, "preview"))
    body = http.get(PATH).json()
    assert [e["role"] for e in body["endpoints"]] == ["preview"]
    assert body["selected"] is None


def test_not_found_tells_no_model_from_not_deployed(
    http: httpx.Client, registry: Registry, fleet: Fleet
) -> None:
    problem = assert_problem(http.get("/api/v1/models/nope/endpoint"), 404, "no model named")
    assert problem["reason"] == "no-such-model"
    problem = assert_problem(http.get(PATH), 404, "exists", "nothing serves it in production")
    assert problem["reason"] == "not-deployed"
    route(registry, fleet, *canary(fleet, 10))
    problem = assert_problem(
        http.get(PATH, params={"environment": "staging"}), 404, "nothing serves it in staging"
    )
    assert problem["environment"] == "staging"
    # A negative answer is cached briefly, then the model shows up.
    make_model(http, "late")
    deadline = time.monotonic() + 5
    while http.get("/api/v1/models/late/endpoint").json()["detail"].startswith("no model"):
        assert time.monotonic() < deadline, "the negative answer never expired"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"environment": "prod"}, id="unknown-environment"),
        pytest.param({"environment": ""}, id="empty-environment"),
        pytest.param({"key": "k" * 201}, id="key-too-long"),
        pytest.param({"key": ""}, id="empty-key"),
    ],
)
def test_bad_queries_are_422(http: httpx.Client, fleet: Fleet, params: dict[str, str]) -> None:
    assert_problem(http.get(PATH, params=params), 422)


def test_auth(server: LiveServer, http: httpx.Client, registry: Registry, fleet: Fleet) -> None:
    route(registry, fleet, *canary(fleet, 10))
    response = httpx.get(server.url + PATH)
    assert_problem(response, 401, "missing bearer token")
    assert response.headers["www-authenticate"] == "Bearer"
    tokens = {}
    for scope in ("models:write", "models:read"):
        created = http.post("/api/v1/keys", json={"name": scope, "scopes": [scope]})
        assert created.status_code == 201, created.text
        tokens[scope] = created.json()["token"]
    wrong = httpx.get(
        server.url + PATH, headers={"Authorization": f"Bearer {tokens['models:write']}"}
    )
    assert assert_problem(wrong, 403, "models:read")["requiredScope"] == "models:read"
    right = httpx.get(
        server.url + PATH, headers={"Authorization": f"Bearer {tokens['models:read']}"}
    )
    assert right.status_code == 200, right.text


def test_etag_and_304(http: httpx.Client, registry: Registry, fleet: Fleet) -> None:
    route(registry, fleet, *canary(fleet, 10))
    first = http.get(PATH)
    etag = first.headers["etag"]
    assert etag.startswith('"g')
    assert etag.endswith('"')
    # The ETag names the set, not the pick: the same across picks and keys.
    assert {http.get(PATH, params={"key": f"user-{i}"}).headers["etag"] for i in range(20)} == {
        etag
    }
    not_modified = http.get(PATH, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert http.get(PATH, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert http.get(PATH, headers={"If-None-Match": '"other"'}).status_code == 200

    route(registry, fleet, *canary(fleet, 50))
    registry.endpoints.invalidate("text2img")
    changed = http.get(PATH, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert {e["weight"] for e in changed.json()["endpoints"]} == {50}


def test_invalidate_drops_the_cached_answer_at_once(registry: Registry, fleet: Fleet) -> None:
    service = EndpointService(registry.sessions, poll_seconds=0)  # no poller: only invalidate
    try:
        route(registry, fleet, *canary(fleet, 10))
        before = service.resolve("text2img", "production")
        route(registry, fleet, *canary(fleet, 50))
        assert service.resolve("text2img", "production") is before  # cached
        service.invalidate("another-model")
        assert service.resolve("text2img", "production") is before
        service.invalidate("text2img")
        after = service.resolve("text2img", "production")
        assert [e.weight for e in after.endpoints] == [50, 50]
        assert after.etag != before.etag
    finally:
        service.close()


def test_invalidate_through_the_api(http: httpx.Client, registry: Registry, fleet: Fleet) -> None:
    route(registry, fleet, *canary(fleet, 10))
    assert http.get(PATH).json()["endpoints"][0]["weight"] == 10
    route(registry, fleet, *canary(fleet, 50))
    registry.endpoints.invalidate("text2img")  # what the deployment service does after writing
    assert http.get(PATH).json()["endpoints"][0]["weight"] == 50


def test_a_write_by_another_process_is_seen_within_a_second(
    http: httpx.Client, registry: Registry, fleet: Fleet
) -> None:
    route(registry, fleet, *canary(fleet, 10))
    assert http.get(PATH).json()["endpoints"][0]["weight"] == 10
    other = build_registry(registry.settings)  # another API replica / the controller
    try:
        route(other, fleet, *canary(fleet, 50))
        other.endpoints.invalidate()  # only the writer's own cache
        written = time.monotonic()
        while http.get(PATH).json()["endpoints"][0]["weight"] != 50:
            assert time.monotonic() - written < 5, "the change never reached the first replica"
            time.sleep(0.02)
    finally:
        other.close()


def test_stale_answer_while_the_database_is_down(
    http: httpx.Client, registry: Registry, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    route(registry, fleet, *canary(fleet, 10))
    known = http.get(PATH).json()
    with registry_down(registry):
        registry.endpoints.invalidate()  # force a reload, which fails
        with caplog.at_level("WARNING", logger="modelreg.endpoints"):
            for _ in range(3):
                stale = http.get(PATH)
                assert stale.status_code == 200, stale.text
                assert stale.json()["endpoints"] == known["endpoints"]
        assert sum("serving the last known" in r.getMessage() for r in caplog.records) == 1
        # Nothing known for this one: the usual 503.
        assert_problem(http.get("/api/v1/models/other/endpoint"), 503, "database is unavailable")
    assert http.get(PATH).status_code == 200


@contextmanager
def registry_down(registry: Registry) -> Iterator[None]:
    """Point the endpoint service at a database that cannot be reached, then back. (The real
    database is shared by the other tests, so the endpoint service's session factory is swapped
    for one whose connections fail the way an outage does: refused, or unopenable.)"""
    if registry.engine.url.get_backend_name() == "sqlite":
        url = "sqlite:////nonexistent-dir/for/sure/modelreg.db"  # cannot be opened
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:1/postgres?connect_timeout=1"  # refused
    engine = create_engine(url)
    real = registry.endpoints.sessions
    registry.endpoints.sessions = sessionmaker(engine)
    try:
        yield
    finally:
        registry.endpoints.sessions = real
        engine.dispose()


# -- sticky picks -----------------------------------------------------------------------------


def _set(fleet: Fleet, weight: int) -> EndpointSet:
    return EndpointSet.build(
        model="text2img", environment="production", generation=1, routes=list(canary(fleet, weight))
    )


def test_sticky_keys_stay_on_the_candidate_as_it_grows(registry: Registry, fleet: Fleet) -> None:
    keys = [f"user-{i}" for i in range(10_000)]
    on_candidate: dict[int, set[str]] = {}
    for weight in (10, 50, 100):
        answer = _set(fleet, weight)
        picks = {k: answer.pick(k) for k in keys}
        assert all(p is not None for p in picks.values())
        on_candidate[weight] = {k for k, p in picks.items() if p and p.role == "canary"}
        # the same key, the same pick
        assert all(answer.pick(k) == picks[k] for k in keys[:500])
        # ~weight% of the keys land on the candidate (10,000 keys: sd <= 0.5 point)
        assert abs(len(on_candidate[weight]) / len(keys) * 100 - weight) < 2.5
    assert on_candidate[10] <= on_candidate[50] <= on_candidate[100]
    assert len(on_candidate[100]) == len(keys)


def test_the_pick_order_does_not_depend_on_weights(fleet: Fleet) -> None:
    shuffled = [fleet.entry("1.0", 70, "stable"), fleet.entry("1.1", 30, "canary")]
    one = EndpointSet.build(model="m", environment="production", generation=1, routes=shuffled)
    two = EndpointSet.build(
        model="m", environment="production", generation=1, routes=shuffled[::-1]
    )
    assert one.endpoints == two.endpoints
    assert [e.role for e in one.endpoints] == ["canary", "stable"]
    assert all(one.pick(f"k{i}") == two.pick(f"k{i}") for i in range(200))
    assert 0 <= key_point("anything") < 1


def test_sticky_over_http(http: httpx.Client, registry: Registry, fleet: Fleet) -> None:
    route(registry, fleet, *canary(fleet, 50))
    for i in range(10):
        picks = {
            http.get(PATH, params={"key": f"user-{i}"}).json()["selected"]["url"] for _ in range(5)
        }
        assert len(picks) == 1


def test_a_key_revoked_while_warm_is_refused_at_once(
    server: LiveServer, http: httpx.Client, registry: Registry, fleet: Fleet
) -> None:
    route(registry, fleet, *canary(fleet, 10))
    created = http.post("/api/v1/keys", json={"name": "reader", "scopes": ["models:read"]}).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    for _ in range(3):  # verified once, then checked on the event loop from the key cache
        assert httpx.get(server.url + PATH, headers=headers).status_code == 200
    assert http.post(f"/api/v1/keys/{created['apiKey']}/revoke").status_code == 200
    for _ in range(2):
        assert_problem(httpx.get(server.url + PATH, headers=headers), 401, "invalid API key")
