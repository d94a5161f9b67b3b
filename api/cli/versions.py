"""``modelreg versions``: model versions, and uploading and downloading their artifacts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.choices import listed, one_of
from api.cli.context import open_client, problems_in_one_line
from api.cli.models import FILTER_HELP
from api.cli.output import (
    JsonOpt,
    emit_json,
    fail,
    format_size,
    format_time,
    out,
    print_fields,
    print_tagged_table,
    show_progress,
)
from modelreg_client.vocabulary import ArtifactFormat

versions_app = typer.Typer(help="Model versions and their artifacts.", no_args_is_help=True)


def _parameters(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(Path(raw[1:]).read_text() if raw.startswith("@") else raw)
    except (OSError, ValueError) as exc:
        fail(f"--parameters must be a JSON object or @file.json: {exc}")
    if not isinstance(value, dict):
        fail("--parameters must be a JSON object")
    return value


FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        callback=one_of(ArtifactFormat),
        help=f"The artifact's format: {listed(ArtifactFormat)} (any case)",
    ),
]
ParamsOpt = Annotated[str | None, typer.Option("--parameters", help="JSON object, or @file.json")]


@versions_app.command("create")
def versions_create(
    model: str,
    version: str,
    fmt: FormatOpt = ArtifactFormat.ONNX,
    notes: Annotated[str | None, typer.Option("--notes", help="Release notes")] = None,
    parameters: ParamsOpt = None,
) -> None:
    """Create a version without an artifact (for format API, or to upload later)."""
    with open_client() as client:
        v = client.create_version(
            model, version, format=fmt, release_notes=notes, parameters=_parameters(parameters)
        )
    out.print(f"created version [bold]{v.version_number}[/] of {model} ({v.status})")


@versions_app.command("upload")
def versions_upload(
    model: str,
    version: str,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    notes: Annotated[str | None, typer.Option("--notes", help="Release notes")] = None,
    fmt: FormatOpt = ArtifactFormat.ONNX,
    parameters: ParamsOpt = None,
    checksum: Annotated[
        bool,
        typer.Option(
            "--checksum/--no-checksum",
            help="Hash the file first and have the server refuse a body that differs",
        ),
    ] = True,
) -> None:
    """Upload PATH as VERSION of MODEL, creating the version if it does not exist yet."""
    from modelreg_client.client import ModelregError, sha256_file

    size = path.stat().st_size
    with open_client() as client:
        try:
            existing = client.get_version(model, version)
        except ModelregError as exc:
            if exc.status != 404 or "version" not in exc.detail:
                raise
            existing = None
        if existing is not None and existing.sha256:
            fail(
                f"version {version} of {model} already has an artifact (sha256 "
                f"{existing.sha256}); versions are immutable, upload a new version"
            )
        digest = None
        with show_progress("hashing ") as start:
            if checksum:
                digest = sha256_file(path, start(size))
        if existing is None:
            client.create_version(
                model, version, format=fmt, release_notes=notes, parameters=_parameters(parameters)
            )
        with show_progress("uploading") as start:
            result = client.upload_artifact(
                model, version, path, sha256=digest, progress=start(size)
            )
    out.print(f"uploaded [bold]{model} {result.version_number}[/]")
    out.print(f"  sha256  {result.sha256}", highlight=False)
    out.print(
        f"  size    {result.size_bytes} bytes ({format_size(result.size_bytes)})", highlight=False
    )
    out.print(f"  path    {result.source_path}", highlight=False)


@versions_app.command("list")
def versions_list(
    model: str,
    status: Annotated[
        str | None, typer.Option(help="Staged, Production, Deprecated, Archived or Failed")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help=FILTER_HELP + "; fields: version, status, format, validation (Passed, Failed, "
            "Pending, None), createdAt, updatedAt, tag.<key>",
        ),
    ] = None,
    order_by: Annotated[
        str | None,
        typer.Option(
            "--order-by",
            help="createdAt, updatedAt or version, then asc or desc [default: createdAt desc]",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a model's versions, newest first, with their tags."""
    with open_client() as client, problems_in_one_line():
        items = list(client.list_versions(model, status=status, filter=filter_, order_by=order_by))
    if as_json:
        emit_json(items)
        return
    print_tagged_table(
        f"{model}: {len(items)} version(s)",
        ("version", "status", "format", "size", "sha256", "created", "scan/func"),
        [
            (
                v.version_number,
                v.status,
                v.format or "",
                format_size(v.size_bytes),
                (v.sha256 or "")[:12],
                format_time(v.created_at),
                validation_cell(v.validation, compact=True),
            )
            for v in items
        ],
        [v.tags for v in items],
    )


@versions_app.command("show")
def versions_show(model: str, version: str, as_json: JsonOpt = False) -> None:
    """Show one version."""
    with open_client() as client:
        v = client.get_version(model, version)
    if as_json:
        emit_json(v)
        return
    print_fields(v, f"{model} {version}")
    out.print(f"validation  {validation_cell(v.validation) or 'none'}", highlight=False)
    if v.signature is not None:
        from registry.io_signature import describe_signature

        out.print("signature", highlight=False)
        for line in describe_signature(v.signature.model_dump()):
            out.print(f"  {line}", highlight=False)


@versions_app.command("update")
def versions_update(
    model: str,
    version: str,
    notes: Annotated[str | None, typer.Option("--notes")] = None,
    parameters: ParamsOpt = None,
) -> None:
    """Change a version's release notes or parameters."""
    changes: dict[str, Any] = {}
    if notes is not None:
        changes["releaseNotes"] = notes
    if parameters is not None:
        changes["parameters"] = _parameters(parameters)
    if not changes:
        fail("nothing to change: pass --notes or --parameters")
    with open_client() as client:
        client.update_version(model, version, **changes)
    out.print(f"updated {model} {version}")


@versions_app.command("download")
def versions_download(
    model: str,
    version: str,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="File or folder to write to; missing folders are created (default: the "
            "artifact's name, in the current folder)",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists")] = False,
) -> None:
    """Download a version's artifact; its SHA-256 is verified against the registry's."""
    with open_client() as client:
        if output is None or output.is_dir() or str(output).endswith(("/", os.sep)):
            info = client.get_version(model, version)
            if not info.source_path:
                fail(f"version {version} of {model} has no artifact")
            name = info.source_path.rsplit("/", 1)[-1]
            output = output / name if output is not None else Path(name)
        if output.exists() and not force:
            fail(f"{output} exists; pass --force to overwrite it")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            with show_progress("downloading") as start:
                advance: list[Callable[[int], None]] = []
                digest, size = client.download_artifact(
                    model,
                    version,
                    output,
                    on_start=lambda total: advance.append(start(total or None)),
                    progress=lambda n: advance[0](n),
                )
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
    out.print(f"wrote {output} ({size} bytes), sha256 {digest} verified", highlight=False)


@versions_app.command("transition")
def versions_transition(
    model: str,
    version: str,
    status: Annotated[
        str,
        typer.Argument(
            callback=one_of(("Staged", "Production", "Deprecated", "Archived", "Failed")),
            help="Production, Deprecated, Archived or Failed (any case)",
        ),
    ],
    reason: Annotated[str | None, typer.Option(help="Why; kept in the audit log")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Override a closed gate (admin key, needs --reason)")
    ] = False,
) -> None:
    """Move a version through its lifecycle (Staged → Production → Deprecated → Archived)."""
    with open_client() as client:
        v = client.transition(model, version, status, reason, force=force)
    out.print(f"{model} {version} is now [bold]{v.status}[/]")


# -- validation -----------------------------------------------------------------------------

#: How a check's verdict is abbreviated in the validation column.
_MARKS = {"Passed": "✓", "Failed": "✗", "Skipped": "skip", "Pending": "…"}


def validation_cell(summary: Any, *, compact: bool = False) -> str:
    """``scan ✓ func ✗`` (``✓ ✗`` when ``compact``, under a ``scan/func`` header, for the
    list to stay narrow): the verdicts of the current artifact's latest finished run, then
    ``+run``/``+queued`` when a run is in progress; ``-`` before any run finished."""
    if summary is None:
        return ""
    marks = [
        _MARKS.get(status or "", "?") if summary.validation_id is not None else "-"
        for status in (summary.security_scan_status, summary.functional_status)
    ]
    cell = " ".join(marks) if compact else f"scan {marks[0]} func {marks[1]}"
    if summary.pending:
        cell += " +run" if summary.pending == "Running" else " +queued"
    return cell
