"""The model-server process (``modelreg serve-model``): ``run_model_server`` verifies the
artifact (``fetch_and_verify``), unpacks a bundle (zip, tar, tar.gz) with the security
scanner's checks (``registry.bundles``), and serves under uvicorn until SIGTERM or SIGINT.
uvicorn is imported only when a server runs.
"""

from __future__ import annotations

import logging
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from deployers.model_server.app import create_model_app
from deployers.model_server.artifact import fetch_and_verify
from deployers.model_server.limits import DEFAULT_MAX_BODY_BYTES
from registry.bundles import UnsafeBundle
from registry.onnx_artifact import ArtifactProblem, unpack_artifact

if TYPE_CHECKING:
    from registry.storage import ArtifactStore

__all__ = ["ModelLoadError", "run_model_server"]

log = logging.getLogger("modelreg.model_server")


class ModelLoadError(Exception):
    """The artifact cannot be loaded: onnxruntime refuses it, the bundle is unsafe (a member
    escaping the destination, a link, a device, over the limits) or holds no single model."""


def run_model_server(
    *,
    model_name: str,
    version: str,
    sha256: str,
    host: str = "127.0.0.1",
    port: int,
    artifact: Path | None = None,
    artifact_key: str | None = None,
    store: ArtifactStore | None = None,
    model_file: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
) -> None:
    """Verify the artifact, load it, and serve it until SIGTERM or SIGINT.

    Raises :class:`ArtifactMismatch` before anything listens when the digest is wrong, and
    :class:`ModelLoadError` when the artifact cannot be loaded: a bundle refused by the
    scanner's checks, no single model in it (``model_file`` chooses, as the version's
    ``parameters.modelFile`` does for the functional check), or onnxruntime refusing it. A
    downloaded copy and an unpacked bundle live in a private temporary directory only until
    the session is loaded. Returns normally after a graceful shutdown on SIGTERM.
    """
    import uvicorn

    serving = False

    def on_sigterm(signum: int, _frame: FrameType | None) -> None:
        # Before uvicorn runs: stop now (temporary files are cleaned up on the way out).
        # uvicorn re-raises SIGTERM after its graceful shutdown: then just return.
        if not serving:
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="modelreg-model-") as workdir:
            path = fetch_and_verify(
                sha256=sha256,
                artifact=artifact,
                artifact_key=artifact_key,
                store=store,
                into=Path(workdir),
            )
            source = str(artifact) if artifact is not None else f"{artifact_key} (downloaded)"
            try:
                model_path = unpack_artifact(path, into=Path(workdir) / "bundle")
            except UnsafeBundle as exc:
                raise ModelLoadError(f"refusing to serve {source}: {exc}") from exc
            except OSError as exc:
                raise ModelLoadError(f"cannot unpack {source}: {exc}") from exc
            if model_path != path:
                log.info("unpacked the bundle %s", source)
            try:
                app = create_model_app(
                    model_name=model_name,
                    version=version,
                    model_path=model_path,
                    model_file=model_file,
                    max_body_bytes=max_body_bytes,
                )
            except ArtifactProblem as exc:
                raise ModelLoadError(f"cannot serve {source}: {exc.message}") from exc
            except Exception as exc:
                message = " ".join(f"{type(exc).__name__}: {exc}".split())
                raise ModelLoadError(f"onnxruntime cannot load {source}: {message}") from exc
        log.info("loaded model %s version %s from %s", model_name, version, source)
        log.info("listening on http://%s:%d (OIP v2 under /v2, metrics at /metrics)", host, port)
        serving = True
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)
        log.info("model server for %s version %s stopped", model_name, version)
    finally:
        signal.signal(signal.SIGTERM, previous)
