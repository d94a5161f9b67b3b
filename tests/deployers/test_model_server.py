"""The model server: OIP v2 over REST in-process, and ``modelreg serve-model`` as a real process."""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from onnx import TensorProto, helper

from deployers.model_server import create_model_app
from registry.storage import HashingReader
from registry.storage.local import LocalStore
from tests.support.model_server import ServerProcess, sha256_of
from tests.support.onnx_models import add_model, nan_model, reshape_model, write

X = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
FLAT = [v for row in X for v in row]
INFER = "/v2/models/m/infer"
SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def x_input(data: Any = FLAT, *, shape: Any = (2, 4), datatype: str = "FP32") -> dict[str, Any]:
    return {"name": "x", "shape": list(shape), "datatype": datatype, "data": data}


class AppClient:
    """The app in process, over ``httpx.ASGITransport``, driven from sync tests through an anyio
    portal. As a context manager it also runs the app's lifespan (startup, then shutdown)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._stack = ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://model")
        self._stack.callback(self.portal.call, self.client.aclose)

    def __enter__(self) -> AppClient:
        lifespan = self.app.router.lifespan_context(self.app)
        self._lifespan = self.portal.wrap_async_context_manager(lifespan)
        self._lifespan.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lifespan.__exit__(None, None, None)

    def close(self) -> None:
        self._stack.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@contextmanager
def serving(app: FastAPI) -> Iterator[AppClient]:
    client = AppClient(app)
    try:
        with client:
            yield client
    finally:
        client.close()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write(tmp_path / "add.onnx", add_model())


@pytest.fixture
def http(model_file: Path) -> Iterator[AppClient]:
    app = create_model_app(model_name="m", version="1", model_path=model_file)
    with serving(app) as client:
        yield client


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels}`` (labels in any order) in a Prometheus text
    exposition; 0 when absent."""
    for line in text.splitlines():
        match = SAMPLE.fullmatch(line)
        if match is None or match["name"] != name:
            continue
        found = dict(LABEL.findall(match["labels"] or ""))
        if found == labels:
            return float(match["value"])
    return 0.0


# --- in process -----------------------------------------------------------------------------


def test_health_and_ready(http: AppClient) -> None:
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/v2/models/m/ready").json() == {"name": "m", "ready": True}
    assert http.get("/v2/models/m/versions/1/ready").status_code == 200
    assert http.get("/v2/models/other/ready").status_code == 404
    server = http.get("/v2").json()
    assert server["name"] == "modelreg-model-server"
    assert server["extensions"] == []


def test_not_ready_once_unloaded(model_file: Path) -> None:
    app = create_model_app(model_name="m", version="1", model_path=model_file)
    client = AppClient(app)
    with client:
        assert client.get("/v2/health/ready").status_code == 200
    # The lifespan ended (the server is shutting down): the model is unloaded.
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/m/ready").status_code == 503
    answer = client.post(INFER, json={"inputs": [x_input()]})
    assert answer.status_code == 503
    assert "not loaded" in answer.json()["error"]
    text = client.get("/metrics").text
    assert metric(text, "modelreg_model_server_ready", model="m", version="1") == 0
    client.close()


def test_model_metadata(http: AppClient) -> None:
    for path in ("/v2/models/m", "/v2/models/m/versions/1"):
        answer = http.get(path)
        assert answer.status_code == 200
        assert answer.json() == {
            "name": "m",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
        }


@pytest.mark.parametrize("data", [pytest.param(FLAT, id="flat"), pytest.param(X, id="nested")])
def test_infer_adds_one(http: AppClient, data: Any) -> None:
    answer = http.post(INFER, json={"id": "req-1", "inputs": [x_input(data)]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "model_name": "m",
        "model_version": "1",
        "id": "req-1",
        "outputs": [
            {"name": "y", "shape": [2, 4], "datatype": "FP32", "data": [v + 1 for v in FLAT]}
        ],
    }


def test_infer_on_versioned_route_with_requested_output(http: AppClient) -> None:
    body = {"inputs": [x_input([[1, 2, 3, 4]], shape=(1, 4))], "outputs": [{"name": "y"}]}
    answer = http.post("/v2/models/m/versions/1/infer", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert "id" not in result
    assert result["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        pytest.param("/v2/models/nope/infer", "unknown model 'nope'", id="unknown-model"),
        pytest.param("/v2/models/m/versions/2/infer", "unknown version '2'", id="unknown-version"),
    ],
)
def test_unknown_model_is_404(http: AppClient, path: str, needle: str) -> None:
    answer = http.post(path, json={"inputs": [x_input()]})
    assert answer.status_code == 404
    assert needle in answer.json()["error"]
    assert http.get(path.removesuffix("/infer")).status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param({"inputs": []}, "non-empty list 'inputs'", id="no-inputs"),
        pytest.param(
            {"inputs": [{**x_input(), "name": "z"}]}, "unknown input 'z'", id="unknown-input"
        ),
        pytest.param(
            {"inputs": [x_input(), x_input()]}, "input 'x' is given twice", id="duplicate-input"
        ),
        pytest.param(
            {"inputs": [x_input(datatype="FP64")]},
            "datatype 'FP64' does not match the model's FP32",
            id="wrong-datatype",
        ),
        pytest.param(
            {"inputs": [x_input([*FLAT, 8.0, 9.0], shape=(2, 5))]},
            "shape [2, 5] does not match the model's [-1, 4]",
            id="wrong-dimension",
        ),
        pytest.param(
            {"inputs": [x_input(FLAT, shape=(8,))]},
            "shape [8] does not match the model's [-1, 4]",
            id="wrong-rank",
        ),
        pytest.param(
            {"inputs": [x_input(FLAT[:6])]},
            "shape [2, 4] holds 8 element(s) but 'data' has 6",
            id="data-length-mismatch",
        ),
        pytest.param(
            {"inputs": [x_input(["a"] * 8)]}, "'data' does not hold FP32 values", id="strings"
        ),
        pytest.param(
            {"inputs": [x_input([[1.0, 2.0], [3.0]], shape=(1, 4))]},
            "'data' is not a tensor",
            id="ragged-data",
        ),
        pytest.param(
            {"inputs": [{k: v for k, v in x_input().items() if k != "data"}]},
            "input 'x' has no 'data'",
            id="no-data",
        ),
        pytest.param(
            {"inputs": [x_input(shape=(2, -4))]}, "non-negative integers", id="negative-shape"
        ),
        pytest.param(
            {"inputs": [x_input()], "outputs": [{"name": "w"}]},
            "unknown output(s) ['w']",
            id="unknown-output",
        ),
    ],
)
def test_bad_request_is_400(http: AppClient, body: dict[str, Any], needle: str) -> None:
    answer = http.post(INFER, json=body)
    assert answer.status_code == 400, answer.text
    assert needle in answer.json()["error"]


def test_body_that_is_not_json_is_400(http: AppClient) -> None:
    answer = http.post(INFER, content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]


def test_missing_input_is_400(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "add2", [x, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = write(tmp_path / "add2.onnx", model.SerializeToString())
    with serving(create_model_app(model_name="m", version="1", model_path=path)) as http:
        answer = http.post(INFER, json={"inputs": [x_input()]})
        assert answer.status_code == 400
        assert answer.json()["error"] == "missing input(s) ['b']"


def test_onnxruntime_failure_is_500_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "reshape.onnx", reshape_model())
    with serving(create_model_app(model_name="m", version="1", model_path=path)) as http:
        ok = http.post(INFER, json={"inputs": [x_input([0.0] * 12, shape=(3, 4))]})
        assert ok.status_code == 200
        assert ok.json()["outputs"][0]["shape"] == [4, 3]
        failed = http.post(INFER, json={"inputs": [x_input()]})
        assert failed.status_code == 500
        assert failed.json()["error"].startswith("inference failed: ")
        text = http.get("/metrics").text
    assert metric(text, "modelreg_model_server_inference_errors_total", model="m", version="1") == 1
    count = "modelreg_model_server_inference_duration_seconds_count"
    assert metric(text, count, model="m", version="1") == 1


def test_metrics_count_requests_by_route_and_status(http: AppClient) -> None:
    for _ in range(3):
        assert http.post(INFER, json={"inputs": [x_input()]}).status_code == 200
    assert http.post(INFER, json={"inputs": [x_input(FLAT[:3])]}).status_code == 400
    assert http.post("/v2/models/nope/infer", json={}).status_code == 404
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/no/such/path/req-123").status_code == 404
    text = http.get("/metrics").text
    requests = "modelreg_model_server_requests_total"
    infer_route = "/v2/models/{name}/infer"
    labels = {"model": "m", "version": "1"}
    assert metric(text, requests, **labels, route=infer_route, status="200") == 3
    assert metric(text, requests, **labels, route=infer_route, status="400") == 1
    assert metric(text, requests, **labels, route=infer_route, status="404") == 1
    assert metric(text, requests, **labels, route="/v2/health/ready", status="200") == 1
    assert metric(text, requests, **labels, route="unmatched", status="404") == 1
    duration = "modelreg_model_server_inference_duration_seconds"
    assert metric(text, f"{duration}_count", **labels) == 3
    assert metric(text, f"{duration}_bucket", **labels, le="+Inf") == 3
    assert metric(text, f"{duration}_bucket", **labels, le="0.001") <= 3
    assert 'le="0.0005"' in text  # millisecond-scale buckets
    assert metric(text, "modelreg_model_server_ready", **labels) == 1
    assert metric(text, "modelreg_model_server_inference_errors_total", **labels) == 0
    assert "nope" not in text  # neither raw paths nor unknown names become labels
    assert "req-123" not in text
    assert "# TYPE modelreg_model_server_requests_total counter" in text


def test_each_app_has_its_own_metrics(model_file: Path) -> None:
    first = create_model_app(model_name="a", version="1", model_path=model_file)
    second = create_model_app(model_name="b", version="2", model_path=model_file)
    with serving(first) as one, serving(second) as two:
        one.get("/v2/health/live")
        text = two.get("/metrics").text
    assert 'model="a"' not in text
    assert 'model="b"' in text


# --- as a process ---------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def infer_over_http(url: str) -> list[float]:
    with httpx.Client(timeout=10) as client:
        answer = client.post(f"{url}{INFER}", json={"inputs": [x_input()]})
    assert answer.status_code == 200, answer.text
    data: list[float] = answer.json()["outputs"][0]["data"]
    return data


def test_serve_model_process_serves_and_stops_on_sigterm(
    tmp_path: Path, model_file: Path, processes: list[ServerProcess]
) -> None:
    proc = ServerProcess(tmp_path, "--artifact", str(model_file), "--sha256", sha256_of(model_file))
    processes.append(proc)
    proc.wait_ready()
    assert infer_over_http(proc.url) == [v + 1 for v in FLAT]
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{proc.url}/v2/models/m").json()["inputs"][0]["shape"] == [-1, 4]
    assert proc.stop() == 0
    output = proc.output()
    assert "sha256 verified" in output
    assert f"loaded model m version 1 from {model_file}" in output
    assert f"listening on http://127.0.0.1:{proc.port}" in output
    assert "stopped" in output
    assert not listening(proc.port)


def test_serve_model_refuses_a_wrong_digest(
    tmp_path: Path, model_file: Path, processes: list[ServerProcess]
) -> None:
    wrong = "0" * 64
    proc = ServerProcess(tmp_path, "--artifact", str(model_file), "--sha256", wrong)
    processes.append(proc)
    assert proc.process.wait(timeout=60) == 2
    output = proc.output()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert wrong in errors[0]
    assert sha256_of(model_file) in errors[0]
    assert "listening" not in output
    assert not listening(proc.port)


def test_serve_model_downloads_from_the_store(
    tmp_path: Path, model_file: Path, processes: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    store = LocalStore(data_dir / "artifacts")
    key = "models/m1/versions/v1/add.onnx"
    stored = store.put(key, HashingReader([model_file.read_bytes()], max_bytes=1 << 20))
    env = {"MODELREG_DATA_DIR": str(data_dir)}
    proc = ServerProcess(tmp_path, "--artifact-key", key, "--sha256", stored.sha256, env=env)
    processes.append(proc)
    proc.wait_ready()
    assert infer_over_http(proc.url) == [v + 1 for v in FLAT]
    assert proc.stop() == 0
    output = proc.output()
    assert f"sha256 verified for {key}" in output
    assert f"loaded model m version 1 from {key}" in output


def test_serve_model_refuses_a_tampered_store_object(
    tmp_path: Path, model_file: Path, processes: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    store = LocalStore(data_dir / "artifacts")
    key = "models/m1/versions/v1/add.onnx"
    store.put(key, HashingReader([add_model(constant=2.0)], max_bytes=1 << 20))
    env = {"MODELREG_DATA_DIR": str(data_dir)}
    expected = sha256_of(model_file)
    proc = ServerProcess(tmp_path, "--artifact-key", key, "--sha256", expected, env=env)
    processes.append(proc)
    assert proc.process.wait(timeout=60) == 2
    output = proc.output()
    assert expected in output
    assert hashlib.sha256(add_model(constant=2.0)).hexdigest() in output
    assert not listening(proc.port)


def test_serve_model_reports_an_artifact_onnxruntime_cannot_load(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    junk = write(tmp_path / "junk.onnx", b"not an onnx model")
    proc = ServerProcess(tmp_path, "--artifact", str(junk), "--sha256", sha256_of(junk))
    processes.append(proc)
    assert proc.process.wait(timeout=60) == 1
    output = proc.output()
    assert f"error: onnxruntime cannot load {junk}" in output
    assert "Traceback" not in output
    assert not listening(proc.port)


def test_serve_model_reports_a_missing_store_object(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    env = {"MODELREG_DATA_DIR": str(tmp_path / "data")}
    key = "models/m1/versions/v1/absent.onnx"
    proc = ServerProcess(tmp_path, "--artifact-key", key, "--sha256", "a" * 64, env=env)
    processes.append(proc)
    assert proc.process.wait(timeout=60) == 1
    output = proc.output()
    assert f"error: cannot read the artifact: artifact object '{key}' is missing" in output
    assert "Traceback" not in output


# --- standard JSON, a bounded body, a bounded depth (against a real process) ----------------


def strict_json(content: bytes) -> Any:
    """``content`` parsed as standard JSON: NaN and Infinity are refused."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in {content[:200]!r}")

    return json.loads(content, parse_constant=refuse)


def log_model() -> bytes:
    """y = log(x): NaN below 0, -Infinity at 0, finite above."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Log", ["x"], ["y"])], "log", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    serialized: bytes = model.SerializeToString()
    return serialized


LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``serve-model`` process with ``--max-body-bytes`` 1 MiB, serving log(x)."""
    tmp = tmp_path_factory.mktemp("hardened")
    model = write(tmp / "log.onnx", log_model())
    args = ["--artifact", str(model), "--sha256", sha256_of(model)]
    proc = ServerProcess(tmp, *args, "--max-body-bytes", str(LIMIT))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def still_serves(url: str) -> None:
    with httpx.Client(timeout=10) as client:
        answer = client.post(f"{url}{INFER}", json={"inputs": [x_input([1.0] * 4, shape=(1, 4))]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [0.0] * 4


def test_non_finite_outputs_are_null_in_standard_json(hardened: ServerProcess) -> None:
    body = {"inputs": [x_input([1.0, 0.0, -1.0, math.e], shape=(1, 4))]}
    with httpx.Client(timeout=10) as client:
        answer = client.post(f"{hardened.url}{INFER}", json=body)
    assert answer.status_code == 200, answer.text
    output = strict_json(answer.content)["outputs"][0]
    assert output["shape"] == [1, 4]
    assert output["data"][:3] == [0.0, None, None]
    assert output["data"][3] == pytest.approx(1.0)


def test_in_process_nan_model_answers_null(tmp_path: Path) -> None:
    path = write(tmp_path / "nan.onnx", nan_model())
    with serving(create_model_app(model_name="m", version="1", model_path=path)) as http:
        answer = http.post(INFER, json={"inputs": [x_input([1.0, 2.0, 3.0, 4.0], shape=(1, 4))]})
    assert answer.status_code == 200
    assert strict_json(answer.content)["outputs"][0]["data"] == [None] * 4


def assert_too_large(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = strict_json(answer.content)
    assert problem["status"] == 413
    assert problem["title"] == "Request body too large"
    assert f"limit of {LIMIT} bytes" in problem["detail"]
    assert problem["error"] == problem["detail"]


def test_a_body_over_the_limit_is_413(hardened: ServerProcess) -> None:
    padding = " " * LIMIT  # valid JSON whitespace: only the size is wrong
    body = json.dumps({"inputs": [x_input([1.0] * 4, shape=(1, 4))]}) + padding
    with httpx.Client(timeout=30) as client:
        assert_too_large(client.post(f"{hardened.url}{INFER}", content=body.encode()))
    still_serves(hardened.url)


def test_a_chunked_body_over_the_limit_is_413(hardened: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"inputs": ['
        for _ in range(40):
            yield b" " * 64 * 1024

    with httpx.Client(timeout=30) as client:
        answer = client.post(f"{hardened.url}{INFER}", content=chunks())
    assert answer.request.headers.get("transfer-encoding") == "chunked"
    assert_too_large(answer)
    still_serves(hardened.url)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="balanced"),
        pytest.param(b"[" * 100_000, id="unclosed"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="objects"),
    ],
)
def test_over_deep_json_is_400_without_recursion(hardened: ServerProcess, body: bytes) -> None:
    with httpx.Client(timeout=30) as client:
        answer = client.post(f"{hardened.url}{INFER}", content=body)
    assert answer.status_code == 400, answer.text
    error = strict_json(answer.content)["error"]
    assert "levels deep, more than the limit (64)" in error
    still_serves(hardened.url)
    assert "RecursionError" not in hardened.output()


def test_brackets_inside_strings_do_not_count_as_depth(hardened: ServerProcess) -> None:
    name = '[[[{"' + "[" * 1000 + '\\"\\\\'
    body = {"inputs": [{**x_input([1.0] * 4, shape=(1, 4)), "name": name}]}
    with httpx.Client(timeout=10) as client:
        answer = client.post(f"{hardened.url}{INFER}", json=body)
    assert answer.status_code == 400, answer.text
    assert "unknown input" in strict_json(answer.content)["error"]
