"""What every ``modelreg`` command prints with: the consoles, errors, JSON, tables and
progress bars."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from modelreg_client.schemas import Wire

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    from modelreg_client.schemas import Wire

    def plain(item: Any) -> Any:
        return item.model_dump(mode="json", by_alias=True) if isinstance(item, Wire) else item

    payload = [plain(i) for i in data] if isinstance(data, list) else plain(data)
    out.print_json(json.dumps(payload))


def format_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def format_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


#: The shortest id prefix the server accepts (registry/ids.py MIN_PREFIX); lists show ids so.
ID_PREFIX = 8


def short_ids(ids: list[str]) -> list[str]:
    """``ids`` cut to the shortest prefix, at least :data:`ID_PREFIX` characters, that still
    tells them apart: what a list shows, and what every command taking an id accepts."""
    length = ID_PREFIX
    while len({i[:length] for i in ids}) < len(set(ids)):
        length += 1
    return [i[:length] for i in ids]


def print_fields(obj: Wire, title: str) -> None:
    """One row per field; ``tags`` one ``key=value`` a line. Values are plain text, never
    markup: a description or tag may hold ``[/]``."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")
    for key, value in obj.model_dump(by_alias=True).items():
        if key == "tags" and isinstance(value, dict):
            value = "\n".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, dict):
            value = json.dumps(value, default=str)
        table.add_row(key, Text("" if value is None else str(value)))
    out.print(table)


#: Words of column names whose cells are free text (or times): they wrap to fit the terminal.
#: Every other column (ids, names, states, versions, numbers) is printed whole.
WRAPPING = frozenset(
    ("at", "created", "description", "message", "reason", "requested", "scopes", "updated")
)


def print_table(
    title: str,
    columns: tuple[str, ...],
    rows: list[tuple[str, ...]],
    *,
    optional: tuple[str, ...] = (),
) -> None:
    """A table that stays readable in a narrow terminal (80 columns). Free-text columns (see
    :data:`WRAPPING`) wrap; ids, states and versions never break. When that is not enough the
    table drops its frame's edges and inner padding, then the ``optional`` columns, in order."""
    keep = list(columns)
    frame: box.Box | None = None
    for drop in (None, None, *optional):
        if drop is not None:
            keep.remove(drop)
        elif (
            keep == list(columns)
            and _narrowest(columns, rows, keep=keep, compact=False) > out.width
        ):
            frame = box.SIMPLE_HEAD  # no edges, one space between columns
            continue
        if frame is None or _narrowest(columns, rows, keep=keep, compact=True) <= out.width:
            break
    out.print(_table(title, columns, rows, keep=keep, frame=frame))


def _narrowest(
    columns: tuple[str, ...], rows: list[tuple[str, ...]], *, keep: list[str], compact: bool
) -> int:
    """How narrow the table can get: whole cells in the columns that do not wrap, the longest
    word in those that do, plus the frame."""
    widths = []
    for i, column in enumerate(columns):
        if column not in keep:
            continue
        cells = [column, *(Text.from_markup(row[i]).plain for row in rows)]
        pieces = [w for c in cells for w in c.split()] if column in WRAPPING else cells
        widths.append(max((len(p) for p in pieces), default=0))
    frame = 2 * (len(widths) - 1) if compact else 3 * len(widths) + 1
    return sum(widths) + frame


def _table(
    title: str,
    columns: tuple[str, ...],
    rows: list[tuple[str, ...]],
    *,
    keep: list[str],
    frame: box.Box | None = None,
) -> Table:
    table = Table(title=title, title_justify="left")
    if frame is not None:
        table = Table(
            title=title,
            title_justify="left",
            box=frame,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
    shown = [i for i, c in enumerate(columns) if c in keep]
    for i in shown:
        table.add_column(columns[i], overflow="fold", no_wrap=columns[i] not in WRAPPING)
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table


#: In a list, a tag's value is cut to this many characters, and a row shows this many tags.
TAG_VALUE_SHOWN = 24
TAGS_SHOWN = 3


def format_tags(tags: Mapping[str, str]) -> str:
    """``stage=candidate, team=vision`` for a list (``models show`` has them whole): long
    values cut with ``…``, and ``+2 more`` past :data:`TAGS_SHOWN`. Plain text."""
    shown = [
        f"{k}={v if len(v) <= TAG_VALUE_SHOWN else v[: TAG_VALUE_SHOWN - 1] + '…'}"
        for k, v in list(tags.items())[:TAGS_SHOWN]
    ]
    if len(tags) > TAGS_SHOWN:
        shown.append(f"+{len(tags) - TAGS_SHOWN} more")
    return ", ".join(shown)


def print_tagged_table(
    title: str,
    columns: tuple[str, ...],
    rows: list[tuple[str, ...]],
    tags: Sequence[Mapping[str, str]],
) -> None:
    """:func:`print_table` with the rows' tags: as a last ``tags`` column when the table
    fits the terminal with it, cells whole; else, so that no other column gets narrower, as
    one line per tagged row below the table, after the row's first cell (its name or
    version). Nothing is added when no row has tags."""
    cells = [format_tags(t) for t in tags]
    if not any(cells):
        print_table(title, columns, rows)
        return
    with_tags = [(*row, escape(cell)) for row, cell in zip(rows, cells, strict=True)]
    if _natural_width((*columns, "tags"), with_tags) <= out.width:
        print_table(title, (*columns, "tags"), with_tags)
        return
    print_table(title, columns, rows)
    labels = [Text.from_markup(row[0]).plain for row in rows]
    pad = max(len(label) for label, cell in zip(labels, cells, strict=True) if cell)
    out.print("tags", style="bold", highlight=False)
    for label, cell in zip(labels, cells, strict=True):
        if cell:
            out.print(Text(f"  {label.ljust(pad)}  {cell}"))


def _natural_width(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> int:
    """The width of the table with no cell wrapped, in the default frame (a bar and a space
    either side of every cell)."""
    widths = [
        max(len(Text.from_markup(cell).plain) for cell in (column, *(r[i] for r in rows)))
        for i, column in enumerate(columns)
    ]
    return sum(widths) + 3 * len(widths) + 1


@contextmanager
def show_progress(description: str) -> Iterator[Callable[[int | None], Callable[[int], None]]]:
    """Yields ``start(total) -> advance``; a rich progress bar with speed and time left."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:

        def start(total: int | None) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        yield start
