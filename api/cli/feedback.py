"""``modelreg feedback``: submit user feedback on versions, summarize it, compare the versions
serving now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api.cli.choices import one_of
from api.cli.context import open_client
from api.cli.output import JsonOpt, emit_json, fail, format_time, out, print_table
from modelreg_client.vocabulary import Environment

feedback_app = typer.Typer(
    help="User feedback on versions: submit, summarize, compare serving versions.",
    no_args_is_help=True,
)

FEEDBACK_BATCH = 1000
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this time on (ISO 8601 with zone)")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Before this time (ISO 8601 with zone)")
]


def _feedback_lines(path: Path, model: str, version: str) -> list[dict[str, Any]]:
    """The items of a JSON Lines file; an item naming no version is about MODEL VERSION."""
    items: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            fail(f"{path}:{number}: not JSON: {exc}")
        if isinstance(item, dict) and not (
            {"modelVersionId", "model", "versionNumber"} & set(item)
        ):
            item = {"model": model, "versionNumber": version, **item}
        items.append(item)
    if not items:
        fail(f"{path} holds no feedback items")
    return items


@feedback_app.command("submit")
def feedback_submit(
    model: str,
    version: str,
    rating: Annotated[
        int | None, typer.Option("--rating", min=1, max=5, help="1 (worst) to 5 (best)")
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment")] = None,
    generation_request_id: Annotated[
        str | None, typer.Option("--generation-request-id", help="UUID of the generation request")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            help="JSON Lines, one item a line (camelCase fields); items without a version "
            "are about MODEL VERSION",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit one rating or comment, or a file of them (sent in batches of 1,000)."""
    from modelreg_client.client import ModelregError

    if file is not None:
        if rating is not None or comment is not None or generation_request_id is not None:
            fail("give either --file or --rating/--comment/--generation-request-id")
        items = _feedback_lines(file, model, version)
    else:
        if rating is None and comment is None:
            fail("give --rating and/or --comment (or --file)")
        item: dict[str, Any] = {"model": model, "versionNumber": version}
        for key, value in (
            ("rating", rating),
            ("comment", comment),
            ("generationRequestId", generation_request_id),
        ):
            if value is not None:
                item[key] = value
        items = [item]
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with open_client() as client:
        for start in range(0, len(items), FEEDBACK_BATCH):
            chunk = items[start : start + FEEDBACK_BATCH]
            try:
                answer = client.submit_feedback(chunk).model_dump(mode="json", by_alias=True)
            except ModelregError as exc:
                if exc.status != 422 or "rejected" not in exc.problem or file is None:
                    raise
                answer = {"kept": exc.problem.get("kept", []), "rejected": exc.problem["rejected"]}
            kept += [{**k, "index": k["index"] + start} for k in answer["kept"]]
            rejected += [{**r, "index": r["index"] + start} for r in answer["rejected"]]
    if as_json:
        emit_json({"kept": kept, "rejected": rejected})
    else:
        out.print(f"kept {len(kept)}, rejected {len(rejected)}")
        if rejected:
            print_table(
                "Rejected",
                ("item", "reason"),
                [(str(r["index"] + 1), r["reason"]) for r in rejected],
            )
    if rejected:  # a batch with rejected items is not a success, even if some were kept
        raise typer.Exit(1)


def _share(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"{100 * low:.1f}-{100 * high:.1f}%"


@feedback_app.command("summary")
def feedback_summary(
    model: str,
    version: str,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Count, mean rating, share of ratings >= 4 (Wilson 95% interval) and a histogram."""
    from rich.bar import Bar

    with open_client() as client:
        summary = client.feedback_summary(model, version, since=since, until=until)
    if as_json:
        emit_json(summary)
        return
    mean = "" if summary.mean is None else f"{summary.mean:.2f}"
    out.print(
        f"[bold]{model} {version}[/]: {summary.count} items, {summary.rated} rated, "
        f"mean {mean or 'n/a'}, rated >= 4: {_share(summary.positive_share) or 'n/a'}"
        + (
            f" (95% CI {_interval(summary.positive_low, summary.positive_high)})"
            if summary.positive_share is not None
            else ""
        ),
        highlight=False,
    )
    if summary.since or summary.until:
        out.print(
            f"window: {format_time(summary.since) or '…'} to {format_time(summary.until) or 'now'}"
        )
    top = max(summary.distribution.values(), default=0) or 1
    table = Table(show_header=False, box=None, title="Ratings", title_justify="left")
    table.add_column(justify="right")
    table.add_column(width=40)
    table.add_column(justify="right")
    table.add_column(justify="right")
    for star in ("5", "4", "3", "2", "1"):
        n = summary.distribution.get(star, 0)
        share = n / summary.rated if summary.rated else 0.0
        colour = "green" if star in ("4", "5") else "yellow" if star == "3" else "red"
        table.add_row(
            f"{star}★", Bar(top, 0, n, width=40, color=colour), str(n), f"{100 * share:.0f}%"
        )
    out.print(table)


@feedback_app.command("compare")
def feedback_compare(
    model: str,
    env: Annotated[
        str, typer.Option("--env", callback=one_of(Environment), help="Environment")
    ] = Environment.PRODUCTION,
    as_json: JsonOpt = False,
) -> None:
    """The versions serving now, side by side, over the current rollout window."""
    with open_client() as client:
        comparison = client.compare_feedback(model, env)
    if as_json:
        emit_json(comparison)
        return
    start = format_time(comparison.window_start) or "the beginning"
    print_table(
        f"{model} in {env}: feedback since {start} ({comparison.window_source})",
        ("version", "role", "weight", "items", "rated", "mean", "rated >= 4", "95% CI"),
        [
            (
                v.version_number,
                v.role,
                f"{v.weight}%",
                str(v.summary.count),
                str(v.summary.rated),
                "" if v.summary.mean is None else f"{v.summary.mean:.2f}",
                _share(v.summary.positive_share),
                _interval(v.summary.positive_low, v.summary.positive_high),
            )
            for v in comparison.versions
        ],
    )
