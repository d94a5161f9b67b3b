"""``modelreg tags``: key/value labels on models and versions.

A tag labels; it is not part of what a version serves, so it changes on any status. The
``models`` and ``versions`` commands show tags (``show`` whole, ``list`` in short) and filter
on them (``--filter "tag.stage = 'candidate'"``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from api.cli.context import open_client, problems_in_one_line
from api.cli.output import JsonOpt, emit_json, format_tags, out

tags_app = typer.Typer(
    help="Tags on models and versions: set and remove key/value labels.", no_args_is_help=True
)

KeyArg = Annotated[
    str, typer.Argument(help="1 to 63 letters, digits, '.', '_', '-' or '/', e.g. team/vision")
]
VersionOpt = Annotated[
    str | None,
    typer.Option("--version", help="Tag this version of MODEL instead of the model itself"),
]


def _owner(model: str, version: str | None) -> str:
    return model if version is None else f"{model} {version}"


@tags_app.command("set")
def tags_set(
    model: str,
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="At most 5000 characters; may be empty")],
    version: VersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set tag KEY to VALUE on MODEL (or on --version V of it), replacing any value it had."""
    with open_client() as client, problems_in_one_line():
        owner = client.set_tag(model, key, value, version=version)
    if as_json:
        emit_json(owner)
        return
    tags = owner.get("tags") or {}
    out.print(Text(f"tagged {_owner(model, version)}: {key}={tags.get(key, value)}"))
    out.print(Text(f"  tags now  {format_tags(tags)}"))


@tags_app.command("rm")
def tags_rm(model: str, key: KeyArg, version: VersionOpt = None) -> None:
    """Remove tag KEY from MODEL (or from --version V of it); an error if it has no such tag."""
    with open_client() as client, problems_in_one_line():
        client.delete_tag(model, key, version=version)
    out.print(Text(f"removed tag {key} from {_owner(model, version)}"))
