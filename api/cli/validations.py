"""``modelreg validate``: queue or follow a validation run of a version, and print its
findings."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from api.cli.context import open_client
from api.cli.output import JsonOpt, emit_json, err, fail, out, print_table
from registry.vocabulary import VALIDATION_PENDING, CheckStatus


def validate(
    model: str,
    version: str,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result")] = False,
    new: Annotated[
        bool, typer.Option("--new", help="Queue a new run even if one is already pending")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 1800,
    as_json: JsonOpt = False,
) -> None:
    """Validate VERSION of MODEL: security scan, functional check and benchmark.

    Follows the run already queued for the version (an upload queues one), or queues a new
    one. With --wait, shows a spinner until the run is done, prints the findings, and exits 1
    if a check failed.
    """
    import time

    with open_client() as client:
        pending = (
            []
            if new
            else [
                r for r in client.list_validations(model, version) if r.status in VALIDATION_PENDING
            ]
        )
        run = pending[0] if pending else client.request_validation(model, version)
        if not wait:
            if as_json:
                emit_json(run)
            else:
                verb = "is pending" if pending else "queued"
                out.print(f"validation {run.id} {verb} for {model} {version}")
            return
        deadline = time.monotonic() + timeout
        with err.status(f"validating {model} {version} ...") as spinner:
            while run.status in VALIDATION_PENDING:
                if time.monotonic() > deadline:
                    fail(f"validation {run.id} is still {run.status} after {timeout:.0f} s")
                time.sleep(1)
                run = client.get_validation(str(run.id))
                spinner.update(f"validating {model} {version}: {run.status} ...")
    if as_json:
        emit_json(run)
    else:
        _print_validation(run)
    result = run.result
    if result is None or CheckStatus.FAILED in (
        result.security_scan_status,
        result.functional_status,
    ):
        raise typer.Exit(1)


def _print_validation(run: Any) -> None:
    result = run.result
    if result is None:
        out.print(f"validation {run.id}: {run.status}")
        return
    out.print(f"validation {run.id} of sha256 {run.sha256}", highlight=False)
    out.print(f"  security scan  [bold]{result.security_scan_status}[/]")
    out.print(f"  functional     [bold]{result.functional_status}[/]")
    latency = (result.performance_benchmark or {}).get("latencyMs") or {}
    if latency:
        out.print(
            f"  latency        p50 {latency.get('p50', 0):.2f} ms, p95 {latency.get('p95', 0):.2f}"
            f" ms, p99 {latency.get('p99', 0):.2f} ms",
            highlight=False,
        )
    results = result.results or {}
    findings = list(results.get("findings", []))
    findings += (results.get("security") or {}).get("findings", [])
    findings += (results.get("functional") or {}).get("findings", [])
    if findings:
        print_table(
            f"{len(findings)} finding(s)",
            ("severity", "rule", "location", "message"),
            [
                (
                    f.get("severity", ""),
                    f.get("ruleId", ""),
                    f.get("location", ""),
                    f.get("message", ""),
                )
                for f in findings
            ],
        )
    elif results.get("error"):
        out.print(f"  error          {results['error']}", highlight=False)
