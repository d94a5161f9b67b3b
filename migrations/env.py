"""Alembic environment. The URL comes from the config (set by ``registry.migrate``) or Settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from registry.db import create_db_engine
from registry.models import Base
from registry.settings import Settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def _configure(connection: Connection | None = None, **kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,
        connection=connection,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(_url())
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild SQLite tables (copy, drop, rename); with foreign keys
                # enforced, dropping the old table would fire ON DELETE actions on other rows.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()  # end the autobegun transaction, so Alembic's own commits
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
