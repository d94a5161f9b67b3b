"""Endpoint resolution on a generation service's hot path: pick locally, revalidate in the
background.

    resolver = Resolver("http://registry:8000", token, "text2img", "production")
    endpoint = resolver.pick(user_id)          # no I/O: a hash and a bisection
    requests.post(endpoint.url, ...)

A ``Resolver`` keeps the registry's last answer to ``GET /api/v1/models/{name}/endpoint``
(the weighted endpoint set) and picks from it with ``modelreg_client.picking``, the code the
server picks with, so ``pick(key)`` is what ``endpoint?key=`` would answer. A background
thread revalidates the answer every ``ttl`` seconds with ``If-None-Match``: an unchanged set
costs the registry a 304 with no body.

When the registry cannot be reached (connection refused, a timeout, a 5xx, a 429, a refused
token), the resolver keeps serving its last good answer. It logs one warning per outage, one
line when the registry is back, and keeps count: ``stale_seconds``, ``failures`` and
``outages``. If prometheus_client is already imported by the application (or
``prometheus=True``), these are also exported as ``modelreg_client_stale_seconds`` and
``modelreg_client_revalidation_failures_total``, labelled by model and environment. A 404 is
an answer, not an outage: nothing serves the model any more, and ``pick`` raises
``Unresolved`` until something does.

``AsyncResolver`` is the same for asyncio code: the revalidation is a task on the running
loop, and ``pick`` stays a plain (synchronous, non-blocking) call.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from modelreg_client.picking import PickTable, pick_order
from modelreg_client.vocabulary import Environment
from modelreg_client.wire import Endpoint, EndpointAnswer

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("modelreg_client.resolver")

#: Answers that mean "the registry cannot answer now": keep serving the last good answer.
_TEMPORARY = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})


class Unresolved(LookupError):
    """No endpoint to pick: no answer yet (the registry was never reached), or the registry
    says nothing serves the model in the environment (404)."""


class _Answer:
    """One endpoint set, ready to pick from. Immutable: the resolver swaps it whole."""

    __slots__ = ("answer", "etag", "fetched_at", "table")

    def __init__(self, answer: EndpointAnswer, etag: str) -> None:
        ordered = sorted(
            answer.endpoints, key=lambda e: pick_order(e.role, e.version_number, e.deployment_id)
        )
        self.answer = answer
        self.etag = etag
        self.fetched_at = time.monotonic()
        self.table: PickTable[Endpoint] = PickTable((e, e.weight) for e in ordered)


class _Core:
    """What the thread and the asyncio twins share: the answer, the counters, the outage log."""

    def __init__(
        self,
        url: str,
        token: str | None,
        model: str,
        environment: str,
        *,
        ttl: float,
        timeout: float,
        prometheus: bool | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.environment = str(environment)
        self.ttl = ttl
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._path = f"/api/v1/models/{quote(model, safe='')}/endpoint"
        self._params = {"environment": self.environment}
        self._current: _Answer | None = None
        self._gone: str | None = None  # the 404's detail, while nothing serves the model
        self._first = threading.Event()  # set by the first answer (or the first 404)
        #: Revalidations sent, answered 200 (a new set), answered 304 (unchanged), failed.
        self.requests = 0
        self.refreshed = 0
        self.not_modified = 0
        self.failures = 0
        #: Outages seen (a run of failed revalidations counts once).
        self.outages = 0
        self._failing_since: float | None = None
        self._failed_in_outage = 0
        self._confirmed_at: float | None = None  # the last time the registry confirmed the set
        if prometheus or (prometheus is None and "prometheus_client" in sys.modules):
            _export(self)

    # -- reading -------------------------------------------------------------------------------

    def pick(self, key: str | None = None) -> Endpoint | None:
        """The endpoint for ``key`` (sticky), or a weighted random one without a key; None
        only when every endpoint has weight 0 (as ``selected: null`` from the server).

        No I/O and no lock: the current answer is read once, and it never changes in place.
        Raises ``Unresolved`` before the first answer or while the registry says nothing
        serves the model.
        """
        current = self._current
        if current is None:
            current = self._no_answer()
        table = current.table
        if key is not None and table.total:
            return table.pick(key)  # the hot path: one call into the shared pick
        index = table.index()
        return None if index is None else table.items[index]

    @property
    def answer(self) -> EndpointAnswer | None:
        """The last good answer (the endpoints, their weights and roles), or None."""
        current = self._current
        return None if current is None else current.answer

    @property
    def etag(self) -> str | None:
        current = self._current
        return None if current is None else current.etag

    @property
    def stale(self) -> bool:
        """True while revalidations fail (the answer served is the last good one)."""
        return self._failing_since is not None

    @property
    def stale_seconds(self) -> float:
        """Seconds since the registry last confirmed the answer, while revalidations fail;
        0 while they succeed."""
        if self._failing_since is None or self._confirmed_at is None:
            return 0.0
        return time.monotonic() - self._confirmed_at

    def _wait_first(self) -> None:
        """Before the first answer: the thread twin waits for it, the asyncio twin cannot."""

    def _no_answer(self) -> _Answer:
        if not self._first.is_set():
            self._wait_first()
            if self._current is not None:
                return self._current
        if self._gone is not None:
            raise Unresolved(self._gone)
        raise Unresolved(
            f"no answer from {self.url} yet for {self.model!r} in {self.environment}"
            + (f" ({self.failures} failed attempt(s))" if self.failures else "")
        )

    # -- revalidating --------------------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        current = self._current
        if current is None:
            return self._headers
        return {**self._headers, "If-None-Match": current.etag}

    def _accept(self, response: httpx.Response) -> None:
        """Take the registry's answer (200, 304 or 404); anything else is a failure."""
        self.requests += 1
        status = response.status_code
        if status == 304 and self._current is not None:
            self.not_modified += 1
        elif status == 200:
            answer = EndpointAnswer.from_wire(response.json())
            self._current = _Answer(answer, response.headers.get("etag", ""))
            self._gone = None
            self.refreshed += 1
        elif status == 404:
            detail = _detail(response)
            self._current = None
            self._gone = f"{self.model!r} in {self.environment}: {detail}"
            self.refreshed += 1
        else:
            self._failed(f"HTTP {status}: {_detail(response)}", counted=False)
            return
        self._confirmed_at = time.monotonic()
        self._first.set()
        if self._failing_since is not None:
            log.info(
                "registry %s reachable again after %d failed revalidation(s) of %r in %s",
                self.url,
                self._failed_in_outage,
                self.model,
                self.environment,
            )
            self._failing_since = None
            self._failed_in_outage = 0

    def _failed(self, reason: str, *, counted: bool = True) -> None:
        if counted:
            self.requests += 1
        self.failures += 1
        self._failed_in_outage += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self.outages += 1
            current = self._current
            serving = (
                f"serving the last answer (generation {current.answer.generation}) until it is back"
                if current is not None
                else "no answer to serve yet"
            )
            log.warning(
                "registry %s unreachable while revalidating %r in %s (%s); %s",
                self.url,
                self.model,
                self.environment,
                reason,
                serving,
            )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    return str(body.get("detail") or body.get("title")) if isinstance(body, dict) else str(body)


class Resolver(_Core):
    """Picks endpoints locally; a daemon thread revalidates the answer every ``ttl`` seconds.

    Thread-safe: ``pick`` may be called from any number of threads. ``close()`` (or ``with``)
    stops the thread.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        model: str,
        environment: str = Environment.PRODUCTION,
        *,
        ttl: float = 1.0,
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        prometheus: bool | None = None,
    ) -> None:
        super().__init__(
            url, token, model, environment, ttl=ttl, timeout=timeout, prometheus=prometheus
        )
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._lock = threading.Lock()  # one revalidation at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"modelreg-resolver-{model}", daemon=True
        )
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the first answer; True once there is one (or a 404)."""
        return self._first.wait(self.timeout if timeout is None else timeout)

    def _wait_first(self) -> None:
        self.wait_ready()

    def refresh(self) -> None:
        """Revalidate now, in this thread (the background thread does it every ``ttl``)."""
        with self._lock:
            try:
                response = self._http.get(
                    self._path, params=self._params, headers=self._request_headers()
                )
            except httpx.HTTPError as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                return
            self._accept(response)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.ttl)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout + 1)
        self._http.close()

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncResolver(_Core):
    """``Resolver`` for asyncio: ``async with AsyncResolver(...) as r: r.pick(key)``.

    The revalidation runs as a task on the loop that ``start()`` (or ``async with``) ran in;
    ``pick`` does no I/O, so it is a plain call, safe from any task (and any thread).
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        model: str,
        environment: str = Environment.PRODUCTION,
        *,
        ttl: float = 1.0,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        prometheus: bool | None = None,
    ) -> None:
        super().__init__(
            url, token, model, environment, ttl=ttl, timeout=timeout, prometheus=prometheus
        )
        import asyncio  # here, so that the thread twin's users do not import it

        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, wait: bool = True) -> AsyncResolver:
        """Start revalidating; with ``wait``, return after the first attempt."""
        import asyncio

        if self._task is None:
            if wait:
                await self.refresh()
            self._task = asyncio.get_running_loop().create_task(
                self._loop(first=not wait), name=f"modelreg-resolver-{self.model}"
            )
        return self

    async def refresh(self) -> None:
        """Revalidate now (the task does it every ``ttl``)."""
        async with self._lock:
            try:
                response = await self._http.get(
                    self._path, params=self._params, headers=self._request_headers()
                )
            except httpx.HTTPError as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                return
            self._accept(response)

    async def _loop(self, *, first: bool) -> None:
        import asyncio

        if not first:
            await asyncio.sleep(self.ttl)
        while True:
            await self.refresh()
            await asyncio.sleep(self.ttl)

    async def aclose(self) -> None:
        import asyncio

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._http.aclose()

    async def __aenter__(self) -> AsyncResolver:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


# -- Prometheus (optional) -------------------------------------------------------------------------

_EXPORTED: weakref.WeakSet[_Core] = weakref.WeakSet()
_collector_lock = threading.Lock()
_collector_registered = False


def _export(core: _Core) -> None:
    """Export the resolver's staleness through prometheus_client's default registry."""
    global _collector_registered
    _EXPORTED.add(core)
    with _collector_lock:
        if _collector_registered:
            return
        from prometheus_client import REGISTRY

        REGISTRY.register(_Collector())
        _collector_registered = True


class _Collector:
    """One series per (model, environment): the stalest resolver's age, all their failures."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stale = GaugeMetricFamily(
            "modelreg_client_stale_seconds",
            "Seconds since the registry last confirmed the endpoint set a resolver serves, "
            "while its revalidations fail (0 while they succeed)",
            labels=["model", "environment"],
        )
        failures = CounterMetricFamily(
            "modelreg_client_revalidation_failures",
            "Revalidations of an endpoint set that failed (registry unreachable)",
            labels=["model", "environment"],
        )
        ages: dict[tuple[str, str], float] = {}
        failed: dict[tuple[str, str], int] = {}
        for core in list(_EXPORTED):
            labels = (core.model, core.environment)
            ages[labels] = max(ages.get(labels, 0.0), core.stale_seconds)
            failed[labels] = failed.get(labels, 0) + core.failures
        for labels, age in ages.items():
            stale.add_metric(list(labels), age)
            failures.add_metric(list(labels), failed[labels])
        yield stale
        yield failures

    def describe(self) -> Iterator[Any]:
        return iter(())
