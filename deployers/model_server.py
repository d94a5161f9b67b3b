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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from registry.bundles import UnsafeBundle
from registry.onnx_artifact import (
    ArtifactProblem,
    open_session,
    resolve_model_file,
    unpack_artifact,
)

if TYPE_CHECKING:
    import numpy as np

    from registry.storage import ArtifactStore

__all__ = [
    "ArtifactMismatch",
    "ModelLoadError",
    "ModelServer",
    "create_model_app",
    "fetch_and_verify",
    "run_model_server",
]

log = logging.getLogger("modelreg.model_server")

CHUNK = 1024 * 1024
PLATFORM = "onnxruntime_onnx"

#: The default cap on an inference request's body (``serve-model --max-body-bytes``).
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: Deepest nesting of arrays and objects a request may have: a rank-8 tensor as nested lists
#: inside ``{"inputs": [{"data": ...}]}`` is 11 levels deep.
MAX_JSON_DEPTH = 64
PROBLEM = "application/problem+json"

#: A JSON string (escapes included), and every byte that is not a bracket or a brace.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

#: onnxruntime type -> (OIP datatype, numpy dtype); ``None``: numpy cannot hold it.
_TYPES: dict[str, tuple[str, str | None]] = {
    "tensor(float)": ("FP32", "float32"),
    "tensor(double)": ("FP64", "float64"),
    "tensor(float16)": ("FP16", "float16"),
    "tensor(bfloat16)": ("BF16", None),
    "tensor(int8)": ("INT8", "int8"),
    "tensor(int16)": ("INT16", "int16"),
    "tensor(int32)": ("INT32", "int32"),
    "tensor(int64)": ("INT64", "int64"),
    "tensor(uint8)": ("UINT8", "uint8"),
    "tensor(uint16)": ("UINT16", "uint16"),
    "tensor(uint32)": ("UINT32", "uint32"),
    "tensor(uint64)": ("UINT64", "uint64"),
    "tensor(bool)": ("BOOL", "bool"),
    "tensor(string)": ("BYTES", "object"),
}

#: Which numpy kinds (of the array JSON data parses to) each kind of tensor accepts.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b", "O": "U"}

#: Inference latency buckets, in seconds: 0.5 ms to 10 s.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ArtifactMismatch(Exception):
    """The artifact's SHA-256 is not the one expected: it must not be served."""

    def __init__(self, source: str, *, expected: str, actual: str) -> None:
        super().__init__(
            f"refusing to serve {source}: its sha256 is {actual} but {expected} was expected"
        )
        self.source = source
        self.expected = expected
        self.actual = actual


class ModelLoadError(Exception):
    """The artifact cannot be loaded: onnxruntime refuses it, the bundle is unsafe (a member
    escaping the destination, a link, a device, over the limits) or holds no single model."""


class InferenceRequestError(Exception):
    """A request the model cannot run: answered with 400 (or 404) and ``{"error": ...}``."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- fetching -------------------------------------------------------------------------------


def fetch_and_verify(
    *,
    sha256: str,
    artifact: Path | None = None,
    artifact_key: str | None = None,
    store: ArtifactStore | None = None,
    into: Path | None = None,
) -> Path:
    """The path of a local copy of the artifact whose SHA-256 is ``sha256``.

    Give either ``artifact`` (a local file, hashed where it is) or ``artifact_key`` with
    ``store`` (the object is streamed into the directory ``into``, hashed on the way).
    Raises :class:`ArtifactMismatch` when the digest differs; a downloaded copy is then removed.
    """
    expected = sha256.strip().lower()
    digest = hashlib.sha256()
    if artifact is not None and artifact_key is None:
        with artifact.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        path, source = artifact, str(artifact)
    elif artifact_key is not None and artifact is None and store is not None and into is not None:
        path = into / "artifact"  # a model file or a bundle: told apart by its content
        source = f"{artifact_key} from {store.describe()}"
        with path.open("wb") as out:
            for chunk in store.open_range(artifact_key):
                digest.update(chunk)
                out.write(chunk)
    else:
        raise ValueError("give either artifact, or artifact_key with store and into")
    actual = digest.hexdigest()
    if actual != expected:
        if artifact_key is not None:
            path.unlink(missing_ok=True)
        raise ArtifactMismatch(source, expected=expected, actual=actual)
    log.info("sha256 verified for %s: %s", source, actual)
    return path


# --- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    dtype: str | None  # numpy dtype; None when numpy cannot hold the element type

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(arg: Any) -> TensorSpec:
    datatype, dtype = _TYPES.get(arg.type, (str(arg.type), None))
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape, dtype)


class _Metrics:
    def __init__(self, *, model: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._labels = (model, version)
        self.requests = Counter(
            "modelreg_model_server_requests",
            "HTTP requests, by route template and status code.",
            ["model", "version", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "modelreg_model_server_inference_errors",
            "Inference runs that onnxruntime failed.",
            ["model", "version"],
            registry=self.registry,
        ).labels(model, version)
        self.duration = Histogram(
            "modelreg_model_server_inference_duration_seconds",
            "Time onnxruntime took to run one inference request.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(model, version)
        self.ready = Gauge(
            "modelreg_model_server_ready",
            "1 while the model is loaded and served, else 0.",
            ["model", "version"],
            registry=self.registry,
        ).labels(model, version)
        self._children: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int) -> None:
        child = self._children.get((route, status))
        if child is None:
            child = self.requests.labels(*self._labels, route, str(status))
            self._children[(route, status)] = child
        child.inc()


class ModelServer:
    """One loaded model: its session, its tensor specs, and ``infer``."""

    def __init__(
        self, *, model_name: str, version: str, model_path: Path, model_file: str | None = None
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.metrics = _Metrics(model=model_name, version=version)
        self.model_file = resolve_model_file(model_path, model_file=model_file)
        self._session: Any = open_session(self.model_file)
        self.inputs = {a.name: _spec(a) for a in self._session.get_inputs()}
        self.outputs = {a.name: _spec(a) for a in self._session.get_outputs()}
        self.metrics.ready.set(1)

    @property
    def ready(self) -> bool:
        return self._session is not None

    def close(self) -> None:
        """Unload the model: readiness turns false and inference answers 503."""
        self._session = None
        self.metrics.ready.set(0)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [s.to_dict() for s in self.inputs.values()],
            "outputs": [s.to_dict() for s in self.outputs.values()],
        }

    def check_target(self, name: str, version: str | None) -> None:
        if name != self.model_name:
            raise InferenceRequestError(
                f"unknown model {name!r}: this server serves {self.model_name!r}", status=404
            )
        if version is not None and version != self.version:
            raise InferenceRequestError(
                f"unknown version {version!r} of model {name!r}: this server serves "
                f"version {self.version!r}",
                status=404,
            )

    def infer(self, body: bytes) -> tuple[int, bytes]:
        """Run one OIP inference request; the status and the JSON body of the answer."""
        try:
            request = _parse_request(body)
            feeds = self._feeds(request)
            output_names = self._output_names(request)
        except InferenceRequestError as exc:
            return exc.status, _error(str(exc))
        session = self._session
        if session is None:
            return 503, _error(f"model {self.model_name!r} is not loaded")
        started = time.perf_counter()
        try:
            results = session.run(output_names, feeds)
        except Exception as exc:
            self.metrics.errors.inc()
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            return 500, _error(f"inference failed: {message}")
        self.metrics.duration.observe(time.perf_counter() - started)
        answer: dict[str, Any] = {"model_name": self.model_name, "model_version": self.version}
        if "id" in request:
            answer["id"] = request["id"]
        answer["outputs"] = [
            _tensor(name, self.outputs[name].datatype, array)
            for name, array in zip(output_names, results, strict=True)
        ]
        return 200, json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()

    def _feeds(self, request: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InferenceRequestError("the request needs a non-empty list 'inputs'")
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InferenceRequestError("every input must be an object with a 'name'")
            name = item["name"]
            spec = self.inputs.get(name)
            if spec is None:
                raise InferenceRequestError(
                    f"unknown input {name!r}; the model's inputs are {sorted(self.inputs)}"
                )
            if name in feeds:
                raise InferenceRequestError(f"input {name!r} is given twice")
            feeds[name] = _decode(spec, item)
        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise InferenceRequestError(f"missing input(s) {missing}")
        return feeds

    def _output_names(self, request: Mapping[str, Any]) -> list[str]:
        wanted = request.get("outputs")
        if wanted is None:
            return list(self.outputs)
        if not isinstance(wanted, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
        ):
            raise InferenceRequestError("'outputs' must be a list of objects with a 'name'")
        names = [o["name"] for o in wanted]
        unknown = sorted(set(names) - set(self.outputs))
        if unknown:
            raise InferenceRequestError(
                f"unknown output(s) {unknown}; the model's outputs are {sorted(self.outputs)}"
            )
        return names or list(self.outputs)


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``body``, counted without parsing
    it and without recursion: strings are cut out, then the brackets that remain are summed."""
    import numpy as np

    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(brackets), CHUNK):  # a chunk at a time: memory stays bounded
        codes = np.frombuffer(brackets, dtype=np.uint8, count=-1, offset=start)[:CHUNK]
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def _parse_request(body: bytes) -> dict[str, Any]:
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise InferenceRequestError(
            f"the body nests arrays and objects {depth} levels deep, more than the limit "
            f"({MAX_JSON_DEPTH})"
        )
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise InferenceRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InferenceRequestError("the body must be a JSON object")
    return request


def _decode(spec: TensorSpec, item: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """The input ``item`` as a numpy array of the model's type and of its declared shape."""
    import numpy as np

    name = spec.name
    datatype = item.get("datatype")
    if datatype != spec.datatype:
        raise InferenceRequestError(
            f"input {name!r}: datatype {datatype!r} does not match the model's {spec.datatype}"
        )
    if spec.dtype is None:
        raise InferenceRequestError(f"input {name!r}: datatype {datatype} is not supported")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InferenceRequestError(
            f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}"
        )
    if spec.shape and (
        len(shape) != len(spec.shape)
        or any(want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    ):
        raise InferenceRequestError(
            f"input {name!r}: shape {shape} does not match the model's {list(spec.shape)}"
        )
    if "data" not in item:
        raise InferenceRequestError(f"input {name!r} has no 'data'")
    try:
        array = np.asarray(item["data"])
    except (ValueError, TypeError) as exc:
        raise InferenceRequestError(f"input {name!r}: 'data' is not a tensor: {exc}") from None
    count = math.prod(shape)
    if array.size != count:
        raise InferenceRequestError(
            f"input {name!r}: shape {shape} holds {count} element(s) but 'data' has {array.size}"
        )
    target = np.dtype(spec.dtype)
    if array.size and array.dtype.kind not in _ACCEPTED_KINDS.get(target.kind, ""):
        raise InferenceRequestError(f"input {name!r}: 'data' does not hold {datatype} values")
    if target.kind in "iu" and array.size:
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise InferenceRequestError(f"input {name!r}: a value is out of range for {datatype}")
    return array.astype(target, copy=False).reshape(shape)


def _tensor(name: str, datatype: str, array: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(array)
    data = array.ravel().tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        data = [v if math.isfinite(v) else None for v in data]  # JSON has no NaN or Infinity
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


# --- the app --------------------------------------------------------------------------------

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class _CountRequests:
    """ASGI middleware: counts every HTTP request by route template (never the raw path)."""

    def __init__(
        self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]], *, server: ModelServer
    ) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counted(message: _Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.server.metrics.count_request(route, status)


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, *, limit: int) -> bytes:
    """The request body, refused (:class:`BodyTooLarge`) as soon as it is known to be over
    ``limit`` bytes: from its Content-Length, or while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_model_app(
    *,
    model_name: str,
    version: str,
    model_path: Path,
    model_file: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """A FastAPI app serving the ONNX model at ``model_path`` (a file, or an unpacked bundle
    in which ``model_file`` names the model when it holds several) over OIP; the session is
    loaded now. Inference bodies over ``max_body_bytes`` are answered 413.
    ``app.state.model_server`` is the :class:`ModelServer`."""
    server = ModelServer(
        model_name=model_name, version=version, model_path=model_path, model_file=model_file
    )
    try:
        server_version = package_version("modelreg")
    except PackageNotFoundError:
        server_version = "unknown"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    app = FastAPI(
        title=f"modelreg model server: {model_name} {version}",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.model_server = server
    app.add_middleware(_CountRequests, server=server)

    def answer(status: int, body: bytes) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    def refused(exc: InferenceRequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "modelreg-model-server", "version": server_version, "extensions": []}

    def model_metadata(name: str, model_version: str | None = None) -> Response:
        try:
            server.check_target(name, model_version)
        except InferenceRequestError as exc:
            return refused(exc)
        return JSONResponse(server.metadata())

    def model_ready(name: str, model_version: str | None = None) -> Response:
        try:
            server.check_target(name, model_version)
        except InferenceRequestError as exc:
            return refused(exc)
        return JSONResponse(
            {"name": name, "ready": server.ready}, status_code=200 if server.ready else 503
        )

    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        try:
            server.check_target(name, model_version)
        except InferenceRequestError as exc:
            return refused(exc)
        try:
            body = await _read_body(request, limit=max_body_bytes)
        except BodyTooLarge:
            message = f"the request body is larger than the limit of {max_body_bytes} bytes"
            problem = {
                "type": "about:blank",
                "title": "Request body too large",
                "status": 413,
                "detail": message,
                "error": message,
            }
            return JSONResponse(problem, status_code=413, media_type=PROBLEM)
        return answer(*await run_in_threadpool(server.infer, body))

    @app.get("/v2/models/{name}")
    async def get_model(name: str) -> Response:
        return model_metadata(name)

    @app.get("/v2/models/{name}/versions/{model_version}")
    async def get_model_version(name: str, model_version: str) -> Response:
        return model_metadata(name, model_version)

    @app.get("/v2/models/{name}/ready")
    async def get_model_ready(name: str) -> Response:
        return model_ready(name)

    @app.get("/v2/models/{name}/versions/{model_version}/ready")
    async def get_model_version_ready(name: str, model_version: str) -> Response:
        return model_ready(name, model_version)

    @app.post("/v2/models/{name}/infer")
    async def post_infer(request: Request, name: str) -> Response:
        return await infer(request, name)

    @app.post("/v2/models/{name}/versions/{model_version}/infer")
    async def post_version_infer(request: Request, name: str, model_version: str) -> Response:
        return await infer(request, name, model_version)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# --- the process ----------------------------------------------------------------------------


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
