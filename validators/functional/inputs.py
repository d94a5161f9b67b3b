"""The inputs the functional check and the benchmark feed a model: deterministic random arrays
from each input's declared element type and shape, dynamic dimensions resolved from the
parameters or the policy (see ``validators.functional`` for the rules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from validators.functional.policy import FunctionalPolicy
from validators.functional.report import CheckProblem
from validators.functional.session import ORT_DTYPES, Session, is_fixed
from validators.report import Severity

if TYPE_CHECKING:
    from numpy.typing import NDArray

_STRING_SAMPLES = ("alpha", "beta", "gamma", "delta")


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
                    is_fixed(d) and d != g for d, g in zip(declared, dims, strict=False)
                )
                if mismatch:
                    raise CheckProblem(
                        "functional.parameters",
                        f"parameters.inputShapes[{arg.name!r}] = {dims} does not fit the "
                        f"declared shape {declared}",
                        severity=Severity.MEDIUM,
                    )
                if batch_size is not None and not is_fixed(declared[0]):
                    dims[0] = batch_size
        else:
            dims = []
            for index, dim in enumerate(declared):
                if is_fixed(dim):
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
        dtype_name = ORT_DTYPES.get(arg.type)
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


def describe_array(array: NDArray[Any]) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape)}
