"""Failed authentication is rate limited per API key and per client address: 429 + Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from api.app import create_app
from registry.auth import Principal, split_token
from registry.errors import TooManyRequests, Unauthorized
from registry.ratelimit import FailureLimiter
from registry.services import Registry, build_registry
from registry.settings import Settings
from tests.support.helpers import assert_problem
from tests.support.live import Modelreg
from tests.support.live_server import LiveServer

MODELS = "/api/v1/models"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_blocks_after_the_limit_until_the_window_passes() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=3, window_seconds=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after(["a"]) is None
        limiter.record_failure(["a"])
        clock.now += 1
    assert limiter.retry_after(["a"]) == 57  # now 1003; the first failure leaves the window at 1060
    assert limiter.retry_after(["b"]) is None
    assert limiter.retry_after(["b", "a"]) == 57
    clock.now = 1060.0
    assert limiter.retry_after(["a"]) is None


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[Registry]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        auth_failure_limit=10,
        auth_failure_window_seconds=60,
        auth_failure_address_limit=10,
    )
    registry = build_registry(settings)
    yield registry
    registry.close()


class AsgiClient:
    """The app called in-process, as if from ``address`` (X-Forwarded-For is never trusted)."""

    def __init__(self, registry: Registry, address: str) -> None:
        self.app = create_app(registry.settings, registry=registry)
        self.address = address

    def __enter__(self) -> AsgiClient:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        return None

    def get(self, url: str, *, headers: dict[str, str]) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(self.address, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                response = await c.get(url, headers=headers)
                await response.aread()
                return response

        return asyncio.run(call())


def _client(registry: Registry, address: str) -> AsgiClient:
    return AsgiClient(registry, address)


def _wrong(token: str) -> str:
    api_key, secret = token.split(".")
    return f"{api_key}.{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"


def _get(c: AsgiClient | httpx.Client, token: str) -> httpx.Response:
    return c.get(MODELS, headers={"Authorization": f"Bearer {token}"})


def test_ten_wrong_secrets_then_429_but_the_right_one_still_passes(limited: Registry) -> None:
    """Anyone can see a public key id; spending its failure budget must not lock out its owner."""
    issued = limited.keys.bootstrap_admin()
    assert issued is not None
    with _client(limited, "10.0.0.1") as attacker, _client(limited, "10.0.0.2") as owner:
        for _ in range(10):
            assert_problem(_get(attacker, _wrong(issued.token)), 401)
        refused = _get(attacker, _wrong(issued.token))
        body = assert_problem(refused, 429, "too many failed authentications")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert body["retryAfterSeconds"] == int(refused.headers["Retry-After"])
        # The right token passes, from the owner's address and even from the attacker's...
        assert _get(owner, issued.token).status_code == 200
        assert _get(attacker, issued.token).status_code == 200
        # ...while another wrong secret for the key is refused from any address,
        assert_problem(_get(owner, _wrong(issued.token)), 429)
        # and the address is refused for any other key it gets wrong.
        second = limited.keys.create(
            _principal(limited, issued.token), name="second", scopes=["models:read"]
        )
        assert_problem(_get(attacker, _wrong(second.token)), 429)
        assert _get(attacker, second.token).status_code == 200
        assert_problem(_get(owner, _wrong(second.token)), 401)


def _principal(registry: Registry, token: str) -> Principal:
    """The admin principal, looked up without going through the (now blocked) limiter."""
    parts = split_token(token)
    assert parts is not None
    return registry.keys._verify(*parts)


def test_malformed_tokens_count_against_the_address(limited: Registry) -> None:
    issued = limited.keys.bootstrap_admin()
    assert issued is not None
    with _client(limited, "10.0.0.3") as c:
        for _ in range(10):
            assert_problem(_get(c, "not-a-token"), 401)
        assert_problem(_get(c, "not-a-token"), 429)
        assert_problem(_get(c, _wrong(issued.token)), 429)
        assert _get(c, issued.token).status_code == 200


def test_successes_do_not_count(limited: Registry) -> None:
    issued = limited.keys.bootstrap_admin()
    assert issued is not None
    with _client(limited, "10.0.0.4") as c:
        for _ in range(9):
            assert_problem(_get(c, _wrong(issued.token)), 401)
        for _ in range(20):
            assert _get(c, issued.token).status_code == 200
        assert_problem(_get(c, _wrong(issued.token)), 401)  # the 10th failure
        assert_problem(_get(c, _wrong(issued.token)), 429)


def test_the_window_passing_lets_the_key_in_again(tmp_path: Path, database_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        auth_failure_limit=2,
        auth_failure_window_seconds=0.5,
        auth_failure_address_limit=2,
    )
    registry = build_registry(settings)
    try:
        issued = registry.keys.bootstrap_admin()
        assert issued is not None
        for _ in range(2):
            with pytest.raises(Unauthorized):
                registry.keys.authenticate(_wrong(issued.token), client="10.0.0.5")
        with pytest.raises(TooManyRequests) as refused:
            registry.keys.authenticate(_wrong(issued.token), client="10.0.0.5")
        assert refused.value.retry_after == 1
        time.sleep(1.1)  # the refused attempt counted too: its window ends 0.5 s after it
        with pytest.raises(Unauthorized):
            registry.keys.authenticate(_wrong(issued.token), client="10.0.0.5")
    finally:
        registry.close()


def test_live_server_answers_429_with_retry_after(server: LiveServer, admin_token: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(10):
            assert_problem(_get(c, _wrong(admin_token)), 401)
        refused = _get(c, _wrong(admin_token))
        assert_problem(refused, 429)
        assert int(refused.headers["Retry-After"]) > 0
        assert _get(c, admin_token).status_code == 200


def test_429_is_declared_in_openapi(tmp_path: Path) -> None:
    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    for path, item in spec["paths"].items():
        if path.startswith("/api/v1"):
            for method, op in item.items():
                assert "429" in op["responses"], (method, path)


def test_a_shared_address_has_a_larger_budget_than_a_key(tmp_path: Path, database_url: str) -> None:
    """Behind a NAT or a proxy, one client's bad key must not lock out the others at once."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    registry = build_registry(settings)
    try:
        issued = registry.keys.bootstrap_admin()
        assert issued is not None
        api_key = issued.token.split(".")[0]
        admin = registry.keys.authenticate(issued.token)
        other = registry.keys.create(admin, name="other", scopes=["models:read"])
        with _client(registry, "10.0.0.7") as c:
            for _ in range(settings.auth_failure_limit):
                assert_problem(_get(c, f"{api_key}.{'b' * 43}"), 401)
            assert_problem(_get(c, f"{api_key}.{'b' * 43}"), 429)  # that key is blocked...
            assert_problem(_get(c, _wrong(other.token)), 401)  # ...the shared address is not
            assert _get(c, issued.token).status_code == 200  # and its owner still gets in
    finally:
        registry.close()


def _live(tmp_path: Path, **env: str) -> Modelreg:
    return Modelreg(
        tmp_path,
        env={
            "MODELREG_WORKER_ENABLED": "false",
            "MODELREG_CONTROLLER_ENABLED": "false",
            "MODELREG_AUTH_FAILURE_LIMIT": "1000",  # only the address budget is under test
            "MODELREG_AUTH_FAILURE_ADDRESS_LIMIT": "5",
            **env,
        },
    )


def test_rotating_x_forwarded_for_does_not_escape_the_throttle(tmp_path: Path) -> None:
    """By default no proxy is trusted: the header is the caller's to invent, so it is ignored
    (uvicorn alone would believe it from 127.0.0.1)."""
    live = _live(tmp_path).start()
    try:
        wrong = _wrong(live.token)
        with httpx.Client(base_url=live.url, timeout=30) as c:
            for i in range(5):
                forged = {"X-Forwarded-For": f"198.51.100.{i}"}
                answer = c.get(MODELS, headers={"Authorization": f"Bearer {wrong}", **forged})
                assert_problem(answer, 401)
            forged = {"X-Forwarded-For": "198.51.100.99"}
            answer = c.get(MODELS, headers={"Authorization": f"Bearer {wrong}", **forged})
            assert_problem(answer, 429)
            assert _get(c, live.token).status_code == 200
    finally:
        live.stop()


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    live = _live(tmp_path, MODELREG_TRUSTED_PROXIES="127.0.0.1").start()
    try:
        wrong = {"Authorization": f"Bearer {_wrong(live.token)}"}
        with httpx.Client(base_url=live.url, timeout=30) as c:
            for _ in range(5):
                answer = c.get(MODELS, headers={**wrong, "X-Forwarded-For": "203.0.113.1"})
                assert_problem(answer, 401)
            answer = c.get(MODELS, headers={**wrong, "X-Forwarded-For": "203.0.113.1"})
            assert_problem(answer, 429)
            # Another client behind the same proxy has its own budget.
            answer = c.get(MODELS, headers={**wrong, "X-Forwarded-For": "203.0.113.2"})
            assert_problem(answer, 401)
    finally:
        live.stop()
