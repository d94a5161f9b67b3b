"""A ``ScanReport`` for people: a rich table of findings and a one-line summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from validators.report import ScanReport, Severity

if TYPE_CHECKING:
    from rich.table import Table

_STYLES = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "dim",
}

#: ``modelreg scan`` exit codes by verdict.
EXIT_CODES = {"clean": 0, "malicious": 1, "too-large": 2, "error": 3}


def findings_table(report: ScanReport) -> Table:
    """Findings, most severe first."""
    from rich.table import Table  # rich only when there is a table: ``modelreg scan`` starts fast

    table = Table(title=f"{len(report.findings)} finding(s)", title_justify="left")
    for column in ("severity", "rule", "location", "message"):
        table.add_column(column, overflow="fold")
    for f in sorted(report.findings, key=lambda f: (-f.severity, f.location)):
        table.add_row(f"[{_STYLES[f.severity]}]{f.severity}[/]", f.rule_id, f.location, f.message)
    return table


def summary_line(report: ScanReport, *, markup: bool = True) -> str:
    """One line: status, verdict, what was scanned; in rich markup unless ``markup`` is off."""
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in Severity}
    by_severity = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), reverse=True) if n)
    style = "bold green" if report.verdict == "clean" else "bold red"
    verdict = f"{report.status}: {report.verdict}"
    return (
        f"{f'[{style}]{verdict}[/]' if markup else verdict} — {len(report.files_scanned)} file(s), "
        f"{report.bytes_scanned} bytes in {report.duration_seconds:.2f}s"
        f"{'; ' + by_severity if by_severity else ''}"
    )
