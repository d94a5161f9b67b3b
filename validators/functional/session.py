"""The model and its onnxruntime session: which file is the model, how a session is opened, and
the tensor types it declares. The model server resolves and opens a model with the same code
(``registry.onnx_artifact``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from registry import onnx_artifact
from registry.onnx_artifact import ArtifactProblem
from validators.functional.report import CheckProblem
from validators.report import Severity

#: onnxruntime's tensor type names and the numpy dtypes they map to (``object`` for strings).
#: Element types numpy cannot hold (bfloat16, float8, int4, ...) are not supported.
ORT_DTYPES: dict[str, str] = {
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


def is_fixed(dim: int | str | None) -> bool:
    return isinstance(dim, int) and dim >= 0


# --- locating the model -------------------------------------------------------------------


def _problem(exc: ArtifactProblem) -> CheckProblem:
    return CheckProblem(
        f"functional.{exc.rule}",
        exc.message,
        location=exc.location,
        severity=Severity[exc.severity],
        not_onnx=exc.not_onnx,
    )


def resolve_in_bundle(base: Path, relative: object, *, what: str) -> Path:
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


# --- sessions -----------------------------------------------------------------------------


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


def tool_versions() -> dict[str, str]:
    """The versions of onnx, onnxruntime and numpy."""
    import numpy as np
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    return {"onnx": onnx.__version__, "onnxruntime": str(ort.__version__), "numpy": np.__version__}
