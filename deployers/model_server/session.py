"""One loaded model: an onnxruntime session (CPU only) on an ONNX file, or on a directory
holding an unpacked bundle, opened with the loader the functional check uses
(``registry.onnx_artifact``), and ``infer`` for one OIP request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployers.model_server.metrics import ServerMetrics
from deployers.model_server.tensors import (
    InferenceRequestError,
    decode_input,
    encode_error,
    encode_output,
    parse_request,
    read_spec,
)
from registry.onnx_artifact import open_session, resolve_model_file

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PLATFORM", "ModelServer"]

PLATFORM = "onnxruntime_onnx"


class ModelServer:
    """One loaded model: its session, its tensor specs, and ``infer``."""

    def __init__(
        self, *, model_name: str, version: str, model_path: Path, model_file: str | None = None
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.metrics = ServerMetrics(model=model_name, version=version)
        self.model_file = resolve_model_file(model_path, model_file=model_file)
        self._session: Any = open_session(self.model_file)
        self.inputs = {a.name: read_spec(a) for a in self._session.get_inputs()}
        self.outputs = {a.name: read_spec(a) for a in self._session.get_outputs()}
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
            request = parse_request(body)
            feeds = self._feeds(request)
            output_names = self._output_names(request)
        except InferenceRequestError as exc:
            return exc.status, encode_error(str(exc))
        session = self._session
        if session is None:
            return 503, encode_error(f"model {self.model_name!r} is not loaded")
        started = time.perf_counter()
        try:
            results = session.run(output_names, feeds)
        except Exception as exc:
            self.metrics.errors.inc()
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            return 500, encode_error(f"inference failed: {message}")
        self.metrics.duration.observe(time.perf_counter() - started)
        answer: dict[str, Any] = {"model_name": self.model_name, "model_version": self.version}
        if "id" in request:
            answer["id"] = request["id"]
        answer["outputs"] = [
            encode_output(name, self.outputs[name].datatype, array)
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
            feeds[name] = decode_input(spec, item)
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
