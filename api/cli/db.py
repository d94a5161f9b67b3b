"""``modelreg db``: the database schema, and an admin key minted straight in it."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.context import configure_logging, load_settings
from api.cli.output import out

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from registry import migrate

    settings = load_settings()
    configure_logging("INFO")
    migrate.upgrade(settings.database_url, revision)
    out.print(f"database at revision {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, or base")]) -> None:
    """Revert migrations down to REVISION ('base' empties the database)."""
    from registry import migrate

    settings = load_settings()
    configure_logging("INFO")
    migrate.downgrade(settings.database_url, revision)
    out.print(f"database at revision {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one the code knows."""
    from registry import migrate
    from registry.db import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision(settings.database_url)
    out.print(f"current: {current or '(empty)'}\nhead:    {head}")


@db_app.command("admin-key")
def db_admin_key(
    name: Annotated[str, typer.Option(help="Name of the new key")] = "recovery-admin",
) -> None:
    """Mint an admin API key straight in the database (MODELREG_DATABASE_URL), for an operator
    who lost every admin key. The token is printed once; the key is audited like any other."""
    from registry.db import create_db_engine, create_session_factory
    from registry.services.keys import KeyService

    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    try:
        issued = KeyService(create_session_factory(engine)).mint_admin(name=name)
    finally:
        engine.dispose()
    out.print(f"[bold green]Created admin key[/] {issued.info.api_key} (shown once, never stored):")
    out.print(f"  {issued.token}", highlight=False, soft_wrap=True)


# -- models ---------------------------------------------------------------------------------
