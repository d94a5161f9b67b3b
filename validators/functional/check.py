"""The functional check itself: parse, validate, open a session, run and judge, then freeze the
findings into a report. Never raises for a bad artifact."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import onnx_artifact
from registry.vocabulary import ArtifactFormat, CheckStatus
from validators.functional.inference import judge_outputs, run_session, run_vectors
from validators.functional.inputs import describe_array, make_inputs
from validators.functional.policy import FunctionalPolicy
from validators.functional.report import CheckProblem, FunctionalReport, OutputComparison
from validators.functional.session import (
    open_session,
    resolve_in_bundle,
    resolve_model_file,
    tool_versions,
)
from validators.report import Finding, Severity


def _load_proto(model_file: Path, location: str) -> None:
    """Parse the model (without external data) to tell "not ONNX" from "broken ONNX"."""
    import onnx

    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:
        raise CheckProblem(
            "functional.invalid-onnx",
            f"not a readable ONNX model: {type(exc).__name__}: {exc}",
            location=location,
            not_onnx=True,
        ) from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise CheckProblem(
            "functional.invalid-onnx",
            "not an ONNX model: the protobuf has no ir_version or no graph",
            location=location,
            not_onnx=True,
        )


def _validate(model_file: Path, location: str) -> None:
    """The ONNX checker with ``full_check`` (which includes strict shape inference), on the
    path so that external data next to the model is found."""
    import onnx

    try:
        onnx.checker.check_model(str(model_file), full_check=True)
    except onnx.shape_inference.InferenceError as exc:
        raise CheckProblem(
            "functional.shape-inference", f"shape inference failed: {exc}", location=location
        ) from exc
    except onnx.checker.ValidationError as exc:
        raise CheckProblem(
            "functional.checker", f"the ONNX checker rejects the model: {exc}", location=location
        ) from exc
    except Exception as exc:
        raise CheckProblem(
            "functional.checker",
            f"the ONNX checker failed: {type(exc).__name__}: {exc}",
            location=location,
        ) from exc


@dataclass
class _Draft:
    """What a check has found so far; frozen into a report at the end."""

    started: float
    findings: list[Finding] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    vectors: tuple[OutputComparison, ...] | None = None
    reason: str | None = None
    model_file: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    signature: dict[str, Any] | None = None

    def report(self, status: CheckStatus | None = None) -> FunctionalReport:
        if status is None:
            status = CheckStatus.FAILED if self.findings else CheckStatus.PASSED
        return FunctionalReport(
            status=status,
            findings=tuple(self.findings),
            inputs=self.inputs,
            outputs=self.outputs,
            test_vector_results=self.vectors,
            reason=self.reason,
            model_file=self.model_file,
            duration_seconds=round(time.perf_counter() - self.started, 6),
            tool_versions=self.versions,
            signature=self.signature,
        )


def _skipped(draft: _Draft, reason: str, finding: Finding | None = None) -> FunctionalReport:
    """A Skipped report; ``finding`` names the problem when the artifact is not ONNX."""
    draft.reason = reason
    if finding is not None:
        draft.findings.append(finding)
    return draft.report(CheckStatus.SKIPPED)


def check_model(
    path: Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    fmt: str | None = ArtifactFormat.ONNX,
    policy: FunctionalPolicy | None = None,
    on_run: Callable[[], None] | None = None,
) -> FunctionalReport:
    """Check that the ONNX model at ``path`` (a file, or a bundle directory holding it) is
    valid and runs on CPU with generated inputs and, when given, its test vectors.

    ``fmt`` is the version's declared format: ``"API"`` and formats other than ONNX are
    skipped; ``None`` means "unknown", and the artifact is skipped if it does not parse as
    ONNX. ``on_run`` is called once the session is open, before the model runs (the worker
    shows the phase). Never raises for a bad artifact."""
    draft = _Draft(started=time.perf_counter())
    policy = policy or FunctionalPolicy()
    params: Mapping[str, Any] = parameters or {}
    declared = str(getattr(fmt, "value", fmt)).upper() if fmt is not None else None
    if declared == ArtifactFormat.API:
        return _skipped(draft, "format API has no artifact")
    if declared is not None and declared != ArtifactFormat.ONNX:
        return _skipped(
            draft,
            f"format {fmt} is not ONNX and the validators cannot load it: convert it to ONNX "
            "(or save it as SafeTensors, PyTorch weights, Joblib or Pickle, which "
            "validators.functional.other_formats loads) to have it checked",
        )
    try:
        draft.versions = tool_versions()
        if not isinstance(params, Mapping):
            raise CheckProblem(
                "functional.parameters", "parameters must be an object", severity=Severity.MEDIUM
            )
        model_file = resolve_model_file(path, params)
        location = (
            str(model_file.resolve().relative_to(path.resolve()))
            if path.is_dir()
            else model_file.name
        )
        draft.model_file = location
        _load_proto(model_file, location)
        _validate(model_file, location)
        try:
            session = open_session(model_file, intra_op_threads=policy.intra_op_threads)
        except Exception as exc:
            raise CheckProblem(
                "functional.session",
                f"onnxruntime cannot load the model: {type(exc).__name__}: {exc}",
                location=location,
            ) from exc
        draft.signature = onnx_artifact.signature_of(session)
        feeds = make_inputs(session, params, policy=policy)
        if on_run is not None:
            on_run()
        draft.inputs = {name: describe_array(array) for name, array in feeds.items()}
        results = run_session(session, feeds, timeout=policy.run_timeout_seconds, location=location)
        draft.outputs, findings = judge_outputs(session, results, location=location)
        draft.findings.extend(findings)
        if params.get(policy.test_vectors_key) is not None:
            vectors_file = _vectors_file(path, params, policy=policy)
            draft.vectors, findings = run_vectors(session, vectors_file, policy, location=location)
            draft.findings.extend(findings)
    except CheckProblem as problem:
        if problem.not_onnx and declared is None:
            reason = f"not an ONNX artifact: {problem.message}"
            return _skipped(
                draft, reason, Finding(Severity.LOW, problem.rule_id, reason, problem.location)
            )
        draft.findings.append(problem.finding())
    except Exception as exc:  # never raise for an artifact: the error is the finding
        draft.findings.append(
            Finding(
                Severity.HIGH,
                "functional.error",
                " ".join(f"{type(exc).__name__}: {exc}".split()),
                draft.model_file or str(path),
            )
        )
    return draft.report()


def _vectors_file(path: Path, params: Mapping[str, Any], *, policy: FunctionalPolicy) -> Path:
    """The test vectors file the parameters name, inside the bundle directory ``path``."""
    if not path.is_dir():
        raise CheckProblem(
            "functional.test-vectors",
            f"parameters.{policy.test_vectors_key} needs a bundle: the artifact is a "
            "single model file, so there is no file to read the test vectors from",
            severity=Severity.MEDIUM,
        )
    vectors_file = resolve_in_bundle(
        path, params[policy.test_vectors_key], what=policy.test_vectors_key
    )
    if not vectors_file.is_file():
        raise CheckProblem(
            "functional.test-vectors",
            f"test vectors file {params[policy.test_vectors_key]!r} is not in the bundle",
        )
    return vectors_file
