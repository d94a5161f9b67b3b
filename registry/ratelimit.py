"""An in-process sliding-window counter of failures, for throttling failed authentication.

Each process counts on its own: with N API processes an attacker gets at most N times the
limit, which is still a handful of guesses against a 256-bit secret.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable


class FailureLimiter:
    """At most ``limit`` failures per subject within ``window_seconds``; past that, the subject
    is blocked until its oldest counted failure leaves the window."""

    MAX_SUBJECTS = 100_000

    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, subject: str, now: float) -> deque[float] | None:
        times = self._failures.get(subject)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[subject]
            return None
        return times

    def retry_after(self, subjects: Iterable[str]) -> int | None:
        """Whole seconds until every one of ``subjects`` may try again; None if none is
        blocked."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for subject in subjects:
                times = self._recent(subject, now)
                if times is not None and len(times) >= self.limit:
                    wait = max(wait, times[-self.limit] + self.window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def record_failure(self, subjects: Iterable[str]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self.MAX_SUBJECTS:
                self._prune(now)
            for subject in subjects:
                times = self._failures.setdefault(subject, deque(maxlen=self.limit))
                times.append(now)

    def _prune(self, now: float) -> None:
        for subject in list(self._failures):
            self._recent(subject, now)
        if len(self._failures) >= self.MAX_SUBJECTS:  # all recent: forget the oldest half
            oldest = sorted(self._failures, key=lambda s: self._failures[s][-1])
            for subject in oldest[: len(oldest) // 2]:
                del self._failures[subject]
