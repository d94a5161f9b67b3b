"""Engine and session factory. Only the registry touches SQLAlchemy sessions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, make_url, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

#: libpq connection parameters for PostgreSQL, unless the URL's query string sets them. A
#: server that does not answer (stopped without closing its port, a black-holed route, a hung
#: host) costs ``connect_timeout`` seconds per attempt, not a hang. A peer that vanishes under
#: an open connection is noticed within about a minute instead of the kernel's defaults (two
#: hours idle, a quarter of an hour of retransmissions): by TCP keepalives while the
#: connection is idle, by ``tcp_user_timeout`` (ms) while a statement sent is unacknowledged.
PG_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 30_000,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
#: How long a request waits for a pooled connection before it gives up (and answers 503).
POOL_TIMEOUT_SECONDS = 10


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings modelreg relies on.

    SQLite gets foreign keys (off by default there), WAL, and a busy timeout so that the API
    threads, the worker and the controller can share one file. PostgreSQL gets a connect
    timeout and TCP keepalives (``PG_CONNECT_ARGS``; a ``?connect_timeout=`` in the URL wins),
    a bounded wait for a pooled connection, and a ping before a pooled connection is reused, so
    that the first request after the server restarted does not fail on a dead connection.
    Statement parameters are never shown in errors or logs.
    """
    # SQL parameters include secret hashes (api_client.secret_hash): keep them out of error
    # messages and of SQL logging, should either ever be turned on.
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    if parsed.get_backend_name() == "postgresql":
        connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
    return create_engine(url, **kwargs)


_Row = TypeVar("_Row")


def lock_row(s: Session, entity: type[_Row], ident: Any) -> _Row | None:
    """Lock one row until the transaction ends, and read it afresh; None if it is gone.

    This is how a service lets the database settle a race instead of checking, then acting:
    lock the row that the decision is about (the model, the version, the deployment), then read
    what the decision needs. PostgreSQL takes a row lock (``SELECT … FOR UPDATE``). SQLite has
    no row locks: there an UPDATE that matches no row takes the database's one write lock at
    once (pysqlite begins the transaction right before it), so nothing another writer commits
    can come between what this transaction reads next and what it writes.

    Lock before reading: an object this session loaded earlier is refreshed, but a decision
    made from it before the lock is still check-then-act.
    """
    pk = inspect(entity).primary_key[0]
    if s.get_bind().dialect.name == "sqlite":
        s.execute(update(entity).where(pk == ident, pk != ident).values({pk.key: pk}))
        stmt = select(entity).where(pk == ident)
    else:
        stmt = select(entity).where(pk == ident).with_for_update()
    row: _Row | None = s.scalar(stmt.execution_options(populate_existing=True))
    return row


def lock_rows(s: Session, entity: type[_Row], idents: Iterable[Any]) -> dict[Any, _Row]:
    """:func:`lock_row` for many rows in one statement: the rows found, by primary key.

    PostgreSQL locks them in primary-key order (``ORDER BY`` under ``FOR UPDATE``), so two
    transactions that lock overlapping sets this way wait for each other instead of
    deadlocking. SQLite takes its one write lock, as :func:`lock_row` does.
    """
    wanted = list(dict.fromkeys(idents))
    if not wanted:
        return {}
    pk = inspect(entity).primary_key[0]
    stmt = select(entity).where(pk.in_(wanted)).order_by(pk)
    if s.get_bind().dialect.name == "sqlite":
        first = wanted[0]
        s.execute(update(entity).where(pk == first, pk != first).values({pk.key: pk}))
    else:
        stmt = stmt.with_for_update()
    rows = s.scalars(stmt.execution_options(populate_existing=True))
    return {getattr(row, pk.key): row for row in rows}


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


#: Errors that mean the database cannot be reached right now (the API answers 503): the server
#: is down, restarting or refusing connections, a connection died under a statement, or no
#: pooled connection came free within ``POOL_TIMEOUT_SECONDS``.
DB_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)


def db_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from (its cause, or the error it was raised
    while handling, or a member of an exception group), means the database is unreachable.
    For the layers that wrap errors."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DB_UNAVAILABLE_ERRORS):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)  # raised while handling it
    return False


#: The longest wait between two attempts of a background loop to reach a database that is down.
DB_RETRY_MAX_SECONDS = 5.0


class DatabaseOutage:
    """What a part that keeps running without the database says of an outage: two log lines,
    when it starts and when it ends, not one per failed attempt. ``down`` is logged with the
    error's class name for its ``%s``; ``up`` with the number of failed attempts for its
    ``%d``.

    Background loops (the validation worker, the controller) also wait between attempts: the
    delay that :meth:`failed` returns grows from ``base`` seconds up to
    ``DB_RETRY_MAX_SECONDS`` (or ``base``, if longer). Parts that answer from what they have
    (endpoint resolution, metrics scrapes) leave ``base`` at 0 and ignore it."""

    def __init__(self, log: logging.Logger, *, down: str, up: str, base: float = 0.0) -> None:
        self.log = log
        self.base = base
        self.cap = max(base, DB_RETRY_MAX_SECONDS)
        self.down = down
        self.up = up
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Count a failed attempt; return how long to wait before the next one."""
        self.failures += 1
        delay: float = min(self.base * 2.0 ** min(self.failures - 1, 16), self.cap)
        if self.failures == 1:
            self.log.warning(self.down, exc.__class__.__name__)
        else:
            self.log.debug("database still unavailable (%d failed attempts)", self.failures)
        return delay

    def succeeded(self) -> None:
        """An attempt reached the database: end the outage, if there was one."""
        if self.failures:
            self.log.warning(self.up, self.failures)
            self.failures = 0
