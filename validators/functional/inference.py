"""Running the model and judging what it returns: element types, shapes and finite values of
the outputs, and the outputs against the bundle's test vectors."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from validators.functional.inputs import describe_array
from validators.functional.policy import FunctionalPolicy
from validators.functional.report import CheckProblem, OutputComparison
from validators.functional.session import ORT_DTYPES, Session, is_fixed
from validators.report import Finding, Severity

if TYPE_CHECKING:
    from numpy.typing import NDArray


def run_session(
    session: Session, feeds: Mapping[str, Any], *, timeout: float | None, location: str
) -> list[Any]:
    import onnxruntime as ort  # type: ignore[import-untyped]

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


def judge_outputs(
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
        described[arg.name] = {**describe_array(value), "finite": finite}
        expected = ORT_DTYPES.get(arg.type)
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
                is_fixed(d) and d != a for d, a in zip(declared, value.shape, strict=False)
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


def run_vectors(
    session: Session,
    vectors_file: Path,
    policy: FunctionalPolicy,
    *,
    location: str,
) -> tuple[tuple[OutputComparison, ...], list[Finding]]:
    import numpy as np

    where = vectors_file.name
    arrays = _load_vectors(vectors_file)
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
        want = ORT_DTYPES.get(inputs[name].type) if name in inputs else None
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
            run_session(session, feeds, timeout=policy.run_timeout_seconds, location=location),
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


def _load_vectors(vectors_file: Path) -> dict[str, NDArray[Any]]:
    """The named arrays of an ``.npz`` file, read without pickles."""
    import numpy as np

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
            location=vectors_file.name,
        ) from exc
    return arrays
