"""Loading an ONNX artifact: the one code path the functional check and the model server share.

An artifact is a single ``.onnx`` file, or a bundle (zip, tar, tar.gz) holding the model and
its external data, test vectors and so on. Loading it is three steps, and both sides take each
step here, so that anything that validates also serves:

1. :func:`unpack_artifact`: a bundle is unpacked with :func:`registry.bundles.safe_extract`
   (the scanner's checks: nothing escapes the destination, no links or devices, member count
   and total size bounded); a single file is used where it is;
2. :func:`resolve_model_file`: the file itself, or the one ``.onnx`` file in the bundle
   (``model_file`` names it when there are several);
3. :func:`open_session`: an onnxruntime session on the CPU execution provider only, external
   data read relative to the model's folder.

:func:`signature_of` describes a session's inputs and outputs (names, onnxruntime type strings
and declared shapes). onnxruntime is imported only when a session is opened.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, cast

from registry.bundles import BundleLimits, SeverityName, archive_kind, safe_extract

__all__ = [
    "ArtifactProblem",
    "is_bundle",
    "open_session",
    "path_inside",
    "resolve_model_file",
    "signature_of",
    "unpack_artifact",
]


class ArtifactProblem(Exception):
    """The artifact cannot be loaded as asked. ``rule`` names the problem (the functional check
    reports it as ``functional.<rule>``); ``not_onnx`` marks "this is not an ONNX artifact"."""

    def __init__(
        self,
        rule: str,
        message: str,
        *,
        location: str = "",
        severity: SeverityName = "HIGH",
        not_onnx: bool = False,
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.location = location
        self.severity: SeverityName = severity
        self.not_onnx = not_onnx


def is_bundle(path: Path) -> bool:
    """Whether the file at ``path`` is a zip or tar (plain or gzip), from its content."""
    return path.is_file() and archive_kind(path) is not None


def unpack_artifact(path: Path, *, into: Path, limits: BundleLimits | None = None) -> Path:
    """What to load from: a bundle unpacked into the new directory ``into`` (raises
    :class:`registry.bundles.UnsafeBundle` when it is refused), or ``path`` itself."""
    if not is_bundle(path):
        return path
    into.mkdir(mode=0o700)
    safe_extract(path, into, limits=limits or BundleLimits(), location=path.name)
    return into


def path_inside(base: Path, relative: object, *, what: str) -> Path:
    """``base / relative``, refusing absolute paths, ``..`` and anything resolving outside."""
    if not isinstance(relative, str) or not relative:
        raise ArtifactProblem(
            "parameters",
            f"parameters.{what} must be a non-empty relative path, got {relative!r}",
            severity="MEDIUM",
        )
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(relative).is_absolute() or ".." in pure.parts:
        raise ArtifactProblem(
            "parameters",
            f"parameters.{what} {relative!r} must be relative and stay inside the bundle",
        )
    root = base.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(root):
        raise ArtifactProblem(
            "parameters", f"parameters.{what} {relative!r} resolves outside the bundle"
        )
    return target


def resolve_model_file(path: Path, *, model_file: object = None) -> Path:
    """The ONNX file to load: ``path`` itself, or the single ``.onnx`` file in the bundle
    directory ``path`` (``model_file``, the version's ``parameters.modelFile``, chooses when
    there are several)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ArtifactProblem("missing", f"{path} does not exist", location=str(path))
    if model_file is not None:
        chosen = path_inside(path, model_file, what="modelFile")
        if not chosen.is_file():
            raise ArtifactProblem(
                "missing", f"parameters.modelFile {model_file!r} is not a file in the bundle"
            )
        return chosen
    root = path.resolve()
    found = sorted(p for p in root.rglob("*.onnx") if p.is_file())
    for candidate in found:
        if not candidate.resolve().is_relative_to(root):
            raise ArtifactProblem(
                "outside-bundle",
                f"{candidate.relative_to(root)} is a link to a file outside the bundle",
                location=str(candidate.relative_to(root)),
            )
    if not found:
        raise ArtifactProblem("no-model", "the bundle holds no .onnx file", not_onnx=True)
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise ArtifactProblem(
            "ambiguous-model",
            f"the bundle holds {len(found)} .onnx files ({names}{more}); "
            "name the one to load in parameters.modelFile",
            severity="MEDIUM",
        )
    return found[0]


def open_session(
    model_file: Path, *, intra_op_threads: int | None = None, inter_op_threads: int | None = None
) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU execution provider only. External data
    is read relative to the model's folder."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no shape-mismatch warnings on stderr
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads is not None:
        options.inter_op_num_threads = inter_op_threads
    return ort.InferenceSession(
        str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _describe(arg: Any) -> dict[str, Any]:
    shape = arg.shape
    dims: list[int | str | None] = []
    for dim in shape if isinstance(shape, list | tuple) else []:
        dims.append(dim if isinstance(dim, int | str) and not isinstance(dim, bool) else None)
    return {"name": str(arg.name), "type": str(arg.type), "shape": dims}


def signature_of(session: Any) -> dict[str, list[dict[str, Any]]]:
    """``{"inputs": [...], "outputs": [...]}``, each ``{"name", "type", "shape"}``: ``type``
    is onnxruntime's NodeArg type string (``"tensor(float)"``), ``shape`` the declared shape,
    each dimension an int, a str (a symbolic dimension) or None (unknown)."""
    inputs = cast(list[Any], session.get_inputs())
    outputs = cast(list[Any], session.get_outputs())
    return {"inputs": [_describe(a) for a in inputs], "outputs": [_describe(a) for a in outputs]}
