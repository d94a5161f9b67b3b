"""The functional check of the formats that are not ONNX: does the artifact really load?

It runs in the validator child (``validators.child``: no credentials in its environment,
memory and CPU limits, killed with the worker), and only after a clean security scan
(``validators.run``). Per format:

- **SafeTensors**: the header is parsed and checked against the file, and every tensor is
  memory-mapped and read (``validators.functional.safetensors_load``); a hostile header is a
  ``functional.safetensors.*`` finding.
- **Joblib**, **Pickle**: the object is loaded (``joblib.load``, ``pickle.load``): the scan
  allowed every global the pickle names. When it has a ``predict`` and there is an input spec
  (``parameters.inputShape``, e.g. ``[2, 4]``, or the estimator's ``n_features_in_``), it is
  run on a deterministic random sample and must give one finite prediction per row.
- **PyTorch**: ``torch.load(weights_only=True)`` when torch can be imported in the child; a
  whole pickled ``nn.Module`` or TorchScript is refused by it (save the ``state_dict``).
  Without torch: Skipped, saying what would make it checkable.

None of them is benchmarked: no model server runs them (``registry.serving``).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from registry.vocabulary import ArtifactFormat, CheckStatus
from validators.functional.report import FunctionalReport
from validators.functional.safetensors_load import load_safetensors
from validators.report import Finding, Severity

#: The declared formats this module checks.
OTHER_FORMATS: tuple[ArtifactFormat, ...] = (
    ArtifactFormat.SAFETENSORS,
    ArtifactFormat.JOBLIB,
    ArtifactFormat.PICKLE,
    ArtifactFormat.PYTORCH,
)
#: A sample for ``predict`` is refused beyond this many elements.
MAX_SAMPLE_ELEMENTS = 10_000_000


class _Problem(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, " ".join(message.split())


def check_other_format(
    path: Path,
    *,
    fmt: ArtifactFormat,
    parameters: Mapping[str, Any] | None = None,
    on_run: Callable[[], None] | None = None,
) -> FunctionalReport:
    """Load the artifact at ``path`` as ``fmt`` and, for an object with ``predict``, run it.
    ``on_run`` is called once the artifact has loaded. Never raises for a bad artifact."""
    started = time.perf_counter()
    params: Mapping[str, Any] = parameters if isinstance(parameters, Mapping) else {}
    location = path.name
    loaded: dict[str, Any] = {"format": str(fmt)}
    findings: list[Finding] = []
    reason = None
    status = CheckStatus.PASSED
    try:
        if fmt == ArtifactFormat.SAFETENSORS:
            st = load_safetensors(path, location=location)
            findings.extend(st.findings)
            loaded.update(tensors=st.tensors, metadata=st.metadata, dataBytes=st.data_bytes)
        elif fmt == ArtifactFormat.PYTORCH:
            skipped = _torch_missing()
            if skipped is not None:
                status, reason = CheckStatus.SKIPPED, skipped
            else:
                loaded.update(_load_torch(path))
        else:
            obj = _load_pickled(path, joblib=fmt == ArtifactFormat.JOBLIB)
            loaded["type"] = f"{type(obj).__module__}.{type(obj).__qualname__}"
            if on_run is not None:
                on_run()
            loaded.update(_predict(obj, params))
            reason = loaded.pop("predictSkipped", None)
    except _Problem as problem:
        findings.append(Finding(Severity.HIGH, problem.rule, problem.message, location))
    except MemoryError:
        raise  # the child reports the memory limit
    except Exception as exc:  # never raise for an artifact: the error is the finding
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        findings.append(Finding(Severity.HIGH, "functional.error", message, location))
    if findings:
        status = CheckStatus.FAILED
    return FunctionalReport(
        status=status,
        findings=tuple(findings),
        reason=reason,
        model_file=location,
        duration_seconds=round(time.perf_counter() - started, 6),
        tool_versions=_versions(fmt),
        loaded=loaded,
    )


def _load_pickled(path: Path, *, joblib: bool) -> Any:
    """The object in the pickle (or joblib file) at ``path``. The scan passed it first."""
    if joblib:
        try:
            joblib_module = importlib.import_module("joblib")
        except ImportError as exc:
            raise _Problem(
                "functional.joblib-missing",
                f"joblib cannot be imported in the validator ({exc}); install joblib in the "
                "worker's environment to check Joblib artifacts",
            ) from exc
        try:
            return joblib_module.load(path)
        except Exception as exc:
            raise _Problem(
                "functional.load", f"joblib.load failed: {type(exc).__name__}: {exc}"
            ) from exc
    import pickle

    try:
        with path.open("rb") as fh:
            return pickle.load(fh)  # noqa: S301 - the scan allowed every global it names
    except Exception as exc:
        raise _Problem(
            "functional.load", f"pickle.load failed: {type(exc).__name__}: {exc}"
        ) from exc


def _input_shape(obj: Any, params: Mapping[str, Any]) -> list[int] | None:
    """The sample's shape: ``parameters.inputShape``, else one row of ``n_features_in_``."""
    shape = params.get("inputShape")
    if shape is not None:
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise _Problem(
                "functional.parameters",
                f"parameters.inputShape must be a list of positive ints, got {shape!r}",
            )
        return shape
    features = getattr(obj, "n_features_in_", None)
    if isinstance(features, int) and not isinstance(features, bool) and features > 0:
        return [1, features]
    return None


def _predict(obj: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``obj.predict`` on a deterministic sample, when it has one and a shape is known."""
    import math

    import numpy as np

    predict = getattr(obj, "predict", None)
    if not callable(predict):
        return {"predict": None}
    shape = _input_shape(obj, params)
    if shape is None:
        return {
            "predict": None,
            "predictSkipped": "the object has predict but no input spec: set "
            "parameters.inputShape (e.g. [1, 4]) to have predict run on a sample",
        }
    if math.prod(shape) > MAX_SAMPLE_ELEMENTS:
        raise _Problem(
            "functional.parameters",
            f"parameters.inputShape {shape} is more than {MAX_SAMPLE_ELEMENTS} elements",
        )
    sample = np.random.default_rng(0).standard_normal(shape)
    try:
        result = np.asarray(predict(sample))
    except Exception as exc:
        raise _Problem(
            "functional.predict",
            f"predict failed on a sample of shape {shape}: {type(exc).__name__}: {exc}",
        ) from exc
    if result.ndim == 0 or result.shape[0] != shape[0]:
        raise _Problem(
            "functional.predict",
            f"predict gave shape {list(result.shape)} for {shape[0]} rows",
        )
    if result.dtype.kind in "fc" and not bool(np.isfinite(result).all()):
        raise _Problem("functional.non-finite", "predict gave NaN or infinite values")
    return {
        "predict": {
            "inputShape": shape,
            "outputShape": list(result.shape),
            "outputDtype": str(result.dtype),
        }
    }


def _torch_missing() -> str | None:
    """Why PyTorch artifacts cannot be checked here, or None when torch imports."""
    if importlib.util.find_spec("torch") is None:
        return (
            "torch is not installed in the validator's environment: install torch in the "
            "worker's image to have PyTorch artifacts loaded (torch.load, weights_only=True)"
        )
    try:
        import torch  # noqa: F401
    except MemoryError:
        return (
            "torch could not be imported under the validator's memory limit: raise "
            "MODELREG_VALIDATOR_MEMORY to have PyTorch artifacts loaded"
        )
    except Exception as exc:
        return f"torch could not be imported in the validator ({type(exc).__name__}: {exc})"
    return None


def _load_torch(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain containers only."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _Problem(
            "functional.torch-load",
            f"torch.load(weights_only=True) refused the file: {type(exc).__name__}: {exc}. "
            "Save the model's state_dict (torch.save(model.state_dict(), path))",
        ) from exc
    tensors = _tensors_in(obj)
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise _Problem(
            "functional.non-finite", f"tensors with NaN or infinite values: {', '.join(bad[:5])}"
        )
    return {
        "type": f"{type(obj).__module__}.{type(obj).__qualname__}",
        "tensors": {
            name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
            for name, t in list(tensors.items())[:1000]
        },
        "tensorCount": len(tensors),
        "parameterCount": sum(int(t.numel()) for t in tensors.values()),
    }


def _tensors_in(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor in nested dicts, lists and tuples, by a dotted name."""
    import torch

    if isinstance(obj, torch.Tensor):
        return {prefix or "tensor": obj}
    items: list[tuple[Any, Any]] = []
    if isinstance(obj, Mapping):
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj))
    found: dict[str, Any] = {}
    for key, value in items:
        found.update(_tensors_in(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _versions(fmt: ArtifactFormat) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        ArtifactFormat.SAFETENSORS: ("numpy",),
        ArtifactFormat.JOBLIB: ("joblib", "numpy", "scikit-learn"),
        ArtifactFormat.PICKLE: ("numpy", "scikit-learn"),
        ArtifactFormat.PYTORCH: ("torch",),
    }[fmt]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
