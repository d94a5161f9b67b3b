"""A pooled connection that died with a PostgreSQL restart, without a ping per checkout.

``registry.db.create_db_engine`` does not ping a pooled connection before handing it out; a
checkout whose first statement meets a dead connection is retried once on a new one
(``retry_dead_connections``). These tests restart a private cluster
(``tests/support/pgcluster.py``) under an engine whose pool holds connections from before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from registry.db import create_db_engine, db_unavailable
from tests.support.pgcluster import PgCluster, StopMode

pytestmark = pytest.mark.slow

POOLED = 4


@pytest.fixture
def engine(cluster: PgCluster) -> Iterator[Engine]:
    engine = create_db_engine(cluster.url, pool_size=POOLED, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


def _fill_pool(engine: Engine) -> set[int]:
    """Check out ``POOLED`` connections at once, so that the pool holds that many; return
    their server process ids."""
    conns = [engine.connect() for _ in range(POOLED)]
    try:
        return {c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in conns}
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_every_checkout_after_a_restart_succeeds(
    cluster: PgCluster, engine: Engine, mode: StopMode
) -> None:
    before = _fill_pool(engine)
    assert len(before) == POOLED
    cluster.stop(mode)
    cluster.start()
    # Every pooled connection is dead now. Each checkout's first statement, a write in a
    # transaction as the API's are, still succeeds, sequentially and at once.
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n int)"))
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(POOLED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == POOLED
    assert _fill_pool(engine).isdisjoint(before)  # new server processes: reconnected


def test_a_connection_lost_after_the_first_statement_is_not_retried(
    cluster: PgCluster, engine: Engine
) -> None:
    """What a transaction already sent cannot be replayed: the error is the caller's."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n int)"))
    conn = engine.connect()
    try:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        cluster.stop("fast")
        cluster.start()
        with pytest.raises(OperationalError):
            conn.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        conn.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0


def test_a_checkout_while_the_server_is_down_says_unavailable(
    cluster: PgCluster, engine: Engine
) -> None:
    """The retry cannot reconnect: the caller gets the disconnect, an error that means the
    database is unavailable (503), not an error of the retry's own."""
    _fill_pool(engine)
    cluster.stop("fast")
    for _ in range(2):
        with pytest.raises(OperationalError) as raised, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert db_unavailable(raised.value)
    cluster.start()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
