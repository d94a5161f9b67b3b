"""The functional check: does an ONNX artifact load, pass the ONNX checker and run on CPU?

``check_model(path, parameters=..., policy=...)`` validates the model, opens an onnxruntime
session (CPU only), feeds it deterministic random inputs generated from the declared input
types and shapes, and requires every output to have the declared element type and, for
floating-point outputs, only finite values. Optionally it also runs known test vectors.

Dynamic dimensions (a ``dim_param`` or no value) get their size from, in this order:

1. ``parameters["inputShapes"][input_name]``: the whole shape of that input, a list of ints;
2. ``parameters["dimensions"][dim_param]``: the size of a named dimension, e.g.
   ``{"batch": 4, "seq": 128}``;
3. the policy: ``batch_size`` for the first dimension, ``default_dim`` for the others.

An input whose rank is not declared at all is treated as a scalar unless ``inputShapes``
names its shape.

Test vectors: ``parameters["testVectors"]`` names an ``.npz`` file, relative to the bundle
directory ``path`` (a single model file has no bundle, and so no test vectors); it may not
leave that directory, also not through a symbolic link. It holds one array ``input:<name>``
for every model input and one array ``output:<name>`` for each output to compare (outputs it
does not name are not compared),
e.g. ``numpy.savez("vectors.npz", **{"input:x": x, "output:y": y})``. The model runs on the
``input:`` arrays and each named output must match with ``numpy.allclose(actual, expected,
rtol=policy.rtol, atol=policy.atol)``; the report gives the largest absolute error per output.
The file is read with ``allow_pickle=False``.

``make_inputs`` and ``open_session`` are shared with the benchmark (``validators.benchmark``).

This module never raises for a bad artifact: every problem becomes a :class:`Finding`, and any
unexpected exception becomes the finding ``functional.error``. onnx, onnxruntime and numpy are
imported only when a check runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from registry import onnx_artifact
from registry.onnx_artifact import ArtifactProblem
from validators.report import CheckStatus, Finding, Severity

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "CheckProblem",
    "FunctionalPolicy",
    "FunctionalReport",
    "OutputComparison",
    "check_model",
    "make_inputs",
    "open_session",
    "resolve_model_file",
    "tool_versions",
]

#: onnxruntime's tensor type names and the numpy dtypes they map to (``object`` for strings).
#: Element types numpy cannot hold (bfloat16, float8, int4, ...) are not supported.
_ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}

_STRING_SAMPLES = ("alpha", "beta", "gamma", "delta")


@dataclass(frozen=True)
class FunctionalPolicy:
    """How inputs are generated and outputs judged."""

    #: Size of a dynamic first dimension (the batch) when the parameters do not name it.
    batch_size: int = 1
    #: Size of any other dynamic dimension when the parameters do not name it.
    default_dim: int = 1
    #: Generated floats are uniform in [low, high); integers are uniform in [low, high).
    float_range: tuple[float, float] = (0.0, 1.0)
    int_range: tuple[int, int] = (0, 4)
    seed: int = 0
    #: Refuse to generate more elements than this over all inputs (guards against OOM when a
    #: parameter asks for a huge shape).
    max_input_elements: int = 50_000_000
    rtol: float = 1e-3
    atol: float = 1e-5
    #: Cancel a run (``RunOptions.terminate``) after this many seconds; None: no limit.
    run_timeout_seconds: float | None = 120.0
    intra_op_threads: int | None = None
    test_vectors_key: str = "testVectors"


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

    def to_dict(self) -> dict[str, Any]:
        vectors = self.test_vector_results
        signature = self.signature
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


class _NodeArg(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> list[int | str | None] | None: ...


class Session(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the validators use."""

    def get_inputs(self) -> list[_NodeArg]: ...
    def get_outputs(self) -> list[_NodeArg]: ...
    def get_providers(self) -> list[str]: ...
    def get_session_options(self) -> Any: ...
    def run(
        self, output_names: list[str] | None, input_feed: Mapping[str, Any], run_options: Any = ...
    ) -> list[Any]: ...


# --- locating the model -------------------------------------------------------------------


def _problem(exc: ArtifactProblem) -> CheckProblem:
    return CheckProblem(
        f"functional.{exc.rule}",
        exc.message,
        location=exc.location,
        severity=Severity[exc.severity],
        not_onnx=exc.not_onnx,
    )


def _inside(base: Path, relative: object, *, what: str) -> Path:
    """``base / relative``, refusing absolute paths, ``..`` and anything resolving outside."""
    try:
        return onnx_artifact.path_inside(base, relative, what=what)
    except ArtifactProblem as exc:
        raise _problem(exc) from None


def resolve_model_file(path: Path, parameters: Mapping[str, Any] | None = None) -> Path:
    """The ONNX file to check: ``path`` itself, or the single ``.onnx`` file in the bundle
    directory ``path`` (``parameters["modelFile"]`` chooses when there are several). The model
    server resolves it with the same code (``registry.onnx_artifact``)."""
    params = parameters or {}
    try:
        return onnx_artifact.resolve_model_file(path, model_file=params.get("modelFile"))
    except ArtifactProblem as exc:
        raise _problem(exc) from None


# --- sessions and inputs ------------------------------------------------------------------


def open_session(
    model_file: Path, *, intra_op_threads: int | None = None, inter_op_threads: int | None = None
) -> Session:
    """An onnxruntime session on the CPU execution provider only, opened as the model server
    opens it (``registry.onnx_artifact.open_session``). External data is read relative to the
    model's folder."""
    session = onnx_artifact.open_session(
        model_file, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
    )
    return cast(Session, session)


def _int_map(value: object, *, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise CheckProblem(
            "functional.parameters",
            f"parameters.{what} must be an object keyed by name",
            severity=Severity.MEDIUM,
        )
    return dict(value)


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_fixed(dim: int | str | None) -> bool:
    return isinstance(dim, int) and dim >= 0


def input_shapes(
    session: Session,
    parameters: Mapping[str, Any] | None,
    *,
    policy: FunctionalPolicy,
    batch_size: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input (see the module docstring for the rules).
    ``batch_size`` overrides a dynamic first dimension."""
    params = parameters or {}
    explicit = _int_map(params.get("inputShapes"), what="inputShapes")
    named = _int_map(params.get("dimensions"), what="dimensions")
    for key, size in named.items():
        if not _is_size(size):
            raise CheckProblem(
                "functional.parameters",
                f"parameters.dimensions[{key!r}] must be a non-negative int, got {size!r}",
                severity=Severity.MEDIUM,
            )
    declared_names = {arg.name for arg in session.get_inputs()}
    unknown = sorted(set(explicit) - declared_names)
    if unknown:
        raise CheckProblem(
            "functional.parameters",
            f"parameters.inputShapes names inputs the model does not have: {unknown}; "
            f"its inputs are {sorted(declared_names)}",
            severity=Severity.MEDIUM,
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for arg in session.get_inputs():
        declared = list(arg.shape or [])
        if arg.name in explicit:
            given = explicit[arg.name]
            if not isinstance(given, list | tuple) or not all(_is_size(d) for d in given):
                raise CheckProblem(
                    "functional.parameters",
                    f"parameters.inputShapes[{arg.name!r}] must be a list of non-negative "
                    f"ints, got {given!r}",
                    severity=Severity.MEDIUM,
                )
            dims = [int(d) for d in given]
            if declared:
                mismatch = len(dims) != len(declared) or any(
                    _is_fixed(d) and d != g for d, g in zip(declared, dims, strict=False)
                )
                if mismatch:
                    raise CheckProblem(
                        "functional.parameters",
                        f"parameters.inputShapes[{arg.name!r}] = {dims} does not fit the "
                        f"declared shape {declared}",
                        severity=Severity.MEDIUM,
                    )
                if batch_size is not None and not _is_fixed(declared[0]):
                    dims[0] = batch_size
        else:
            dims = []
            for index, dim in enumerate(declared):
                if _is_fixed(dim):
                    dims.append(cast(int, dim))
                elif index == 0 and batch_size is not None:
                    dims.append(batch_size)
                elif isinstance(dim, str) and dim in named:
                    dims.append(int(named[dim]))
                elif index == 0:
                    dims.append(policy.batch_size)
                else:
                    dims.append(policy.default_dim)
        shapes[arg.name] = tuple(dims)
    return shapes


def make_inputs(
    session: Session,
    parameters: Mapping[str, Any] | None,
    *,
    policy: FunctionalPolicy,
    batch_size: int | None = None,
) -> dict[str, NDArray[Any]]:
    """Deterministic random inputs for every model input, from its declared element type and
    shape (dynamic dimensions resolved by :func:`input_shapes`). The same policy and
    parameters always give the same arrays."""
    import numpy as np

    shapes = input_shapes(session, parameters, policy=policy, batch_size=batch_size)
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
    if total > policy.max_input_elements:
        raise CheckProblem(
            "functional.inputs-too-large",
            f"the inputs would hold {total} elements, more than the limit of "
            f"{policy.max_input_elements}; give smaller sizes in parameters.inputShapes or "
            "parameters.dimensions",
            severity=Severity.MEDIUM,
        )
    rng = np.random.default_rng(policy.seed)
    feeds: dict[str, NDArray[Any]] = {}
    for arg in session.get_inputs():
        shape = shapes[arg.name]
        dtype_name = _ORT_DTYPES.get(arg.type)
        if dtype_name is None:
            raise CheckProblem(
                "functional.unsupported-input",
                f"input {arg.name!r} has type {arg.type}, for which no test data can be generated",
                location=f"input:{arg.name}",
                severity=Severity.MEDIUM,
            )
        dtype = np.dtype(dtype_name)
        if dtype.kind == "f":
            low, high = policy.float_range
            feeds[arg.name] = (rng.random(shape) * (high - low) + low).astype(dtype)
        elif dtype.kind in "iu":
            low_i, high_i = policy.int_range
            feeds[arg.name] = rng.integers(
                max(low_i, 0) if dtype.kind == "u" else low_i, high_i, size=shape, dtype=dtype
            )
        elif dtype.kind == "b":
            feeds[arg.name] = rng.random(shape) < 0.5
        else:
            feeds[arg.name] = rng.choice(np.array(_STRING_SAMPLES, dtype=object), size=shape)
    return feeds


def _describe(array: NDArray[Any]) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape)}


def tool_versions() -> dict[str, str]:
    """The versions of onnx, onnxruntime and numpy."""
    import numpy as np
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    return {"onnx": onnx.__version__, "onnxruntime": str(ort.__version__), "numpy": np.__version__}


# --- the check ------------------------------------------------------------------------------


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


def _run(
    session: Session, feeds: Mapping[str, Any], *, timeout: float | None, location: str
) -> list[Any]:
    import onnxruntime as ort

    run_options = ort.RunOptions()
    run_options.log_severity_level = 3
    timer = None
    if timeout is not None:
        timer = threading.Timer(timeout, setattr, args=(run_options, "terminate", True))
        timer.daemon = True
        timer.start()
    try:
        return session.run(None, feeds, run_options)
    except Exception as exc:
        if run_options.terminate:
            raise CheckProblem(
                "functional.timeout",
                f"inference did not finish within {timeout} s and was cancelled",
                location=location,
            ) from exc
        raise CheckProblem(
            "functional.run", f"inference failed: {type(exc).__name__}: {exc}", location=location
        ) from exc
    finally:
        if timer is not None:
            timer.cancel()


def _judge_outputs(
    session: Session, results: Sequence[Any], *, location: str
) -> tuple[dict[str, dict[str, Any]], list[Finding]]:
    import numpy as np

    described: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    for arg, value in zip(session.get_outputs(), results, strict=True):
        where = f"{location}#output:{arg.name}"
        if not (arg.type.startswith("tensor(") and isinstance(value, np.ndarray)):
            # A sequence or map output (e.g. ZipMap): nothing numeric to judge.
            described[arg.name] = {"dtype": arg.type, "shape": None, "finite": True}
            continue
        finite = True
        if value.dtype.kind in "fc":
            nan = int(np.isnan(value).sum())
            inf = int(np.isinf(value).sum())
            finite = nan == 0 and inf == 0
            if not finite:
                findings.append(
                    Finding(
                        Severity.HIGH,
                        "functional.non-finite",
                        f"output {arg.name!r} has {nan} NaN and {inf} infinite values out of "
                        f"{value.size}",
                        where,
                    )
                )
        described[arg.name] = {**_describe(value), "finite": finite}
        expected = _ORT_DTYPES.get(arg.type)
        if expected is not None and value.dtype != np.dtype(expected):
            findings.append(
                Finding(
                    Severity.MEDIUM,
                    "functional.output-type",
                    f"output {arg.name!r} is {value.dtype}, but the model declares {arg.type}",
                    where,
                )
            )
        declared = arg.shape
        if declared:
            wrong_rank = len(declared) != value.ndim
            if wrong_rank or any(
                _is_fixed(d) and d != a for d, a in zip(declared, value.shape, strict=False)
            ):
                findings.append(
                    Finding(
                        Severity.MEDIUM,
                        "functional.output-shape",
                        f"output {arg.name!r} has shape {list(value.shape)}, but the model "
                        f"declares {list(declared)}",
                        where,
                    )
                )
    return described, findings


def _run_vectors(
    session: Session,
    vectors_file: Path,
    policy: FunctionalPolicy,
    *,
    location: str,
) -> tuple[tuple[OutputComparison, ...], list[Finding]]:
    import numpy as np

    where = vectors_file.name
    try:
        data = np.load(vectors_file, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise TypeError("it holds a single array, not an .npz archive of named arrays")
        with data:
            arrays: dict[str, NDArray[Any]] = {name: data[name] for name in data.files}
    except Exception as exc:
        raise CheckProblem(
            "functional.test-vectors",
            f"cannot read the test vectors: {type(exc).__name__}: {exc}",
            location=where,
        ) from exc
    feeds = {k.removeprefix("input:"): v for k, v in arrays.items() if k.startswith("input:")}
    expected = {k.removeprefix("output:"): v for k, v in arrays.items() if k.startswith("output:")}
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = [arg.name for arg in session.get_outputs()]
    problems = []
    if missing := sorted(set(inputs) - set(feeds)):
        problems.append(f"no array for input(s) {missing}")
    if extra := sorted(set(feeds) - set(inputs)):
        problems.append(f"arrays for unknown input(s) {extra}")
    if unknown := sorted(set(expected) - set(outputs)):
        problems.append(f"arrays for unknown output(s) {unknown}")
    if not expected:
        problems.append("no output:<name> arrays to compare")
    for name, array in feeds.items():
        want = _ORT_DTYPES.get(inputs[name].type) if name in inputs else None
        if want is not None and array.dtype != np.dtype(want):
            problems.append(f"input:{name} is {array.dtype}, the model takes {inputs[name].type}")
    if problems:
        raise CheckProblem(
            "functional.test-vectors",
            "the test vectors do not fit the model: "
            + "; ".join(problems)
            + " (arrays are named input:<name> and output:<name>)",
            location=where,
        )
    results = dict(
        zip(
            outputs,
            _run(session, feeds, timeout=policy.run_timeout_seconds, location=location),
            strict=True,
        )
    )
    comparisons: list[OutputComparison] = []
    findings: list[Finding] = []
    for name, want_array in expected.items():
        got = np.asarray(results[name])
        max_abs: float | None = None
        if got.shape != want_array.shape:
            passed = False
        elif got.dtype.kind in "biufc" and want_array.dtype.kind in "biufc":
            passed = bool(np.allclose(got, want_array, rtol=policy.rtol, atol=policy.atol))
            if got.size:
                diff = np.abs(got.astype(np.float64) - want_array.astype(np.float64))
                max_abs = float(np.max(diff))
            else:
                max_abs = 0.0
        else:
            passed = bool(np.array_equal(got, want_array))
        comparisons.append(
            OutputComparison(name, passed, max_abs, tuple(got.shape), tuple(want_array.shape))
        )
        if not passed:
            detail = (
                f"shape {list(got.shape)} instead of {list(want_array.shape)}"
                if got.shape != want_array.shape
                else f"max abs error {max_abs} (rtol={policy.rtol}, atol={policy.atol})"
            )
            findings.append(
                Finding(
                    Severity.HIGH,
                    "functional.test-vector-mismatch",
                    f"output {name!r} does not match its test vector: {detail}",
                    f"{where}#output:{name}",
                )
            )
    return tuple(comparisons), findings


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
            status = "Failed" if self.findings else "Passed"
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
    return draft.report("Skipped")


def check_model(
    path: Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    fmt: str | None = "ONNX",
    policy: FunctionalPolicy | None = None,
) -> FunctionalReport:
    """Check that the ONNX model at ``path`` (a file, or a bundle directory holding it) is
    valid and runs on CPU with generated inputs and, when given, its test vectors.

    ``fmt`` is the version's declared format: ``"API"`` and formats other than ONNX are
    skipped; ``None`` means "unknown", and the artifact is skipped if it does not parse as
    ONNX. Never raises for a bad artifact."""
    draft = _Draft(started=time.perf_counter())
    policy = policy or FunctionalPolicy()
    params: Mapping[str, Any] = parameters or {}
    declared = str(getattr(fmt, "value", fmt)).upper() if fmt is not None else None
    if declared == "API":
        return _skipped(draft, "format API has no artifact")
    if declared is not None and declared != "ONNX":
        return _skipped(draft, f"format {fmt} is not ONNX; the functional check runs ONNX only")
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
        draft.inputs = {name: _describe(array) for name, array in feeds.items()}
        results = _run(session, feeds, timeout=policy.run_timeout_seconds, location=location)
        draft.outputs, findings = _judge_outputs(session, results, location=location)
        draft.findings.extend(findings)
        if params.get(policy.test_vectors_key) is not None:
            if not path.is_dir():
                raise CheckProblem(
                    "functional.test-vectors",
                    f"parameters.{policy.test_vectors_key} needs a bundle: the artifact is a "
                    "single model file, so there is no file to read the test vectors from",
                    severity=Severity.MEDIUM,
                )
            vectors_file = _inside(
                path, params[policy.test_vectors_key], what=policy.test_vectors_key
            )
            if not vectors_file.is_file():
                raise CheckProblem(
                    "functional.test-vectors",
                    f"test vectors file {params[policy.test_vectors_key]!r} is not in the bundle",
                )
            draft.vectors, findings = _run_vectors(session, vectors_file, policy, location=location)
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
