"""``modelreg keys``: API keys, through the API (an admin key)."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.context import open_client
from api.cli.output import JsonOpt, emit_json, format_time, out, print_table, short_ids

keys_app = typer.Typer(help="API keys (needs an admin key).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="models:read, models:write, deployments:write, feedback:write or admin; "
            "repeat for several",
        ),
    ],
    user: Annotated[
        str | None,
        typer.Option(
            help="Email of the user the key acts for; a service account is created if new"
        ),
    ] = None,
) -> None:
    """Create an API key. The token is printed once; only its hash is stored."""
    with open_client() as client:
        key = client.create_key(name, scope, user=user)
    out.print(
        f"created key [bold]{key.api_key}[/] for {key.user_email} with scopes "
        f"{', '.join(key.scopes)}"
    )
    out.print("token (shown once, store it now):")
    out.print(f"  {key.token}", highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List API keys (never their secrets)."""
    with open_client() as client:
        keys = client.list_keys()
    if as_json:
        emit_json(keys)
        return
    print_table(
        f"{len(keys)} key(s)",
        ("api key", "name", "user", "scopes", "active", "created"),
        [
            (
                short,
                k.name,
                k.user_email,
                ", ".join(k.scopes),
                "yes" if k.is_active else "revoked",
                format_time(k.created_at),
            )
            for short, k in zip(short_ids([k.api_key for k in keys]), keys, strict=True)
        ],
    )


@keys_app.command("revoke")
def keys_revoke(
    api_key: Annotated[
        str, typer.Argument(help="The public key id (mr_…), or its first 8 or more characters")
    ],
) -> None:
    """Revoke an API key at once."""
    with open_client() as client:
        key = client.revoke_key(api_key)
    out.print(f"revoked key [bold]{key.api_key}[/] ({key.name})")


# -- security scan --------------------------------------------------------------------------
