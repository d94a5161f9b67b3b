"""``modelreg scan``: its parser and its run, on the standard library, rich and the scanner.

The typer app's ``scan`` and ``api.cli.main``'s fast path both end here (``api.cli`` says
why), so there is one parser, one help text and one set of exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

DESCRIPTION = """\
Scan a model artifact for malicious content, locally (no server needed).

Pickles are read as data and never loaded. Exit codes: 0 clean; 1 malicious (a finding at
or above the threshold); 2 too large (a resource limit stopped the scan); 3 scan error.
A malicious finding outranks a scan error or a limit: the exit code is then 1."""

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
#: Exit status of a command line the parser refuses: 3, as for a scan error, since 2 means
#: "too large" here (argparse's own default).
USAGE_ERROR = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"error: {message}\n")


def _severity(raw: str) -> str:
    if raw.upper() not in SEVERITIES:
        raise argparse.ArgumentTypeError(f"must be LOW, MEDIUM, HIGH or CRITICAL, not {raw!r}")
    return raw.upper()


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="modelreg scan",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", type=Path, help="A model file or folder (scanned recursively)")
    p.add_argument(
        "--format",
        dest="fmt",
        type=str.lower,
        choices=("table", "json", "sarif"),
        default="table",
        help="Output: table, json or sarif (SARIF 2.1.0) [default: table]",
    )
    p.add_argument(
        "--threshold",
        type=_severity,
        default="HIGH",
        metavar="{LOW,MEDIUM,HIGH,CRITICAL}",
        help="Lowest severity that fails: LOW, MEDIUM, HIGH or CRITICAL [default: HIGH]",
    )
    p.add_argument(
        "--allow-com-microsoft",
        action="store_true",
        help="Allow ONNX operators of com.microsoft",
    )
    return p


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` (the arguments after ``scan``), scan, print; the exit status."""
    args = parser().parse_args(list(argv))
    try:
        return _scan(args.path, args.fmt, args.threshold, args.allow_com_microsoft)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _scan(path: Path, fmt: str, threshold: str, allow_com_microsoft: bool) -> int:
    import dataclasses

    from validators.report import Severity
    from validators.security import scan_artifact
    from validators.security.policy import DEFAULT_POLICY
    from validators.security.render import EXIT_CODES

    policy = dataclasses.replace(
        DEFAULT_POLICY,
        threshold=Severity[threshold],
        allow_com_microsoft=allow_com_microsoft or DEFAULT_POLICY.allow_com_microsoft,
    )
    report = scan_artifact(path, policy)
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif fmt == "sarif":
        from validators.security.sarif import to_sarif

        print(json.dumps(to_sarif(report), indent=2))
    elif not report.findings and not sys.stdout.isatty():
        from validators.security.render import summary_line

        # What rich would print here (no colour off a terminal), without importing it.
        print(summary_line(report, markup=False))
    else:
        from rich.console import Console

        from validators.security.render import findings_table, summary_line

        out = Console(soft_wrap=True)
        if report.findings:
            out.print(findings_table(report))
        out.print(summary_line(report))
    return EXIT_CODES[report.verdict]
