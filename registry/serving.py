"""Which version formats each deployment target can serve: the one table the API (a 422 when a
deployment is created) and the deployers (``check_workload``) both read.

The model server, on the local and the Kubernetes target alike, runs ONNX artifacts: a single
``.onnx`` file, or a ``.tar.gz``/``.tgz``/``.zip`` bundle holding ``model.onnx`` and its external
data. An ``API`` version runs no process: its ``parameters.endpoint`` serves it.
"""

from __future__ import annotations

from registry.vocabulary import ArtifactFormat, DeploymentTarget

#: target → the formats it serves.
SERVED_FORMATS: dict[str, tuple[ArtifactFormat, ...]] = {
    DeploymentTarget.LOCAL: (ArtifactFormat.ONNX, ArtifactFormat.API),
    DeploymentTarget.KUBERNETES: (ArtifactFormat.ONNX, ArtifactFormat.API),
}
#: The artifact names the model server loads, for an ONNX version.
ONNX_ARTIFACT_SUFFIXES = (".onnx", ".tar.gz", ".tgz", ".zip")


def unservable_reason(
    fmt: str | None, *, artifact_key: str | None, target: str | None
) -> str | None:
    """Why ``target`` cannot serve a version of format ``fmt`` whose artifact is stored at
    ``artifact_key``; None when it can. ``target`` None asks whether *any* target could.
    ``artifact_key`` None skips the check of the artifact's name (the deployers check the
    format only: the API checked the name, from the key the upload chose, at deploy time)."""
    fmt = fmt or ArtifactFormat.ONNX
    targets = [target] if target is not None else list(SERVED_FORMATS)
    if not any(fmt in SERVED_FORMATS.get(t, ()) for t in targets):
        where = f"target {target!r}" if target is not None else "no deployment target"
        served = sorted({f.value for t in targets for f in SERVED_FORMATS.get(t, ())})
        return (
            f"{where} cannot serve format {fmt!r}: the model server runs {served} "
            "(convert the model to ONNX, or register an API version for an external endpoint)"
        )
    if fmt == ArtifactFormat.ONNX and artifact_key is not None:
        name = artifact_key.rsplit("/", 1)[-1]
        if not name.lower().endswith(ONNX_ARTIFACT_SUFFIXES):
            return (
                f"format 'ONNX' artifact {name!r} is not one the model server loads on "
                f"{f'target {target!r}' if target else 'any target'}: upload a .onnx file or "
                "a .tar.gz/.tgz/.zip bundle holding model.onnx"
            )
    return None
