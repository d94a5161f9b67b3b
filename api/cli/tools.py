"""Commands that work on local files, the artifact store and the database directly, with no
API: ``scan`` (a model file), ``gc`` (orphaned artifact objects) and ``prometheus-targets``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from api.cli.context import configure_logging, load_settings, state
from api.cli.output import JsonOpt, emit_json, err, fail, format_size, out, print_table

#: ``scan`` takes its arguments as they are and hands them to its own parser (``api.cli``
#: says why); ``--help`` is that parser's.
SCAN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def scan(ctx: typer.Context) -> None:
    """Scan a model artifact for malicious content, locally (no server needed).

    Pickles are read as data and never loaded. Exit codes: 0 clean; 1 malicious (a finding at
    or above the threshold); 2 too large (a resource limit stopped the scan); 3 scan error.
    Options: modelreg scan --help.
    """
    from api.cli.scan import run

    raise typer.Exit(run(ctx.args))


# -- model server ---------------------------------------------------------------------------
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(raw: str) -> float:
    """Seconds in ``90s``, ``30m``, ``24h``, ``7d`` or a bare number of seconds."""
    text = raw.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise typer.BadParameter(f"{raw!r} is not a duration like 90s, 30m, 24h or 7d") from None
    if seconds < 0 or seconds != seconds:
        raise typer.BadParameter(f"{raw!r}: a duration cannot be negative")
    return seconds


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be removed; remove nothing.")
    ] = False,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Only remove orphans last modified longer ago than this (90s, 30m, 24h, 7d).",
        ),
    ] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """Remove artifact objects that no version and no live upload references.

    Runs against the configured store and database directly, like ``modelreg worker``.
    """
    from datetime import timedelta

    from registry.services import build_registry

    age = timedelta(seconds=_duration(older_than))
    settings = load_settings()
    configure_logging(settings.log_level)
    registry = build_registry(settings)
    try:
        report = registry.gc.collect(older_than=age, dry_run=dry_run)
    finally:
        registry.close()
    if as_json:
        emit_json(report.as_dict())
        return
    verb = "Would remove" if dry_run else "Removed"
    print_table(
        f"Garbage collection{' (dry run)' if dry_run else ''}",
        ("", ""),
        [
            ("scanned", str(report.scanned)),
            ("referenced (kept)", str(report.referenced)),
            (f"younger than {older_than} (kept)", str(report.too_young)),
            (verb.lower(), str(report.removed)),
            (
                f"{verb.lower()} bytes",
                f"{report.removed_bytes} ({format_size(report.removed_bytes)})",
            ),
            (f"{verb.lower()} unfinished uploads", str(report.partial_removed)),
            ("failed", str(report.failed)),
        ],
    )
    for key in report.keys:
        out.print(f"  {key}", highlight=False)
    if report.removed > len(report.keys):
        out.print(f"  … and {report.removed - len(report.keys)} more", highlight=False)
    if report.failed:
        fail(f"{report.failed} objects could not be removed; see the log")


def prometheus_targets(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the file here (atomically) instead of stdout"),
    ] = None,
    api_target: Annotated[
        bool,
        typer.Option(
            "--api/--no-api", help="Also list this API's and its controller's own /metrics"
        ),
    ] = False,
) -> None:
    """Prometheus ``file_sd`` targets for the local model servers (and, with --api, the API
    and the controller ``modelreg serve`` runs, which serves its metrics on a port of its own).

    The controller keeps ``<server state dir>/prometheus-targets.json`` up to date as it
    starts and stops servers; point a ``file_sd_configs`` entry at that file, or use this
    command to write one elsewhere.
    """
    from deployers.local import LocalDeployer

    settings = load_settings()
    assert settings.server_state_dir is not None
    groups = LocalDeployer(state_dir=settings.server_state_dir).prometheus_targets()
    if api_target:
        from api.cli.serving_record import serving_url

        url = state.url or serving_url(settings)
        if url is None:
            url = settings.client_url
            err.print(f"no `modelreg serve` runs on {settings.data_dir}: listing {url}")
        host = url.split("://", 1)[-1].split("/", 1)[0]
        groups.append({"targets": [host], "labels": {"job": "modelreg-api"}})
        if settings.controller_enabled and settings.controller_metrics_port:
            controller = f"{host.rsplit(':', 1)[0]}:{settings.controller_metrics_port}"
            groups.append({"targets": [controller], "labels": {"job": "modelreg-controller"}})
    text = json.dumps(groups, indent=1)
    if output is None:
        out.print_json(text)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, output)
    out.print(f"wrote {len(groups)} target group(s) to {output}")
