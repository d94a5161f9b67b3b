"""``modelreg models``: registered models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from api.cli.context import open_client, problems_in_one_line
from api.cli.output import (
    JsonOpt,
    emit_json,
    fail,
    format_time,
    out,
    print_fields,
    print_tagged_table,
)

models_app = typer.Typer(help="Registered models.", no_args_is_help=True)

#: ``--filter`` and ``--order-by`` of ``models list`` and ``versions list``: the API's own
#: ``filter`` and ``orderBy``, passed as typed (docs/api.md, "Search").
FILTER_HELP = (
    "e.g. \"tag.stage = 'candidate' AND createdAt > '2026-01-01'\": fields, = != < <= > >= "
    "IN (...), AND, OR, NOT, parentheses (docs/api.md, Search)"
)


@models_app.command("create")
def models_create(
    name: str,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="ImageGeneration, TextGeneration, "
            "ImageTransformation, StyleTransfer or ContentSafety",
        ),
    ],
    provider: Annotated[str, typer.Option(help="e.g. Internal, OpenAI")] = "Internal",
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model."""
    with open_client() as client:
        model = client.create_model(
            name, task_type=task, provider=provider, description=description
        )
    if as_json:
        emit_json(model)
    else:
        out.print(f"created model [bold]{model.name}[/] ({model.id})")


@models_app.command("list")
def models_list(
    task: Annotated[str | None, typer.Option("--task")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", show_default=False)] = None,
    query: Annotated[
        str | None, typer.Option("-q", "--query", help="Substring of name or description")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help=FILTER_HELP + "; fields: name, task, provider, createdAt, updatedAt, tag.<key>",
        ),
    ] = None,
    order_by: Annotated[
        str | None,
        typer.Option(
            "--order-by", help="name, createdAt or updatedAt, then asc or desc [default: name]"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List models, with their tags."""
    with open_client() as client, problems_in_one_line():
        items = list(
            client.list_models(
                task_type=task,
                provider=provider,
                is_active=active,
                q=query,
                filter=filter_,
                order_by=order_by,
            )
        )
    if as_json:
        emit_json(items)
        return
    print_tagged_table(
        f"{len(items)} model(s)",
        ("name", "task", "provider", "active", "updated", "description"),
        [
            (
                m.name,
                m.task_type,
                escape(m.provider),
                "yes" if m.is_active else "no",
                format_time(m.updated_at),
                escape((m.description or "")[:60]),
            )
            for m in items
        ],
        [m.tags for m in items],
    )


@models_app.command("show")
def models_show(name: str, as_json: JsonOpt = False) -> None:
    """Show one model."""
    with open_client() as client:
        model = client.get_model(name)
    emit_json(model) if as_json else print_fields(model, f"model {name}")


@models_app.command("update")
def models_update(
    name: str,
    task: Annotated[str | None, typer.Option("--task")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", show_default=False)] = None,
) -> None:
    """Change a model's task type, provider, description or active flag."""
    changes = {
        k: v
        for k, v in {
            "taskType": task,
            "provider": provider,
            "description": description,
            "isActive": active,
        }.items()
        if v is not None
    }
    if not changes:
        fail("nothing to change: pass --task, --provider, --description or --active/--inactive")
    with open_client() as client:
        model = client.update_model(name, **changes)
    out.print(f"updated model [bold]{model.name}[/]")


@models_app.command("delete")
def models_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
) -> None:
    """Delete a model with all its versions and artifacts."""
    if not yes and not typer.confirm(f"Delete model {name} with all its versions and artifacts?"):
        raise typer.Exit(1)
    with open_client() as client:
        client.delete_model(name)
    out.print(f"deleted model [bold]{name}[/]")


# -- versions -------------------------------------------------------------------------------
