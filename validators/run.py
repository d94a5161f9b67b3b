"""One validation: the three validators over one artifact, in a child process of the worker.

The worker runs this in a process of its own so that a validator that crashes (a native
library's segfault) or hangs takes down only this process: the worker records a Failed status
with the reason and carries on. The security scan comes first and reads the artifact as data;
only an artifact that passed it is loaded by onnxruntime for the functional check and the
benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def validate_artifact(
    path: Path,
    *,
    workdir: Path,
    fmt: str | None,
    parameters: dict[str, Any] | None,
    baseline_p95_ms: float | None = None,
    on_security: Callable[[dict[str, Any]], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    baseline_noisy: bool = False,
) -> dict[str, Any]:
    """Run the three validators; the statuses, the benchmark and every finding.

    ``on_security`` gets the security report as soon as the scan is over, before the artifact
    is loaded: the worker keeps it when the functional check breaks a resource limit.
    ``on_phase`` is told each phase as it starts (scan, load, run, benchmark): once per
    phase, never inside a loop."""
    from registry.bundles import UnsafeBundle
    from registry.onnx_artifact import unpack_artifact
    from registry.vocabulary import CheckStatus
    from validators.benchmark import benchmark_model
    from validators.functional import FunctionalReport, check_model
    from validators.functional.other_formats import OTHER_FORMATS, check_other_format
    from validators.security import scan_artifact
    from validators.security.archives import finding_of, limits_of
    from validators.security.policy import DEFAULT_POLICY

    def phase(name: str) -> None:
        if on_phase is not None:
            on_phase(name)

    timings: dict[str, float] = {}
    phase("scan")
    started = time.perf_counter()
    security = scan_artifact(path, DEFAULT_POLICY, declared=fmt)
    timings["securitySeconds"] = round(time.perf_counter() - started, 4)
    out: dict[str, Any] = {"security": security.to_dict(), "timings": timings}
    if on_security is not None:
        on_security(out["security"])
    if security.status != CheckStatus.PASSED:
        out["securityStatus"] = security.status
        out["functionalStatus"] = CheckStatus.SKIPPED
        out["functional"] = {
            "status": CheckStatus.SKIPPED,
            "reason": "the security scan did not pass: the artifact is not loaded",
            "signature": None,  # no session was opened
        }
        out["benchmark"] = None
        return out
    out["securityStatus"] = CheckStatus.PASSED
    phase("load")
    declared = str(fmt).upper() if fmt is not None else None
    other = next((f for f in OTHER_FORMATS if f.upper() == declared), None)
    if other is not None:
        # Not ONNX: loaded as what it says it is, never unpacked as a bundle (a PyTorch file
        # is a zip), and there is no benchmark (no model server runs it).
        started = time.perf_counter()
        report = check_other_format(
            path, fmt=other, parameters=parameters, on_run=lambda: phase("run")
        )
        timings["functionalSeconds"] = round(time.perf_counter() - started, 4)
        out["functional"] = report.to_dict()
        out["functionalStatus"] = report.status
        out["benchmark"] = None
        return out
    # A bundle is unpacked as the model server unpacks it (registry.onnx_artifact), with the
    # limits it was scanned with: what passes here is what serves, and what the server would
    # refuse to unpack (a gzip that holds no tar, say) fails here with the same reasons.
    started = time.perf_counter()
    try:
        model_path = unpack_artifact(
            path, into=workdir / "bundle", limits=limits_of(DEFAULT_POLICY)
        )
    except UnsafeBundle as exc:
        functional = FunctionalReport(
            status=CheckStatus.FAILED,
            findings=tuple(finding_of(p) for p in exc.problems),
            reason="the bundle cannot be unpacked, so it cannot be loaded or served",
        )
        out["functional"] = functional.to_dict()
        out["functionalStatus"] = functional.status
        out["benchmark"] = None
        timings["functionalSeconds"] = round(time.perf_counter() - started, 4)
        return out
    functional = check_model(
        model_path, parameters=parameters, fmt=fmt, on_run=lambda: phase("run")
    )
    timings["functionalSeconds"] = round(time.perf_counter() - started, 4)
    out["functional"] = functional.to_dict()
    out["functionalStatus"] = functional.status
    out["benchmark"] = None
    if functional.status == CheckStatus.PASSED:
        phase("benchmark")
        started = time.perf_counter()
        out["benchmark"] = benchmark_model(
            model_path,
            parameters=parameters,
            baseline_p95_ms=baseline_p95_ms,
            baseline_noisy=baseline_noisy,
        )
        timings["benchmarkSeconds"] = round(time.perf_counter() - started, 4)
    return out
