"""What one validation run found, carried as one typed value from the validation worker
(``validators/worker.py``) to the database (``ValidationService.complete``).

The two statuses are the gate's (``securityScanStatus``, ``functionalStatus``); the benchmark
is stored as ``performanceBenchmark``; everything else becomes the result row's ``results``
JSON through :meth:`ValidationOutcome.results_json`, with the seed's camelCase keys, in the
order the API has always shown them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from registry.vocabulary import CheckStatus

#: The keys of ``results`` a run the validators finished stores, in order.
_FINISHED_KEYS = (
    "sha256",
    "security",
    "functional",
    "timings",
    "attempt",
    "worker",
    "process",
    "durationSeconds",
)
#: The keys of ``results`` a run that failed around the validators stores, in order (no
#: such run has timings or a worker; they would come last).
_FAILED_KEYS = (
    "sha256",
    "error",
    "findings",
    "attempt",
    "functional",
    "security",
    "durationSeconds",
    "timings",
    "worker",
    "process",
)


@dataclass(frozen=True)
class ValidationOutcome:
    """One run's statuses, benchmark and reports. A field left None is not stored."""

    security: CheckStatus
    functional: CheckStatus
    sha256: str | None = None
    """The digest of the artifact that was validated."""
    benchmark: dict[str, Any] | None = None
    security_report: dict[str, Any] | None = None
    functional_report: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    error: str | None = None
    """Why the run failed around the validators (artifact missing, a limit, a crash)."""
    findings: tuple[dict[str, Any], ...] | None = None
    """The findings of such a failure (``severity``, ``ruleId``, ``message``, ``location``)."""
    attempt: int | None = None
    worker: str | None = None
    process: dict[str, Any] | None = None
    """The validator child that ran: its ``pid``, ``startedAt`` and ``endedAt`` (UTC)."""
    duration_seconds: float | None = None

    @classmethod
    def failed(
        cls,
        reason: str,
        *,
        sha256: str,
        findings: tuple[dict[str, Any], ...] | None = None,
        attempt: int | None = None,
    ) -> ValidationOutcome:
        """A run that could not validate the artifact: both checks fail, with the reason."""
        return cls(
            security=CheckStatus.FAILED,
            functional=CheckStatus.FAILED,
            sha256=sha256,
            error=reason,
            findings=findings,
            attempt=attempt,
        )

    @property
    def passed(self) -> bool:
        """Both checks passed: the gate's condition on a result."""
        return self.security == CheckStatus.PASSED and self.functional == CheckStatus.PASSED

    @property
    def signature(self) -> Any:
        """The inputs and outputs the functional check found (not yet normalized), or None."""
        report = self.functional_report
        return report.get("signature") if isinstance(report, dict) else None

    def timed(self, seconds: float) -> ValidationOutcome:
        """This outcome, with how long the run took."""
        return replace(self, duration_seconds=seconds)

    def results_json(self) -> dict[str, Any]:
        """The ``results`` JSON of the result row: camelCase keys, the fields left None out."""
        values: dict[str, Any] = {
            "sha256": self.sha256,
            "security": self.security_report,
            "functional": self.functional_report,
            "timings": self.timings,
            "error": self.error,
            "findings": None if self.findings is None else list(self.findings),
            "attempt": self.attempt,
            "worker": self.worker,
            "process": self.process,
            "durationSeconds": self.duration_seconds,
        }
        keys = _FINISHED_KEYS if self.error is None else _FAILED_KEYS
        return {key: values[key] for key in keys if values[key] is not None}
