"""``modelreg validate`` and ``modelreg validations``: read a version's validation runs, queue
one only when asked, follow one, and print what it found.

One id names a run everywhere: the run's id is its result's id (results stored before that
keep their own, which ``validations show`` still accepts)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from api.cli.context import open_client
from api.cli.output import (
    JsonOpt,
    emit_json,
    err,
    fail,
    format_time,
    out,
    print_table,
    short_ids,
)
from modelreg_client.vocabulary import VALIDATION_PENDING, CheckStatus, ValidationRequestStatus

validations_app = typer.Typer(
    help="Read validation runs (queue one with `modelreg validate`).", no_args_is_help=True
)

AgainOpt = Annotated[
    bool,
    typer.Option(
        "--again",
        "--force",
        "--new",
        help="Queue a new run even if the current artifact already has a finished one",
    ),
]


def validate(
    model: str,
    version: str,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result")] = False,
    again: AgainOpt = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 1800,
    as_json: JsonOpt = False,
) -> None:
    """Validate VERSION of MODEL: security scan, functional check and benchmark.

    Shows the run of the current artifact in progress, else its latest finished run; queues
    a run only when there is none, or with --again. With --wait, follows the run with its
    phase and elapsed time, prints the findings, and exits 1 if a check failed.
    """
    import time

    with open_client() as client:
        run, how = _pick_run(client, model, version, again=again)
        if not wait or run.status not in VALIDATION_PENDING:
            if as_json:
                emit_json(run)
            elif run.status in VALIDATION_PENDING:
                out.print(f"validation {run.id} {how} for {model} {version}{_phase_text(run)}")
            else:
                _print_validation(run)
                out.print(
                    f"this is the latest run of the current artifact; to validate it again: "
                    f"modelreg validate {model} {version} --again",
                    highlight=False,
                )
            if not wait:
                return
        else:
            started = time.monotonic()
            deadline = started + timeout
            with err.status(_status_line(run, 0.0)) as spinner:
                while run.status in VALIDATION_PENDING:
                    if time.monotonic() > deadline:
                        fail(f"validation {run.id} is still {run.status} after {timeout:.0f} s")
                    time.sleep(0.5)
                    run = client.get_validation(str(run.id))
                    spinner.update(_status_line(run, time.monotonic() - started))
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


def _pick_run(client: Any, model: str, version: str, *, again: bool) -> tuple[Any, str]:
    """The run to show (and how it was found): the current artifact's run in progress, else
    its newest finished one; a new run when there is neither, or when ``again``."""
    if not again:
        digest = client.get_version(model, version).sha256
        current = [r for r in client.list_validations(model, version) if r.sha256 == digest]
        for run in current:
            if run.status in VALIDATION_PENDING:
                return run, f"is {run.status.lower()}"
        for run in current:
            if run.status == ValidationRequestStatus.DONE:
                return run, "finished"
    run = client.request_validation(model, version)
    return run, "queued" if run.status == ValidationRequestStatus.QUEUED else "is running"


@validations_app.command("list")
def validations_list(model: str, version: str, as_json: JsonOpt = False) -> None:
    """List the validation runs of VERSION of MODEL, newest first (queues nothing)."""
    with open_client() as client:
        runs = client.list_validations(model, version)
    if as_json:
        emit_json(runs)
        return
    print_table(
        f"{model} {version}: {len(runs)} validation run(s)",
        ("id", "status", "scan", "functional", "sha256", "requested"),
        [
            (
                short,
                r.status if r.status != ValidationRequestStatus.RUNNING else _phase_status(r),
                r.result.security_scan_status if r.result else "",
                r.result.functional_status if r.result else "",
                r.sha256[:12],
                format_time(r.requested_at),
            )
            for short, r in zip(short_ids([str(r.id) for r in runs]), runs, strict=True)
        ],
    )


@validations_app.command("show")
def validations_show(
    validation_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="The run's id, or its first 8 or more characters (as listed)"
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Show one validation run: its statuses, benchmark and findings (queues nothing)."""
    with open_client() as client:
        run = client.get_validation(validation_id)
    if as_json:
        emit_json(run)
    else:
        _print_validation(run)


# -- printing ---------------------------------------------------------------------------------


def _phase_status(run: Any) -> str:
    return f"{run.status} ({run.phase})" if run.phase else str(run.status)


def _phase_text(run: Any) -> str:
    return f" (phase: {run.phase})" if run.phase else ""


def _status_line(run: Any, elapsed: float) -> str:
    """The spinner's line while ``validate --wait`` waits: ``phase: benchmark · 12.3 s``."""
    what = f"phase: {run.phase}" if run.phase else str(run.status).lower()
    return f"{what} · {elapsed:.1f} s"


def significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits and no exponent: 0.0123, 1.23, 123."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def format_latency(ms: float) -> str:
    """A latency with three significant digits in µs, ms or s."""
    if ms < 1:
        return f"{significant(ms * 1000)} µs"
    if ms < 1000:
        return f"{significant(ms)} ms"
    return f"{significant(ms / 1000)} s"


def _format_rate(per_second: float) -> str:
    if per_second >= 1000:
        return f"{significant(per_second / 1000)}k/s"
    return f"{significant(per_second)}/s"


def _benchmark_lines(bench: dict[str, Any]) -> list[str]:
    """The benchmark as ``validations show`` prints it."""
    lines = []
    latency = bench.get("latencyMs") or {}
    if latency:
        repeats = len(bench.get("repeats") or []) or 1
        lines.append(
            "latency        "
            + " · ".join(
                f"{p} {format_latency(float(latency.get(p, 0)))}" for p in ("p50", "p95", "p99")
            )
            + f"  ({latency.get('iterations', 0)} iterations, {repeats} repeat(s))"
        )
    throughput = {k: v for k, v in (bench.get("throughput") or {}).items() if v}
    if throughput:
        lines.append(
            "throughput     "
            + ", ".join(f"batch {k}: {_format_rate(float(v))}" for k, v in throughput.items())
        )
    elif bench.get("throughputSkipped"):
        lines.append(f"throughput     not measured: {bench['throughputSkipped']}")
    load, rss = bench.get("modelLoadSeconds"), bench.get("peakRssBytes")
    if load is not None or rss:
        parts = []
        if load is not None:
            parts.append(f"load {format_latency(float(load) * 1000)}")
        if rss:
            parts.append(f"peak RSS {significant(rss / 2**20)} MiB")
        lines.append("resources      " + " · ".join(parts))
    if bench.get("noisy"):
        lines.append("noisy          " + "; ".join(bench.get("noisyReasons") or ["yes"]))
    regression = bench.get("regression") or {}
    if regression.get("p95Ratio") is not None:
        line = f"regression     p95 {regression['p95Ratio']:.2f}x the Production version's"
        if regression.get("noisy"):
            line += f" ({regression.get('note') or 'noisy: not reliable'})"
        lines.append(line)
    if bench.get("status") not in (None, CheckStatus.PASSED) and bench.get("error"):
        lines.append(f"benchmark      {bench['status']}: {bench['error']}")
    return lines


def _print_validation(run: Any) -> None:
    result = run.result
    if result is None:
        out.print(f"validation {run.id}: {_phase_status(run)}", highlight=False)
        return
    out.print(
        f"validation {run.id} of sha256 {run.sha256} ({format_time(result.validation_timestamp)})",
        highlight=False,
    )
    out.print(f"  security scan  [bold]{result.security_scan_status}[/]")
    out.print(f"  functional     [bold]{result.functional_status}[/]")
    results = result.results or {}
    functional = results.get("functional") or {}
    if functional.get("reason"):
        out.print(f"  reason         {functional['reason']}", highlight=False)
    for line in _benchmark_lines(result.performance_benchmark or {}):
        out.print(f"  {line}", highlight=False)
    findings = list(results.get("findings", []))
    findings += (results.get("security") or {}).get("findings", [])
    findings += functional.get("findings", [])
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
