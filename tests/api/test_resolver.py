"""modelreg_client's Resolver and AsyncResolver against a live server, mid-canary.

The canary's routing set is written as the controller writes it (``set_routes``: the candidate
and the stable version, 50/50, plus a preview at weight 0); the server and the resolver then
each pick on their own, and must agree.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import prometheus_client
import pytest
from sqlalchemy import select

from modelreg_client import AsyncResolver, Resolver, Unresolved
from modelreg_client.picking import PickTable, key_point
from registry.models import AIModel, AIModelDeployment
from registry.services import Registry
from registry.services.routing import RouteEntry, set_routes
from tests.support.helpers import make_model, make_version
from tests.support.live_server import LiveServer

MODEL = "text2img"
PATH = f"/api/v1/models/{MODEL}/endpoint"
KEYS = [f"user-{i}" for i in range(10_000)]
T = TypeVar("T")


class Canary:
    """text2img 1.0 (stable), 1.1 (the candidate) and 2.0 (a blue-green preview), each with a
    deployment in production; ``at(weight)`` routes ``weight``% to the candidate."""

    def __init__(self, http: httpx.Client, registry: Registry) -> None:
        self.registry = registry
        make_model(http, MODEL)
        versions = {v: make_version(http, MODEL, v) for v in ("1.0", "1.1", "2.0")}
        with registry.sessions.begin() as s:
            model_id = s.scalar(select(AIModel.id).where(AIModel.name == MODEL))
            assert model_id is not None
            self.model_id = model_id
            self.deployments = {
                v: AIModelDeployment(
                    model_version_id=uuid.UUID(body["id"]),
                    environment="production",
                    deployment_strategy="canary",
                )
                for v, body in versions.items()
            }
            s.add_all(self.deployments.values())

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

    def at(self, weight: int) -> None:
        routes = [
            self.entry("1.0", 100 - weight, "stable"),
            self.entry("1.1", weight, "canary"),
            self.entry("2.0", 0, "preview"),
        ]
        with self.registry.sessions.begin() as s:
            set_routes(
                s,
                model_id=self.model_id,
                environment="production",
                routes=routes,
                deployment_id=routes[1].deployment_id,
                actor="test-controller",
                reason="test",
            )
        self.registry.endpoints.invalidate(MODEL)

    def server_pick(self, key: str) -> str:
        """The server's own pick, through the function its route answers with."""
        picked = self.registry.endpoints.resolve(MODEL, "production").pick(key)
        assert picked is not None
        return picked.url


@pytest.fixture
def canary(http: httpx.Client, registry: Registry) -> Canary:
    fleet = Canary(http, registry)
    fleet.at(50)
    return fleet


def until(check: Callable[[], T | None], *, what: str, timeout: float = 15) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def picked_url(resolver: Resolver | AsyncResolver, key: str) -> str:
    endpoint = resolver.pick(key)
    assert endpoint is not None
    return endpoint.url


def test_picks_equal_the_servers_on_10000_keys(
    server: LiveServer, http: httpx.Client, admin_token: str, canary: Canary
) -> None:
    with Resolver(server.url, admin_token, MODEL, "production") as resolver:
        local = {k: picked_url(resolver, k) for k in KEYS}
    assert local == {k: canary.server_pick(k) for k in KEYS}
    # ... and over HTTP, as a generation service would otherwise ask (a sample: each is a request)
    for key in KEYS[::25]:
        answer = http.get(PATH, params={"key": key}).json()
        assert answer["selected"]["url"] == local[key], key
    counts = Counter(local.values())
    assert set(counts) == {"http://127.0.0.1:9110", "http://127.0.0.1:9111"}  # never the preview
    assert abs(counts["http://127.0.0.1:9111"] - 5_000) < 300  # 50/50 (sd: 50 keys)


def test_revalidation_is_a_304_until_the_set_changes(
    server: LiveServer, http: httpx.Client, admin_token: str, canary: Canary
) -> None:
    # timeout=10: the server runs in this process, and the picks below hold its interpreter;
    # a revalidation that waits out the default 2 s there is not the registry failing
    with Resolver(server.url, admin_token, MODEL, "production", ttl=0.05, timeout=10) as resolver:
        until(lambda: resolver.not_modified >= 3, what="three revalidations")
        assert resolver.refreshed == 1  # one full answer; the rest were 304s with no body
        assert resolver.etag == http.get(PATH).headers["etag"]
        assert http.get(PATH, headers={"If-None-Match": resolver.etag}).status_code == 304

        canary.at(10)  # the rollout steps back: the set changed, so the next answer is a 200
        until(lambda: resolver.refreshed == 2, what="the new set")
        assert resolver.answer is not None
        assert {e.version_number: e.weight for e in resolver.answer.endpoints} == {
            "1.0": 90,
            "1.1": 10,
            "2.0": 0,
        }
        assert all(picked_url(resolver, k) == canary.server_pick(k) for k in KEYS[:2_000])
        assert resolver.failures == 0
        assert not resolver.stale


def test_the_last_good_answer_is_served_while_the_registry_is_down(
    registry: Registry,
    http: httpx.Client,
    admin_token: str,
    canary: Canary,
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = LiveServer(registry).__enter__()
    stopped = False
    try:
        with Resolver(live.url, admin_token, MODEL, "production", ttl=0.05) as resolver:
            before = {k: picked_url(resolver, k) for k in KEYS[:2_000]}
            assert resolver.stale_seconds == 0
            with caplog.at_level("WARNING", logger="modelreg_client.resolver"):
                live.__exit__(None, None, None)
                stopped = True
                until(lambda: resolver.failures >= 3, what="failed revalidations")
            assert resolver.stale
            assert {k: picked_url(resolver, k) for k in KEYS[:2_000]} == before
            until(lambda: resolver.stale_seconds > 0, what="a stale age")
            assert resolver.outages == 1
            warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(warnings) == 1, "one warning per outage, not one per attempt"
            assert "serving the last answer" in warnings[0].getMessage()
            metrics = prometheus_client.generate_latest().decode()
            stale_line = next(
                line
                for line in metrics.splitlines()
                if line.startswith("modelreg_client_stale_seconds{") and f'model="{MODEL}"' in line
            )
            assert float(stale_line.rsplit(" ", 1)[1]) > 0
            assert "modelreg_client_revalidation_failures_total{" in metrics
    finally:
        if not stopped:
            live.__exit__(None, None, None)


def test_no_answer_yet_and_nothing_served_raise_unresolved(
    server: LiveServer, http: httpx.Client, admin_token: str
) -> None:
    with Resolver("http://127.0.0.1:9", admin_token, MODEL, timeout=0.2) as nowhere:
        with pytest.raises(Unresolved, match="no answer"):
            nowhere.pick("user-1")
        assert nowhere.failures >= 1
    make_model(http, "undeployed")
    with (
        Resolver(server.url, admin_token, "undeployed") as resolver,
        pytest.raises(Unresolved, match="nothing serves it"),
    ):
        resolver.pick("user-1")


def test_picks_are_thread_safe_while_the_set_changes(
    server: LiveServer, admin_token: str, canary: Canary
) -> None:
    """Eight threads pick while the canary moves between 50% and 10%: every pick is what the
    server would pick with the set before or after the change, never anything else."""
    keys = KEYS[:3_000]
    at_50 = {k: canary.server_pick(k) for k in keys}
    canary.at(10)
    at_10 = {k: canary.server_pick(k) for k in keys}
    assert at_50 != at_10
    errors: list[str] = []
    done = threading.Event()
    with Resolver(server.url, admin_token, MODEL, "production", ttl=0.01) as resolver:
        resolver.wait_ready()

        def pick_all() -> None:
            try:
                while not done.is_set():
                    for key in keys:
                        url = picked_url(resolver, key)
                        if url not in (at_50[key], at_10[key]):
                            errors.append(f"{key} -> {url}")
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=pick_all) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            for step in range(6):
                canary.at(50 if step % 2 == 0 else 10)
                resolver.refresh()  # from this thread too, while the background thread runs
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert errors == []
        until(lambda: resolver.refreshed >= 7, what="every change seen")
        assert {k: picked_url(resolver, k) for k in keys} == at_10


def test_async_resolver(server: LiveServer, admin_token: str, canary: Canary) -> None:
    async def run() -> tuple[dict[str, str], int, int]:
        async with AsyncResolver(server.url, admin_token, MODEL, ttl=0.05) as resolver:
            picks = {k: picked_url(resolver, k) for k in KEYS}
            while resolver.not_modified < 2:
                await asyncio.sleep(0.02)
            return picks, resolver.refreshed, resolver.failures

    picks, refreshed, failures = asyncio.run(run())
    assert picks == {k: canary.server_pick(k) for k in KEYS}
    assert refreshed == 1
    assert failures == 0


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param((50, 50), id="canary-50"),
        pytest.param((10, 90), id="canary-10"),
        pytest.param((1, 33, 66), id="three-way"),
        pytest.param((7, 0, 3), id="a-zero-weight"),
    ],
)
def test_the_pick_is_the_formula_the_server_always_used(weights: tuple[int, ...]) -> None:
    """Sticky keys must not move when a server is upgraded: the table's pick equals the
    formula the server picked with before it used this module."""
    table = PickTable((i, w) for i, w in enumerate(weights))
    serving = [i for i, w in enumerate(weights) if w > 0]
    bounds = [sum(w for w in weights[: i + 1] if w > 0) for i in serving]
    total = bounds[-1]
    for key in KEYS:
        before = serving[min(bisect_right(bounds, key_point(key) * total), len(bounds) - 1)]
        assert table.pick(key) == table.items[table.index(key) or 0] == before, key


@pytest.fixture(autouse=True)
def _no_resolver_threads_left() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("modelreg-resolver")]
    assert left == []
