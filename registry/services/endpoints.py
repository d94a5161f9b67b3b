"""Endpoint resolution: which endpoints serve a model in an environment now, and one pick.

This is the hot path of every generation request, so answers come from an in-process cache:

* A resolved set (or a "nothing serves it" answer) is cached per (model name, environment).
  Positive answers live until they are invalidated; negative ones for ``negative_seconds``.
* ``invalidate()`` drops entries at once in this process (the deployment service calls it
  after it writes routes).
* Other processes' writes are seen through ``routing_state.generation``: a daemon thread reads
  it every ``poll_seconds`` and drops the cache when it has moved.
* While the database is unreachable, the last answer known for a key is served (stale), and
  the outage is logged once; with no answer known, ``Unavailable`` (503).

The answer's JSON is serialized once per resolved set; a request only splices in its pick.

Sticky picks (``key=``) are ``modelreg_client.picking``'s: the client's ``Resolver`` picks
locally with the same code, so it picks what this service would. See that module for the
order and the hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelreg_client import picking
from modelreg_client.picking import ROLE_ORDER, PickTable, key_point
from registry.db import DB_UNAVAILABLE_ERRORS, DatabaseOutage
from registry.errors import NotFound, Unavailable
from registry.models import AIModel
from registry.services.routing import RouteEntry, current_routes, read_generation

log = logging.getLogger("modelreg.endpoints")

__all__ = ["ROLE_ORDER", "EndpointService", "EndpointSet", "key_point", "pick_order"]


def pick_order(entry: RouteEntry) -> tuple[int, str, str]:
    """The stable order endpoints are walked in; it never depends on the weights."""
    return picking.pick_order(entry.role, entry.version_number, str(entry.deployment_id))


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class EndpointSet:
    """One resolved answer, with its JSON pre-serialized.

    ``endpoints`` are in ``pick_order``. The body of an answer is ``head`` + the pick's
    ``selected_json`` (or ``null``) + ``b"}"``.
    """

    model: str
    environment: str
    generation: int
    endpoints: tuple[RouteEntry, ...]
    etag: str
    head: bytes
    _table: PickTable[int]  # indexes into _serving and _selected_json
    _serving: tuple[RouteEntry, ...]
    _selected_json: tuple[bytes, ...]

    @classmethod
    def build(
        cls, *, model: str, environment: str, generation: int, routes: list[RouteEntry]
    ) -> EndpointSet:
        endpoints = tuple(sorted(routes, key=pick_order))
        listed = [r.to_dict() for r in endpoints]
        digest = hashlib.sha256(_dumps(listed)).hexdigest()[:20]
        serving = tuple(r for r in endpoints if r.weight > 0)
        head = (
            b'{"model":'
            + _dumps(model)
            + b',"environment":'
            + _dumps(environment)
            + b',"generation":'
            + str(generation).encode()
            + b',"endpoints":'
            + _dumps(listed)
            + b',"selected":'
        )
        return cls(
            model=model,
            environment=environment,
            generation=generation,
            endpoints=endpoints,
            etag=f'"g{generation}-{digest}"',
            head=head,
            _table=PickTable((i, r.weight) for i, r in enumerate(serving)),
            _serving=serving,
            _selected_json=tuple(
                _dumps(
                    {
                        "versionNumber": r.version_number,
                        "modelVersionId": str(r.model_version_id),
                        "url": r.url,
                    }
                )
                for r in serving
            ),
        )

    @property
    def total_weight(self) -> int:
        return self._table.total

    def pick_index(self, key: str | None = None) -> int | None:
        """Index into the serving endpoints: weighted random, or sticky for ``key``."""
        return self._table.index(key)

    def pick(self, key: str | None = None) -> RouteEntry | None:
        index = self.pick_index(key)
        return None if index is None else self._serving[index]

    def body(self, key: str | None = None) -> bytes:
        index = self.pick_index(key)
        selected = b"null" if index is None else self._selected_json[index]
        return self.head + selected + b"}"


@dataclass(frozen=True)
class _Entry:
    answer: EndpointSet | NotFound
    expires: float  # on the monotonic clock; positive answers never expire on their own


class EndpointService:
    """Resolves (model name, environment) to its endpoint set, through the cache."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        poll_seconds: float = 0.25,
        negative_seconds: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.poll_seconds = poll_seconds  # 0 turns the poller (cross-process updates) off
        self.negative_seconds = negative_seconds
        self._fresh: dict[tuple[str, str], _Entry] = {}
        # The last answer seen per key, kept across invalidations: served while the DB is down.
        self._last: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._epoch = 0  # bumped by every invalidation: a load that straddles one is not cached
        self._generation: int | None = None
        self._db_outage = DatabaseOutage(
            log,
            down="database unreachable while resolving endpoints (%s); serving the last known "
            "answers until it is back",
            up="database reachable again after %d failed resolution(s); endpoint answers are fresh",
        )
        self._poll_outage = DatabaseOutage(
            log,
            down="cannot read the routing generation: %s",
            up="the routing generation is readable again after %d failed poll(s)",
        )
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- reading ------------------------------------------------------------------------------

    def cached(self, model_name: str, environment: str) -> EndpointSet | None:
        """The cached positive answer, or None (then call ``resolve``). No I/O."""
        entry = self._fresh.get((model_name, environment))
        if entry is not None and isinstance(entry.answer, EndpointSet):
            return entry.answer
        return None

    def resolve(self, model_name: str, environment: str) -> EndpointSet:
        """The endpoint set; raises ``NotFound`` when nothing serves the model there."""
        self._ensure_poller()
        cache_key = (model_name, environment)
        entry = self._fresh.get(cache_key)
        if entry is not None and entry.expires > time.monotonic():
            return self._answer(entry)
        epoch = self._epoch
        try:
            answer = self._load(model_name, environment)
        except DB_UNAVAILABLE_ERRORS as exc:
            stale = self._last.get(cache_key)
            self._db_outage.failed(exc)
            if stale is None:
                raise Unavailable("the database is unavailable; retry later") from exc
            return self._answer(stale)
        self._db_outage.succeeded()
        expires = (
            float("inf")
            if isinstance(answer, EndpointSet)
            else time.monotonic() + self.negative_seconds
        )
        new = _Entry(answer, expires)
        with self._lock:
            if len(self._last) >= self.MAX_CACHED:
                self._last.clear()
            self._last[cache_key] = new
            if epoch == self._epoch:
                if len(self._fresh) >= self.MAX_CACHED:
                    self._fresh.clear()
                self._fresh[cache_key] = new
        return self._answer(new)

    @staticmethod
    def _answer(entry: _Entry) -> EndpointSet:
        if isinstance(entry.answer, NotFound):
            raise NotFound(entry.answer.detail, **entry.answer.extra)
        return entry.answer

    def _load(self, model_name: str, environment: str) -> EndpointSet | NotFound:
        with self.sessions() as s:
            generation = read_generation(s)
            model_id = s.scalar(select(AIModel.id).where(AIModel.name == model_name))
            if model_id is None:
                return NotFound(f"no model named {model_name!r}", reason="no-such-model")
            routes = current_routes(s, model_id=model_id, environment=environment)
        if not routes:
            return NotFound(
                f"model {model_name!r} exists, but nothing serves it in {environment}",
                reason="not-deployed",
                environment=environment,
            )
        return EndpointSet.build(
            model=model_name, environment=environment, generation=generation, routes=routes
        )

    # -- invalidation -------------------------------------------------------------------------

    def invalidate(self, model_name: str | None = None) -> None:
        """Drop cached answers (of one model, or all) in this process, at once."""
        with self._lock:
            self._epoch += 1
            if model_name is None:
                self._fresh.clear()
            else:
                for cache_key in [k for k in self._fresh if k[0] == model_name]:
                    self._fresh.pop(cache_key, None)

    def poll_once(self) -> None:
        """Read the routing generation; drop the cache if another writer moved it."""
        try:
            with self.sessions() as s:
                generation = read_generation(s)
        except Exception as exc:  # logged once; the cache keeps serving
            self._poll_outage.failed(exc)
            return
        self._poll_outage.succeeded()
        if generation != self._generation:
            # Also on the first read: an answer cached before it may predate a write.
            self.invalidate()
            self._generation = generation

    def _ensure_poller(self) -> None:
        if self._poller is not None or self._stop.is_set() or self.poll_seconds <= 0:
            return
        with self._lock:
            if self._poller is not None:
                return
            self._poller = threading.Thread(
                target=self._poll_loop, name="endpoint-cache-poller", daemon=True
            )
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_seconds)

    def close(self) -> None:
        """Stop the poller thread (the cache keeps answering, without cross-process updates)."""
        self._stop.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)
