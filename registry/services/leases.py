"""Leader election: one controller at a time acts, the holder of a row lease in the database.

The holder renews it every pass; a controller that cannot (the database is gone, or another
took over after the lease ran out) stands by. The ledger checks the lease, row locked, in the
same transaction as every batch of writes it makes for the controller, so a stale leader
writes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from registry.db import lock_row
from registry.models import ControllerLease
from registry.types import utcnow

log = logging.getLogger(__name__)


class LeaseService:
    def __init__(self, sessions: sessionmaker[Session], *, name: str = "controller") -> None:
        self.sessions = sessions
        self.name = name

    def acquire(self, holder: str, *, ttl: timedelta) -> bool:
        """Take or renew the lease. True when ``holder`` leads until now + ttl."""
        now = utcnow()
        try:
            with self.sessions.begin() as s:
                return self._take(s, holder, ttl=ttl, now=now)
        except IntegrityError:  # another controller inserted the lease row first
            return False

    def release(self, holder: str) -> None:
        with self.sessions.begin() as s:
            lease = s.get(ControllerLease, self.name, with_for_update=True)
            if lease is not None and lease.holder == holder:
                s.delete(lease)

    def holds(self, s: Session, holder: str, now: datetime) -> bool:
        """Whether ``holder`` leads at ``now``, read in the caller's transaction with the lease
        row locked until it ends: a takeover (which locks the row too) waits for the writes
        made under this check to commit, so two controllers never write at the same time."""
        lease = lock_row(s, ControllerLease, self.name)
        return lease is not None and lease.holder == holder and lease.expires_at > now

    def _take(self, s: Session, holder: str, *, ttl: timedelta, now: datetime) -> bool:
        lease = s.get(ControllerLease, self.name, with_for_update=True)
        if lease is None:
            s.add(
                ControllerLease(
                    name=self.name, holder=holder, expires_at=now + ttl, acquired_at=now
                )
            )
            s.flush()
            log.info("controller %s took the lease", holder)
            return True
        if lease.holder != holder and lease.expires_at > now:
            return False
        if lease.holder != holder:
            log.info("controller lease taken over by %s (was %s)", holder, lease.holder)
            lease.acquired_at = now
        lease.holder = holder
        lease.expires_at = now + ttl
        return True
