"""What the functional check returns: a frozen report, and the problem that becomes a finding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.vocabulary import CheckStatus
from validators.report import Finding, Severity


@dataclass(frozen=True)
class OutputComparison:
    """One output compared with its test vector."""

    output: str
    passed: bool
    max_abs_error: float | None
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "passed": self.passed,
            "maxAbsError": self.max_abs_error,
            "shape": list(self.shape),
            "expectedShape": list(self.expected_shape),
        }


@dataclass(frozen=True)
class FunctionalReport:
    status: CheckStatus
    findings: tuple[Finding, ...]
    #: input name -> {"dtype": str, "shape": [int, ...]} as generated and fed.
    inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: output name -> {"dtype": str, "shape": [int, ...] | None, "finite": bool}.
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: None when no test vectors were given.
    test_vector_results: tuple[OutputComparison, ...] | None = None
    #: Why the check was skipped (None unless the status is Skipped).
    reason: str | None = None
    model_file: str | None = None
    duration_seconds: float = 0.0
    tool_versions: Mapping[str, str] = field(default_factory=dict)
    #: {"inputs": [{"name", "type", "shape"}, ...], "outputs": [...]} as the session declares
    #: them (``registry.onnx_artifact.signature_of``); None when no session was opened.
    signature: Mapping[str, Any] | None = None
    #: What a format other than ONNX loaded as (``validators.functional.other_formats``):
    #: its tensors, or the loaded object's type and its prediction on a sample.
    loaded: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        vectors = self.test_vector_results
        signature = self.signature
        extra = {} if self.loaded is None else {"loaded": dict(self.loaded)}
        return {
            "status": self.status,
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
            "modelFile": self.model_file,
            "inputs": {k: dict(v) for k, v in self.inputs.items()},
            "outputs": {k: dict(v) for k, v in self.outputs.items()},
            "testVectorResults": None if vectors is None else [c.to_dict() for c in vectors],
            "durationSeconds": self.duration_seconds,
            "toolVersions": dict(self.tool_versions),
            "signature": None
            if signature is None
            else {
                "inputs": [dict(arg) for arg in signature["inputs"]],
                "outputs": [dict(arg) for arg in signature["outputs"]],
            },
            **extra,
        }


class CheckProblem(Exception):
    """A problem with the artifact or its parameters, to be reported as a finding.

    ``not_onnx`` marks problems that mean "this is not an ONNX artifact" (skipped when the
    declared format does not say ONNX)."""

    def __init__(
        self,
        rule_id: str,
        message: str,
        *,
        location: str = "",
        severity: Severity = Severity.HIGH,
        not_onnx: bool = False,
    ) -> None:
        message = " ".join(message.split())  # exception texts often span lines
        super().__init__(message)
        self.rule_id = rule_id
        self.message = message
        self.location = location
        self.severity = severity
        self.not_onnx = not_onnx

    def finding(self) -> Finding:
        return Finding(self.severity, self.rule_id, self.message, self.location)
