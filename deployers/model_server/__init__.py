"""A model server: one ONNX model behind the Open Inference Protocol (KServe v2), over REST.

``create_model_app(model_name=..., version=..., model_path=...)`` opens an onnxruntime session
(CPU only) on ``model_path`` (an ONNX file, or a directory holding an unpacked bundle) with the
loader the functional check uses (``registry.onnx_artifact``), and returns a FastAPI app with the
OIP routes:

- ``GET /v2/health/live``, ``GET /v2/health/ready`` (503 until the session is loaded);
- ``GET /v2`` (server metadata), ``GET /v2/models/{name}[/versions/{v}]`` (model metadata),
  ``GET /v2/models/{name}[/versions/{v}]/ready``;
- ``POST /v2/models/{name}[/versions/{v}]/infer``: JSON tensors in, JSON tensors out. ``data``
  is row-major and flat, or nested lists. Errors are ``{"error": "..."}``: 404 for an unknown
  model or version, 400 for a bad request (also a body nested deeper than ``MAX_JSON_DEPTH``,
  refused before it is parsed), 413 (problem+json, with ``error`` too) for a body over
  ``max_body_bytes``, 500 when onnxruntime fails;
- ``GET /metrics``: Prometheus metrics from a registry of the app's own.

Answers are standard JSON: a non-finite float in an output (NaN, +-Infinity) is written as
``null``, in its place, so the shape and every finite value are kept.

``fetch_and_verify`` copies an artifact from a store (or hashes a local file) and refuses it when
its SHA-256 is not the expected one; ``run_model_server`` does both, unpacks a bundle (zip, tar,
tar.gz) with the security scanner's checks (``registry.bundles``), and serves under uvicorn until
SIGTERM or SIGINT. onnxruntime and uvicorn are imported only when a server is built.

The parts: ``artifact`` (fetching and verifying), ``session`` (the onnxruntime session and
``infer``), ``tensors`` (the OIP's JSON tensors), ``limits`` (body size and JSON depth),
``metrics``, ``app`` (the HTTP routes) and ``process`` (``run_model_server``).
"""

from __future__ import annotations

from deployers.model_server.app import create_model_app
from deployers.model_server.artifact import ArtifactMismatch, fetch_and_verify
from deployers.model_server.process import ModelLoadError, run_model_server
from deployers.model_server.session import ModelServer

__all__ = [
    "ArtifactMismatch",
    "ModelLoadError",
    "ModelServer",
    "create_model_app",
    "fetch_and_verify",
    "run_model_server",
]
