"""Engine and session factory. Only the registry touches SQLAlchemy sessions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

_log = logging.getLogger(__name__)

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
    a bounded wait for a pooled connection, connections recycled after ``POOL_RECYCLE_SECONDS``,
    and one retry of a checkout's first statement on a dead connection
    (:func:`retry_dead_connections`), so that the first request after the server restarted does
    not fail. Statement parameters are never shown in errors or logs.
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
    kwargs.setdefault("pool_recycle", POOL_RECYCLE_SECONDS)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    if parsed.get_backend_name() == "postgresql":
        connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        retry_dead_connections(engine)
    return engine


#: A pooled connection older than this is replaced at checkout instead of reused: what a
#: firewall or a server-side idle timeout may have cut is not handed out again.
POOL_RECYCLE_SECONDS = 1800
_UNUSED = "modelreg_unused_since_checkout"


def retry_dead_connections(engine: Engine) -> None:
    """Retry once, on a new connection, the first statement of a checkout that failed because
    its pooled connection was dead (the server restarted, or ended the session).

    This replaces ``pool_pre_ping``, which costs a ``SELECT 1`` round trip on every checkout.
    Retrying is safe only for a checkout's first statement: nothing of the transaction had
    reached the server (the driver's implicit ``BEGIN`` went with the statement), so nothing is
    lost or sent twice. A dead connection means the server went away, so, as SQLAlchemy does
    for a disconnect it sees, every connection pooled before now is replaced at its next
    checkout (``Pool._invalidate``), and the retry gets a fresh one. A failure later in a
    checkout, or of the retry, is raised as usual (the API answers 503)."""
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error

    @event.listens_for(engine, "checkout")
    def _mark(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        record.info[_UNUSED] = True

    def run(execute: Any, cursor: Any, context: Any, *args: Any) -> bool:
        proxied = getattr(context, "_dbapi_connection", None)  # no context: a raw cursor call
        # The dialect's own first queries run on an ad hoc connection without a record's info.
        record = getattr(proxied, "_connection_record", None)
        if proxied is None or record is None or not record.info.pop(_UNUSED, False):
            execute(cursor, *args, context)
            return True
        try:
            execute(cursor, *args, context)
        except dbapi_error as exc:
            if not dialect.is_disconnect(exc, proxied.dbapi_connection, cursor):
                raise
            _log.info("a pooled database connection was dead; retrying on a new one")
            # Every connection pooled before now is suspect; this one is closed only once a
            # new one is in hand: if none can be had (the server is down), the original error
            # goes on as any disconnect does (503), on the connection it happened on.
            engine.pool._invalidate(proxied, exc, _checkin=False)
            try:
                fresh = engine.raw_connection()
            except DB_UNAVAILABLE_ERRORS:
                raise exc from None
            fresh.info.pop(_UNUSED, None)  # the retry is this checkout's first statement
            proxied.invalidate(exc)
            context.root_connection._dbapi_connection = context._dbapi_connection = fresh
            context.cursor = fresh.cursor()
            execute(context.cursor, *args, context)
        return True

    @event.listens_for(engine, "do_execute")
    def _execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        return run(dialect.do_execute, cursor, context, statement, parameters)

    @event.listens_for(engine, "do_execute_no_params")
    def _execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        return run(dialect.do_execute_no_params, cursor, context, statement)

    @event.listens_for(engine, "do_executemany")
    def _executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        return run(dialect.do_executemany, cursor, context, statement, parameters)


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


def statement_connection(s: Session) -> Connection:
    """The session's connection, for a write whose statements each stand alone: each one
    atomic (a data-modifying CTE writes several rows in one), and none relying on what an
    earlier one read to still hold (a foreign key or a constraint checks it again at the
    write). On PostgreSQL it runs in autocommit mode, which spares the ``BEGIN`` and ``COMMIT``
    round trips; elsewhere it is the session's transaction, as usual."""
    if s.get_bind().dialect.name == "postgresql":
        return s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return s.connection()


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
