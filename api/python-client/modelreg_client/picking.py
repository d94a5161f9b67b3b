"""Which endpoint serves a request: the weighted pick, sticky for a key.

This is the one implementation. The server answers ``GET /models/{name}/endpoint?key=...``
with it (``registry.services.endpoints``), and the client's ``Resolver`` picks locally with
it, so both pick the same endpoint for the same key and the same endpoint set.

Sticky picks use consistent hashing against weight boundaries. The key's SHA-256 gives a
point in [0, total weight); the endpoints with weight > 0 are walked in a fixed order that does
not depend on the weights, and the first whose cumulative weight passes the point is chosen.
The order is: role ``canary``, then ``active``, then ``stable``, then ``preview`` (then by
version number, then deployment id). The candidate of a rollout therefore owns the low band
[0, its weight), so a key that lands on it at 10% stays on it at 50% and at 100%.

Standard library only.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterable
from hashlib import sha256
from itertools import accumulate
from typing import Generic, TypeVar

from modelreg_client.vocabulary import RouteRole

T = TypeVar("T")

#: The walk order of sticky picks: the candidate of a rollout first (see the module docstring).
ROLE_ORDER: dict[str, int] = {
    RouteRole.CANARY: 0,
    RouteRole.ACTIVE: 1,
    RouteRole.STABLE: 2,
    RouteRole.PREVIEW: 3,
}

HASH_SPAN = float(1 << 64)


def pick_order(role: str, version_number: str, deployment_id: str) -> tuple[int, str, str]:
    """The sort key endpoints are walked in; it never depends on the weights."""
    return (ROLE_ORDER.get(role, len(ROLE_ORDER)), version_number, deployment_id)


def key_point(key: str) -> float:
    """Where ``key`` falls in [0, 1]: the first 8 bytes of its SHA-256, over 2**64."""
    return int.from_bytes(sha256(key.encode()).digest()[:8], "big") / HASH_SPAN


class PickTable(Generic[T]):
    """Items with weight > 0, in pick order, and their cumulative weights: built once per
    endpoint set, then each pick is one hash and one bisection.

    A sticky point is ``int(sha256(key)[:8]) * (total / 2**64)``. That equals
    ``key_point(key) * total``: scaling by a power of two is exact in binary floating point,
    so both products round the same real number once.
    """

    __slots__ = ("_padded", "_scale", "bounds", "items", "total")

    def __init__(self, weighted: Iterable[tuple[T, int]]) -> None:
        """``weighted``: ``(item, weight)`` in pick order; items with weight <= 0 never win."""
        serving = [(item, weight) for item, weight in weighted if weight > 0]
        self.items: tuple[T, ...] = tuple(item for item, _ in serving)
        self.bounds: tuple[int, ...] = tuple(accumulate(weight for _, weight in serving))
        self.total: int = self.bounds[-1] if self.bounds else 0
        self._scale = self.total / HASH_SPAN
        # A point that rounds up to ``total`` (a hash within 2**11 of 2**64) bisects past the
        # end: it belongs to the last item, so the last item is there twice.
        self._padded: tuple[T, ...] = (*self.items, self.items[-1]) if self.items else ()

    def index(self, key: str | None = None) -> int | None:
        """The index into ``items``: sticky for ``key``, weighted random without one; None when
        nothing has weight."""
        if not self.total:
            return None
        if key is None:
            point = random.random() * self.total  # noqa: S311 (spreads load; guards no secret)
        else:
            point = int.from_bytes(sha256(key.encode()).digest()[:8], "big") * self._scale
        return min(bisect_right(self.bounds, point), len(self.bounds) - 1)

    def pick(self, key: str) -> T:
        """The item for ``key``: ``items[index(key)]``, on the hot path. Raises ``IndexError``
        when nothing has weight (check ``total`` first)."""
        return self._padded[
            bisect_right(
                self.bounds, int.from_bytes(sha256(key.encode()).digest()[:8], "big") * self._scale
            )
        ]
